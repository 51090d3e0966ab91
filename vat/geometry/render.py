"""Headless rendering of meshes on the paper's camera protocol (section 6.1, after SV3D): a 24-view
orbit with a 33.8 degree field of view, elevations in [-5, 30] degrees, the camera as close as it can
be without cutting the object off in any view, RGBA images composited on white. The conditioning
images of the generator and `vat eval-gen` come from here, so it must run on a CPU without a display:
OpenGL through moderngl, headless via EGL on Linux (Mesa's llvmpipe where there is no GPU).

World convention: the mesh is normalised as everywhere in vat (bounding box centred at the origin,
longest side 1) and +Y is up (glTF, OBJ and Blender's Y-up exports). Azimuth 0 looks at the object
from +Z (its glTF front), azimuth grows counter-clockwise seen from above, elevation lifts the camera
above the XZ plane. `camera_to_world` is in the OpenGL/Blender camera convention (the camera looks
along its -Z axis, +Y up, +X right); `intrinsics` maps OpenCV camera coordinates (x right, y down,
z forward, i.e. (X, -Y, -Z) of the OpenGL camera frame) to pixels, with u to the right, v downward
and the image spanning [0, size] (pixel centres at half-integers).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from vat.errors import VatError
from vat.geometry import cameras
from vat.geometry.cameras import ELEVATION_RANGE, FOV_DEGREES, orbit_angles  # noqa: F401  (this module's API too)
from vat.geometry.drawable import CREASE_DEGREES, NEUTRAL_GREY, Part, parts_of  # noqa: F401  (as above)
from vat.geometry.io import MAX_FACES, MAX_FILE_BYTES, load_scene

# Renders are at most a few hundred pixels wide, so larger textures only cost upload time and memory.
MAX_TEXTURE_SIZE = 2048
# Multisample antialiasing: MSAA_SAMPLES per pixel (capped at what the driver offers), on an image
# SUPERSAMPLE times larger that is box-filtered down, so thin parts and edges do not alias.
MSAA_SAMPLES = 4
SUPERSAMPLE = 2
# Largest image (before supersampling) every GL driver can hold in one framebuffer.
MAX_SIZE = 4096

INSTALL_HINT = (
    "install OpenGL for headless rendering: on Debian/Ubuntu `apt-get install -y libegl1 libegl-mesa0 "
    "libgl1-mesa-dri`, and `pip install moderngl` (see requirements.txt)"
)


@dataclass
class RenderedView:
    """One rendered image and the camera that made it (angles in degrees, OpenGL camera_to_world)."""

    rgba: np.ndarray  # uint8 [size, size, 4]: straight (not premultiplied) colour, alpha = coverage
    azimuth: float
    elevation: float
    distance: float  # camera to origin, in units of the normalised mesh (longest side 1)
    fov: float  # vertical and horizontal field of view (square image)
    camera_to_world: np.ndarray  # float64 [4, 4]
    intrinsics: np.ndarray  # float64 [3, 3], pixels

    def camera(self) -> dict:
        """The camera as JSON-ready numbers (what cameras.json holds per view)."""
        return {
            "azimuth": self.azimuth,
            "elevation": self.elevation,
            "distance": self.distance,
            "fov": self.fov,
            "camera_to_world": self.camera_to_world.tolist(),
            "intrinsics": self.intrinsics.tolist(),
        }


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGB of straight-alpha RGBA [..., 4] laid over a white background (the paper's)."""
    rgba = np.asarray(rgba)
    if rgba.shape[-1] != 4:
        raise VatError(f"expected an RGBA image with 4 channels last, got shape {rgba.shape}")
    rgb, alpha = rgba[..., :3].astype(np.float32), rgba[..., 3:].astype(np.float32) / 255.0
    return np.clip(np.rint(rgb * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Loading with materials


def load_for_render(
    source: str | os.PathLike | bytes,
    file_type: str | None = None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_faces: int = MAX_FACES,
) -> trimesh.Scene:
    """Read a mesh file (a path, or bytes with `file_type`) as a scene that keeps its materials,
    textures and colours, with the same limits and MeshError messages as load_mesh (which
    flattens everything to geometry). OBJ textures are found next to the file."""
    return load_scene(source, file_type, max_bytes=max_bytes, max_faces=max_faces)[0]


# ----------------------------------------------------------------------------------------------
# OpenGL

_VERTEX_SHADER = """
#version 330
uniform mat4 model_view;
uniform mat4 projection;
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
in vec2 in_uv;
out vec3 v_position;
out vec3 v_normal;
out vec4 v_color;
out vec2 v_uv;
void main() {
    vec4 p = model_view * vec4(in_position, 1.0);
    v_position = p.xyz;
    v_normal = mat3(model_view) * in_normal;  // model_view is a rotation and a translation
    v_color = in_color;
    v_uv = in_uv;
    gl_Position = projection * p;
}
"""

# Two-sided Lambert + ambient under a light near the camera (a headlight, lifted a little up and
# left so fronts are not flat). Artist meshes have inconsistent winding, so the face normal (from
# screen-space derivatives) is turned to the viewer and the smooth normal to the face normal's side.
_FRAGMENT_SHADER = """
#version 330
uniform vec4 base_color;
uniform bool use_vertex_color;
uniform bool use_texture;
uniform sampler2D base_texture;
uniform vec3 light_direction;
uniform float ambient;
in vec3 v_position;
in vec3 v_normal;
in vec4 v_color;
in vec2 v_uv;
out vec4 f_color;
void main() {
    vec3 to_eye = normalize(-v_position);
    vec3 n = normalize(cross(dFdx(v_position), dFdy(v_position)));
    if (dot(n, to_eye) < 0.0) n = -n;
    float smooth_length = length(v_normal);
    if (smooth_length > 1e-6) n = v_normal / smooth_length * (dot(v_normal, n) < 0.0 ? -1.0 : 1.0);
    vec4 albedo = base_color;
    if (use_vertex_color) albedo *= v_color;
    if (use_texture) albedo *= texture(base_texture, vec2(v_uv.x, 1.0 - v_uv.y));
    float shade = ambient + (1.0 - ambient) * max(dot(n, light_direction), 0.0);
    f_color = vec4(albedo.rgb * shade, 1.0);
}
"""

LIGHT_DIRECTION = np.array([-0.25, 0.35, 1.0]) / np.linalg.norm([-0.25, 0.35, 1.0])  # in camera space
AMBIENT = 0.3

_LOCK = threading.Lock()  # a GL context is current in one thread at a time
_RENDERER: _Renderer | None = None


def _create_context():
    try:
        import moderngl
    except ImportError as exc:
        raise VatError(f"rendering needs the moderngl package: {INSTALL_HINT}") from exc
    import importlib.util
    import sys

    # Mesa's llvmpipe and triton (which torch's CUDA build loads when transformers builds a model)
    # each bring their own LLVM; loading triton after llvmpipe crashes the process (segfault), the
    # other order works. So triton, where installed, goes first.
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401

    # Headless first on Linux (EGL: no display needed); elsewhere the platform's default.
    backends = ["egl", None] if sys.platform.startswith("linux") else [None]
    errors = []
    for backend in backends:
        try:
            kwargs = {"backend": backend} if backend else {}
            return moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as exc:  # moderngl raises plain Exceptions when a library is missing
            errors.append(f"{backend or 'default'}: {exc}")
    raise VatError(f"could not create an OpenGL 3.3 context ({'; '.join(errors)}); {INSTALL_HINT}")


class _Renderer:
    """The process's GL context, shader program and framebuffers, made once and reused."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.ctx = _create_context()
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.samples = min(MSAA_SAMPLES, self.ctx.max_samples)
        self.max_texture = min(MAX_TEXTURE_SIZE, int(self.ctx.info.get("GL_MAX_TEXTURE_SIZE", MAX_TEXTURE_SIZE)))
        self._targets: dict[int, tuple] = {}

    def targets(self, pixels: int):
        """(multisampled framebuffer, resolved framebuffer) of pixels x pixels, cached per size."""
        if pixels not in self._targets:
            if len(self._targets) >= 4:
                for fbo in self._targets.pop(next(iter(self._targets))):
                    fbo.release()
            ctx = self.ctx
            msaa = ctx.framebuffer(
                color_attachments=[ctx.renderbuffer((pixels, pixels), 4, samples=self.samples)],
                depth_attachment=ctx.depth_renderbuffer((pixels, pixels), samples=self.samples),
            )
            resolved = ctx.framebuffer(color_attachments=[ctx.renderbuffer((pixels, pixels), 4)])
            self._targets[pixels] = (msaa, resolved)
        return self._targets[pixels]

    def upload(self, parts: list[Part]) -> list[tuple]:
        """Vertex arrays (and textures) of the parts, with the uniforms each needs."""
        ctx, uploaded = self.ctx, []
        for part in parts:
            buffers = [ctx.buffer(part.positions_V3.tobytes()), ctx.buffer(part.normals_V3.tobytes())]
            content = [(buffers[0], "3f", "in_position"), (buffers[1], "3f", "in_normal")]
            if part.colors_V4 is not None:
                buffers.append(ctx.buffer(part.colors_V4.tobytes()))
                content.append((buffers[-1], "4f1", "in_color"))
            texture = None
            if part.uv_V2 is not None:
                buffers.append(ctx.buffer(part.uv_V2.tobytes()))
                content.append((buffers[-1], "2f", "in_uv"))
                texture = self._texture(part.image)
            buffers.append(ctx.buffer(part.faces_F3.tobytes()))
            vao = ctx.vertex_array(self.program, content, index_buffer=buffers[-1], index_element_size=4)
            uniforms = {
                "base_color": part.base_color,
                "use_vertex_color": part.colors_V4 is not None,
                "use_texture": texture is not None,
            }
            uploaded.append((vao, texture, uniforms, buffers))
        return uploaded

    def _texture(self, image):
        from PIL import Image

        image = image.convert("RGBA")
        if max(image.size) > self.max_texture:
            image = image.copy()
            image.thumbnail((self.max_texture, self.max_texture), Image.Resampling.LANCZOS)
        texture = self.ctx.texture(image.size, 4, image.tobytes())
        texture.build_mipmaps()
        texture.filter = (self.ctx.LINEAR_MIPMAP_LINEAR, self.ctx.LINEAR)
        return texture

    def draw(self, uploaded, camera_to_world: np.ndarray, projection: np.ndarray, size: int) -> np.ndarray:
        """Straight-alpha uint8 RGBA [size, size, 4], row 0 at the top of the image."""
        import moderngl

        pixels = size * SUPERSAMPLE
        msaa, resolved = self.targets(pixels)
        msaa.use()
        msaa.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.disable(moderngl.CULL_FACE)
        program = self.program
        # GL reads matrices column-major: hand it the transposes.
        program["model_view"].write(np.linalg.inv(camera_to_world).astype("f4").T.tobytes())
        program["projection"].write(projection.astype("f4").T.tobytes())
        program["light_direction"].value = tuple(LIGHT_DIRECTION)
        program["ambient"].value = AMBIENT
        for vao, texture, uniforms, _ in uploaded:
            for name, value in uniforms.items():
                program[name].value = value
            if texture is not None:
                texture.use(0)
                program["base_texture"].value = 0
            vao.render(moderngl.TRIANGLES)
        self.ctx.copy_framebuffer(resolved, msaa)
        data = resolved.read(components=4, dtype="f1")
        # GL's first row is the bottom of the image.
        samples = np.frombuffer(data, np.uint8).reshape(pixels, pixels, 4)[::-1].astype(np.uint16)
        premultiplied = sum(samples[i::SUPERSAMPLE, j::SUPERSAMPLE]
                            for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE)) / (255.0 * SUPERSAMPLE**2)
        alpha = premultiplied[..., 3:]
        rgb = np.divide(premultiplied[..., :3], alpha, out=np.ones_like(premultiplied[..., :3]), where=alpha > 0)
        rgba = np.concatenate([rgb, alpha], axis=-1)
        rgba = np.clip(np.rint(rgba * 255.0), 0, 255).astype(np.uint8)
        rgba[rgba[..., 3] == 0, :3] = 255
        return rgba


def _release(uploaded) -> None:
    for vao, texture, _, buffers in uploaded:
        vao.release()
        if texture is not None:
            texture.release()
        for buffer in buffers:
            buffer.release()


def _renderer() -> _Renderer:
    """The process's renderer, made on first use (call with _LOCK held). A forked child cannot
    use its parent's context, so it makes its own."""
    global _RENDERER
    if _RENDERER is None or _RENDERER.pid != os.getpid():
        _RENDERER = _Renderer()
    return _RENDERER


# ----------------------------------------------------------------------------------------------
# Public entry points


def _render(mesh, azimuths, elevations, size: int) -> list[RenderedView]:
    if int(size) != size or not 8 <= size <= MAX_SIZE:
        raise VatError(f"size must be a whole number of pixels from 8 to {MAX_SIZE}, got {size}")
    size = int(size)
    azimuths = np.asarray(azimuths, dtype=np.float64).ravel()
    elevations = np.asarray(elevations, dtype=np.float64).ravel()
    if not (np.isfinite(azimuths).all() and np.isfinite(elevations).all()):
        raise VatError("camera angles must be finite numbers")
    if (np.abs(elevations) >= 90).any():
        raise VatError(f"elevations must lie strictly between -90 and 90 degrees, got {elevations.tolist()}")
    parts = parts_of(mesh)
    points = np.concatenate([p.positions_V3 for p in parts]).astype(np.float64)
    distance = cameras.fit_distance(points, azimuths, elevations, FOV_DEGREES)
    radius = float(np.linalg.norm(points, axis=1).max())
    near, far = max(1e-3, distance - 1.01 * radius - 1e-3), distance + 1.01 * radius + 1e-3
    projection = cameras.projection(FOV_DEGREES, near, far)
    intrinsics = cameras.intrinsics(size, FOV_DEGREES)

    rendered = []
    with _LOCK:
        renderer = _renderer()
        with renderer.ctx:
            uploaded = renderer.upload(parts)
            try:
                for azimuth, elevation in zip(azimuths, elevations):
                    camera_to_world = cameras.look_at(azimuth, elevation, distance)
                    rgba = renderer.draw(uploaded, camera_to_world, projection, size)
                    rendered.append(RenderedView(
                        rgba=rgba, azimuth=float(azimuth), elevation=float(elevation), distance=distance,
                        fov=FOV_DEGREES, camera_to_world=camera_to_world, intrinsics=intrinsics.copy(),
                    ))
            finally:
                _release(uploaded)
    return rendered


def render_views(mesh, views: int = 24, size: int = 512, seed: int = 0, elevations=None) -> list[RenderedView]:
    """The protocol's orbit of `mesh` (trimesh.Trimesh or Scene, normalised here; textures, vertex
    and face colours are drawn where present, else neutral grey): `views` square RGBA images of
    `size` pixels, azimuths evenly spaced from a seed-dependent start, elevations uniform in
    [-5, 30] from `seed` unless given (one number, or one per view)."""
    azimuths, elevation_V = orbit_angles(views, seed, elevations)
    return _render(mesh, azimuths, elevation_V, size)


def render_view(mesh, azimuth_deg: float, elevation_deg: float, size: int = 512) -> RenderedView:
    """One view of `mesh` at the camera distance of its protocol orbit, so a view rendered alone
    equals the same view of render_views (elevations outside [-5, 30] move the camera back as far
    as that view needs)."""
    return _render(mesh, [azimuth_deg], [elevation_deg], size)[0]


def save_views(views: list[RenderedView], directory: str | os.PathLike) -> list[Path]:
    """Write DIR/000.png, 001.png, ... (RGBA) and DIR/cameras.json; returns the image paths."""
    from PIL import Image

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VatError(f"cannot create the output folder {directory}: {exc.strerror}") from exc
    digits = max(3, len(str(len(views) - 1)))
    paths, entries = [], []
    for index, view in enumerate(views):
        path = directory / f"{index:0{digits}d}.png"
        Image.fromarray(view.rgba).save(path)
        paths.append(path)
        entries.append({"file": path.name, **view.camera()})
    meta = {
        "convention": "camera_to_world: OpenGL/Blender camera (looks along -Z, +Y up); intrinsics: "
                      "OpenCV pixels (u right, v down) of camera coordinates (X, -Y, -Z); world +Y up; "
                      "mesh normalised to the unit cube; angles in degrees",
        "views": entries,
    }
    (directory / "cameras.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths
