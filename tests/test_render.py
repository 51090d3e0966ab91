"""The headless renderer: camera protocol (FOV, distance, orbit), image orientation, colours and
textures, clean errors, and `vat render`. Tiny images keep every test well under a second."""

import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import trimesh
from PIL import Image

from vat.cli import main
from vat.errors import MeshError, VatError
from vat.geometry.render import (
    FOV_DEGREES,
    composite_on_white,
    load_for_render,
    orbit_angles,
    render_view,
    render_views,
)


def _box(extents, centre=(0, 0, 0), color=None):
    box = trimesh.creation.box(extents)
    box.apply_translation(centre)
    if color is not None:
        box.visual.face_colors = color
    return box


def _project(view, point):
    """Pixel (u right, v down) of a world point, as the documented conventions say."""
    world_to_camera = np.linalg.inv(view.camera_to_world)
    x, y, z = world_to_camera[:3, :3] @ point + world_to_camera[:3, 3]
    u, v, w = view.intrinsics @ np.array([x, -y, -z])  # OpenGL camera -> OpenCV camera
    return u / w, v / w


def _textured_quad(image):
    """A unit square in the XY plane facing +Z, uv (0,0) at its bottom-left corner."""
    vertices = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, baseColorFactor=[255, 255, 255, 255])
    return trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)


def _red_over_blue():
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:8] = (255, 0, 0)  # top rows of the image
    pixels[8:] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_cube_renders_grey_on_white():
    for view in render_views(trimesh.creation.box((1, 1, 1)), views=3, size=64):
        rgba = view.rgba
        assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
        empty, full = rgba[..., 3] == 0, rgba[..., 3] == 255
        assert empty.sum() > 500 and full.sum() > 500
        assert (rgba[empty, :3] == 255).all()
        grey = rgba[full, :3].astype(int)
        assert grey.mean() < 220 and np.abs(grey - grey.mean(axis=1, keepdims=True)).max() <= 1
        rgb = composite_on_white(rgba)
        assert (rgb[empty] == 255).all() and (rgb[full] == rgba[full, :3]).all()


def test_composite_on_white_blends_by_alpha():
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 100, 0, 51]]], np.uint8)
    assert composite_on_white(rgba).tolist() == [[[255, 255, 255], [0, 0, 0], [244, 224, 204]]]


@pytest.mark.parametrize("elevation", [0.0, 25.0])
def test_sphere_silhouette_matches_projected_sphere(elevation):
    size, radius = 64, 0.5
    view = render_view(trimesh.creation.icosphere(5, radius=radius), azimuth_deg=30.0, elevation_deg=elevation,
                       size=size)
    focal = view.intrinsics[0, 0]
    assert view.fov == FOV_DEGREES
    assert focal == pytest.approx(size / 2 / math.tan(math.radians(FOV_DEGREES) / 2))
    assert np.allclose(view.intrinsics[:2, 2], size / 2)
    # A sphere seen from distance d fills a cone of half-angle asin(r/d): an image circle this big.
    expected = focal * math.tan(math.asin(radius / view.distance))
    alpha = view.rgba[..., 3] / 255.0
    assert alpha.sum() == pytest.approx(math.pi * expected**2, rel=0.03)
    rows, cols = np.mgrid[:size, :size] + 0.5
    assert (rows * alpha).sum() / alpha.sum() == pytest.approx(size / 2, abs=0.3)
    assert (cols * alpha).sum() / alpha.sum() == pytest.approx(size / 2, abs=0.3)
    # The distance is the closest that keeps the sphere whole: it nearly fills the frame.
    assert 0.85 * size / 2 < expected < size / 2


def test_orientation_and_cameras_agree_with_the_image():
    # Already in the unit cube: red on top (+Y), blue below, green at +X, yellow at -X.
    parts = {
        "grey": ((0, 0, 0), (150, 150, 150, 255)),
        "red": ((0, 0.4, 0), (255, 0, 0, 255)),
        "blue": ((0, -0.4, 0), (0, 0, 255, 255)),
        "green": ((0.4, 0, 0), (0, 255, 0, 255)),
        "yellow": ((-0.4, 0, 0), (255, 255, 0, 255)),
    }
    mesh = trimesh.util.concatenate([_box((0.2, 0.2, 0.2), c, color) for c, color in parts.values()])
    size = 64
    front, back = render_view(mesh, 0.0, 0.0, size), render_view(mesh, 180.0, 0.0, size)
    for view in (front, back):
        for name, (centre, color) in parts.items():
            u, v = _project(view, np.array(centre) + np.array([0, 0, 0.1 if view is front else -0.1]))
            pixel = view.rgba[int(v), int(u)]
            assert pixel[3] == 255
            assert np.argmax(pixel[:3]) == np.argmax(color[:3]), name
            assert (pixel[:3] > 100).tolist() == [c > 100 for c in color[:3]], name
    u_red, v_red = _project(front, np.array([0, 0.4, 0.1]))
    assert v_red < size / 2  # up is up, not a flipped image
    assert _project(front, np.array([0.4, 0, 0.1]))[0] > size / 2  # +X on the right from the front
    assert _project(back, np.array([0.4, 0, -0.1]))[0] < size / 2  # and on the left from behind
    # Azimuth 0 looks from +Z; camera_to_world places the camera at the stated angles and distance.
    assert np.allclose(front.camera_to_world[:3, 3], [0, 0, front.distance])
    assert np.allclose(back.camera_to_world[:3, 3], [0, 0, -back.distance], atol=1e-9)


def test_vertex_colours_are_drawn():
    sphere = trimesh.creation.icosphere(3, radius=0.5)
    sphere.visual.vertex_colors = np.tile([40, 180, 90, 255], (len(sphere.vertices), 1))
    rgba = render_view(sphere, 10.0, 10.0, size=48).rgba
    covered = rgba[rgba[..., 3] == 255, :3].astype(float)
    assert len(covered) > 500
    assert np.allclose(covered[:, 0] / covered[:, 1], 40 / 180, atol=0.03)
    assert np.allclose(covered[:, 2] / covered[:, 1], 90 / 180, atol=0.03)
    assert 165 <= covered[:, 1].max() <= 181  # lit face on: the colour itself (shading only darkens)


def _check_red_over_blue(rgba):
    top, bottom = rgba[14:28, 14:50].reshape(-1, 4), rgba[36:50, 14:50].reshape(-1, 4)
    assert (top[:, 3] == 255).all() and (bottom[:, 3] == 255).all()
    assert (top[:, 0] > 150).all() and (top[:, 2] < 40).all()
    assert (bottom[:, 2] > 150).all() and (bottom[:, 0] < 40).all()


def test_texture_is_drawn_right_way_up():
    _check_red_over_blue(render_view(_textured_quad(_red_over_blue()), 0.0, 0.0, size=64).rgba)


def test_glb_with_base_colour_texture_round_trips(tmp_path):
    path = tmp_path / "quad.glb"
    scene = trimesh.Scene()
    # Half size and off-centre in the scene graph: rendering must apply the node and normalise.
    quad = _textured_quad(_red_over_blue())
    scene.add_geometry(quad, transform=trimesh.transformations.scale_and_translate(0.5, (3, 1, 0)))
    scene.export(path)
    loaded = load_for_render(path)
    assert isinstance(loaded, trimesh.Scene)
    _check_red_over_blue(render_view(loaded, 0.0, 0.0, size=64).rgba)


def test_pbr_base_colour_factor_without_texture():
    quad = _textured_quad(None)
    quad.visual.material.baseColorFactor = [0, 200, 0, 255]
    rgba = render_view(quad, 0.0, 0.0, size=32).rgba
    covered = rgba[rgba[..., 3] == 255, :3].astype(int)
    assert len(covered) > 300
    assert (covered[:, 1] > 150).all() and (covered[:, [0, 2]] == 0).all()


def test_orbit_is_seeded_evenly_spaced_and_in_range():
    azimuths, elevations = orbit_angles(24, seed=7)
    again = orbit_angles(24, seed=7)
    assert np.array_equal(azimuths, again[0]) and np.array_equal(elevations, again[1])
    steps = np.diff(azimuths) % 360
    assert np.allclose(steps, 15.0)
    assert ((elevations >= -5) & (elevations <= 30)).all() and np.ptp(elevations) > 10
    other_azimuths, other_elevations = orbit_angles(24, seed=8)
    assert not np.isclose(other_azimuths[0], azimuths[0]) and not np.allclose(other_elevations, elevations)
    assert np.array_equal(orbit_angles(3, seed=7, elevations=12.0)[1], [12.0, 12.0, 12.0])
    with pytest.raises(VatError, match="one per view"):
        orbit_angles(3, elevations=[1.0, 2.0])


def test_render_views_follows_the_orbit_and_matches_single_views():
    mesh = _box((1.0, 0.5, 0.3))
    views = render_views(mesh, views=4, size=32, seed=5)
    azimuths, elevations = orbit_angles(4, seed=5)
    assert [v.azimuth for v in views] == pytest.approx(azimuths.tolist())
    assert [v.elevation for v in views] == pytest.approx(elevations.tolist())
    assert len({v.distance for v in views}) == 1  # one distance per object: consistent scale
    for view in views:
        a, e = math.radians(view.azimuth), math.radians(view.elevation)
        position = view.distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        assert np.allclose(view.camera_to_world[:3, 3], position)
    single = render_view(mesh, views[2].azimuth, views[2].elevation, size=32)
    assert single.distance == views[2].distance and np.array_equal(single.rgba, views[2].rgba)
    again = render_views(mesh, views=4, size=32, seed=5)
    assert all(np.array_equal(a.rgba, b.rgba) for a, b in zip(views, again))


@pytest.mark.parametrize("extents", [(1.0, 0.04, 0.04), (1.0, 0.02, 0.7)], ids=["rod", "plate"])
def test_object_fills_the_frame_without_being_cut_off(extents):
    size = 64
    alphas = np.stack([v.rgba[..., 3] for v in render_views(_box(extents), views=24, size=size)])
    borders = np.concatenate([alphas[:, 0], alphas[:, -1], alphas[:, :, 0], alphas[:, :, -1]])
    assert (borders == 0).all()
    gaps = []
    for alpha in alphas:
        rows, cols = np.nonzero(alpha)
        gaps.append(min(rows.min(), cols.min(), size - 1 - rows.max(), size - 1 - cols.max()))
    assert min(gaps) <= 3  # in its widest view the object reaches the margin


def test_renders_from_other_threads():
    mesh = trimesh.creation.icosphere(2, radius=0.5)
    reference = render_view(mesh, 20.0, 5.0, size=32).rgba
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: render_view(mesh, 20.0, 5.0, size=32).rgba, range(4)))
    assert all(np.array_equal(r, reference) for r in results)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(MeshError, match="no triangle faces"):
        render_views(trimesh.Trimesh(), views=1, size=16)
    with pytest.raises(MeshError, match="PointCloud"):
        render_views(trimesh.PointCloud(np.random.default_rng(0).random((10, 3))), views=1, size=16)
    with pytest.raises(VatError, match="size"):
        render_views(_box((1, 1, 1)), size=4)
    with pytest.raises(VatError, match="between -90 and 90"):
        render_view(_box((1, 1, 1)), 0.0, 95.0, size=16)
    with pytest.raises(VatError, match="views"):
        render_views(_box((1, 1, 1)), views=0)
    garbage = tmp_path / "garbage.glb"
    garbage.write_bytes(b"not a mesh at all")
    with pytest.raises(MeshError, match="garbage.glb"):
        load_for_render(garbage)
    with pytest.raises(MeshError, match="not a mesh file"):
        load_for_render(tmp_path / "notes.txt")
    with pytest.raises(MeshError, match="does not exist"):
        load_for_render(tmp_path / "missing.obj")


def test_cli_writes_images_and_cameras(tmp_path, capsys):
    mesh = tmp_path / "box.ply"
    _box((1.0, 0.6, 0.4), color=(200, 30, 30, 255)).export(mesh)
    out = tmp_path / "views"
    assert main(["render", str(mesh), "-o", str(out), "--views", "3", "--size", "32", "--seed", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "002.png", "cameras.json"]
    image = Image.open(out / "001.png")
    assert image.mode == "RGBA" and image.size == (32, 32)
    cameras = json.loads((out / "cameras.json").read_text())["views"]
    assert [c["file"] for c in cameras] == ["000.png", "001.png", "002.png"]
    assert [c["azimuth"] for c in cameras] == pytest.approx(orbit_angles(3, seed=2)[0].tolist())
    for camera in cameras:
        assert camera["fov"] == FOV_DEGREES and camera["distance"] > 1
        assert np.array(camera["camera_to_world"]).shape == (4, 4) and np.array(camera["intrinsics"]).shape == (3, 3)
    assert "3 views" in capsys.readouterr().out


def test_cli_bad_mesh_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.obj"
    bad.write_text("this is not a mesh")
    assert main(["render", str(bad), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vat render: error:") and "Traceback" not in err and err.count("\n") == 1


def test_missing_opengl_names_the_packages(monkeypatch):
    import moderngl

    import vat.geometry.render as render

    def no_gl(**kwargs):
        raise Exception("libEGL.so.1: cannot open shared object file")

    monkeypatch.setattr(render, "_RENDERER", None)
    monkeypatch.setattr(moderngl, "create_standalone_context", no_gl)
    with pytest.raises(VatError, match="libegl1 libegl-mesa0 libgl1-mesa-dri"):
        render_view(_box((1, 1, 1)), 0.0, 0.0, size=16)
