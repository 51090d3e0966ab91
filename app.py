"""The vat Gradio demo: a thin UI over vat.pipeline (image to 3D, coarse-to-fine scales, the mesh
codec, mesh comparison). Run `python app.py [--checkpoint DIR_OR_HUB_ID] [--host H --port P --share]`.

Every handler has a stable api_name, so gradio_client can drive it: /generate takes the image first
and has a default for every other parameter. Models load once, on first use; without weights the
app still starts and its model tabs say how to get them.
"""

from __future__ import annotations

import os

# Offline-first: gradio's usage telemetry would phone home on every launch and event.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse  # noqa: E402
import atexit  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from vat import __version__  # noqa: E402
from vat.errors import VatError  # noqa: E402
from vat.geometry import LOAD_FORMATS, export_mesh, load_mesh, normalize_mesh  # noqa: E402
from vat.geometry.extract import postprocess  # noqa: E402
from vat.geometry.procedural import random_shape  # noqa: E402
from vat.metrics import compare_meshes  # noqa: E402

try:  # Hugging Face Spaces (ZeroGPU): a GPU is attached only while a decorated call runs
    import spaces
except ImportError:
    spaces = None

log = logging.getLogger("vat.app")

REPO = Path(__file__).resolve().parent
CHECKPOINT_ENV = "VAT_CHECKPOINT"  # a folder or hub id; --checkpoint wins over it
DEFAULT_CHECKPOINT = REPO / "checkpoints"
EXAMPLES_DIR = REPO / "examples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MESH_FILE_TYPES = [f".{f}" for f in LOAD_FORMATS]
EXPORT_CHOICES = ["glb", "obj", "stl", "ply"]
# Marching-cubes grid presets: the protocol's 256^3 is the finest; 128^3 keeps a CPU demo in seconds.
RESOLUTIONS = [("Draft · 64³", 64), ("Standard · 128³", 128), ("Fine · 256³", 256)]
DEFAULT_RESOLUTION = 128
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full"
SESSION_TTL_S = 3600  # a session's results and files live this long after its last update
GPU_SECONDS = 120  # ZeroGPU time asked for per model call
MAX_SEED = 2**31 - 1
# Files the demo writes live under one folder per process and one subfolder per session: the
# subfolder goes when its session ends (tab closed, or idle past SESSION_TTL_S), the rest at exit.
OUTPUT_ROOT = Path(tempfile.mkdtemp(prefix="vat-app-"))
atexit.register(shutil.rmtree, OUTPUT_ROOT, True)
# System fonts: the default theme fetches its fonts from Google, which an offline machine cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])


def on_gpu(fn):
    """`spaces.GPU` on a Hugging Face Space (ZeroGPU attaches a GPU for the call), a no-op elsewhere."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn


def user_errors(fn):
    """Turn the library's errors into a gr.Error the visitor sees (never a traceback). Anything
    else is a bug: its traceback goes to the server log and the visitor gets its one-line message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except VatError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        except Exception as exc:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"unexpected {type(exc).__name__} (a bug in vat, please report it): {exc}") from exc

    return wrapper


def _upload(value) -> tuple[str | None, str]:
    """(file path, name for messages) of an upload. The image events run with preprocess=False
    (gr.Image would open the file with Pillow before the handler, and a client would get a bare
    "error" for a corrupt one), so their uploads arrive as gradio's file dict; direct calls pass a path."""
    if value is None or value == "":
        return None, ""
    if isinstance(value, dict):
        path = value.get("path")
        return path, value.get("orig_name") or Path(path or "upload").name
    path = str(getattr(value, "path", value))
    return path, Path(path).name


@contextlib.contextmanager
def _named(path: str | None, name: str):
    """Library messages name the server-side upload path; the visitor knows the file by its name."""
    try:
        yield
    except VatError as exc:
        if path and path in str(exc):
            raise VatError(str(exc).replace(path, name)) from exc
        raise


# ---------------------------------------------------------------------------- models, sessions


class Models:
    """The checkpoint's models, loaded on first use, once: the lock makes concurrent first requests
    wait for one load. The tokenizer alone serves the codec tabs; image to 3D needs the generator
    and the condition encoders too (vat.pipeline.Pipeline), which then share that tokenizer."""

    TOKENIZER = ("tokenizer_config.json", "tokenizer.safetensors")
    GENERATOR = ("generator_config.json", "generator.safetensors", "conditioning_config.json",
                 "conditioning.safetensors")

    def __init__(self, checkpoint: str | os.PathLike):
        self.checkpoint = str(checkpoint)
        self._lock = threading.RLock()
        self._folder: Path | None = None
        self._codec = None
        self._pipeline = None

    def folder(self) -> Path:
        """The checkpoint as a local folder: a hub id is fetched, or taken from the hub cache offline."""
        from vat.pipeline import resolve_checkpoint

        with self._lock:
            if self._folder is None:
                self._folder = resolve_checkpoint(self.checkpoint)
            return self._folder

    def missing(self, needs_generator: bool) -> str | None:
        """Why the tokenizer (or the whole image-to-3D pipeline) cannot load, and how to get weights;
        None when the files are there. Looks at file names only: nothing is loaded."""
        try:
            folder = self.folder()
        except VatError as exc:
            return f"{exc}. {self._how_to_get_weights()}"
        needed = self.TOKENIZER + (self.GENERATOR if needs_generator else ())
        absent = [name for name in needed if not (folder / name).is_file()]
        if not absent:
            return None
        what = "image-to-3D" if needs_generator else "tokenizer"
        return f"The {what} weights are not in `{folder}` (missing: {', '.join(absent)}). {self._how_to_get_weights()}"

    @staticmethod
    def _how_to_get_weights() -> str:
        return (f"To get weights, start the app with `--checkpoint DIR_OR_HUB_ID` (or set {CHECKPOINT_ENV}): a folder "
                "or a Hugging Face repo holding tokenizer_*, generator_* and conditioning_* files, or one you "
                "trained with the scripts in `train/` (see the README). Comparing meshes works without weights.")

    def codec(self):
        """vat.pipeline.MeshCodec (the tokenizer); VatError with instructions when it has no weights."""
        from vat.pipeline import MeshCodec

        with self._lock:
            if self._pipeline is not None:
                return self._pipeline.codec
            if self._codec is None:
                message = self.missing(needs_generator=False)
                if message:
                    raise VatError(message)
                if self.missing(needs_generator=True) is None:
                    try:
                        return self.pipeline().codec  # the tokenizer loads once, inside the pipeline
                    except VatError as exc:  # the codec needs only the tokenizer: carry on without the rest
                        log.warning("image-to-3D models not loaded (%s); loading the tokenizer alone", exc)
                self._codec = MeshCodec.from_pretrained(self.folder())
            return self._codec

    def pipeline(self):
        """vat.pipeline.Pipeline; VatError with instructions when a model has no weights."""
        from vat.pipeline import Pipeline

        with self._lock:
            if self._pipeline is None:
                message = self.missing(needs_generator=True)
                if message:
                    raise VatError(message)
                try:
                    self._pipeline = Pipeline.from_pretrained(self.folder())
                except ImportError as exc:
                    raise VatError(f"the image-to-3D models need the package {exc.name!r}, which is not installed: "
                                   "pip install -r requirements.txt") from exc
                self._codec = None
            return self._pipeline

    def preload(self) -> None:
        """Load now what the checkpoint has (a Space loads before serving: ZeroGPU wants models made
        in the main process). Missing weights are not an error here; the tabs say so."""
        try:
            self.codec()
            if self.missing(needs_generator=True) is None:
                self.pipeline()
        except VatError as exc:
            log.warning("models not loaded: %s", exc)


class Session:
    """One visitor's results (token sequences with their lazily decoded meshes) and files."""

    def __init__(self, key: str | None = None):
        # The session hash comes from the client: hash it rather than trust it as a file name.
        name = hashlib.sha256(key.encode()).hexdigest()[:32] if key else uuid.uuid4().hex
        self.folder = OUTPUT_ROOT / name
        self.results: dict = {}  # tab -> vat.pipeline.Generation (tokens, settings, timings)
        self.sources: dict = {}  # tab -> the input mesh in the unit cube (mesh to tokens)
        self.meshes: dict = {}  # (tab, scales, cleaned) -> the decoded mesh of that tab's result

    def store(self, tab: str, result, source=None) -> None:
        """A new result for `tab`; the old one's meshes go."""
        self.results[tab], self.sources[tab] = result, source
        self.meshes = {k: v for k, v in self.meshes.items() if k[0] != tab}

    @staticmethod
    def folder_of(key: str) -> Path:
        return OUTPUT_ROOT / hashlib.sha256(key.encode()).hexdigest()[:32]

    def path(self, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / name

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _session(state, request: gr.Request | None) -> Session:
    if isinstance(state, Session):
        return state
    return Session(getattr(request, "session_hash", None))


def _close_session(state) -> None:
    if isinstance(state, Session):
        state.close()


def _end_session(request: gr.Request) -> None:
    """demo.unload: the tab closed; its files go now (its state follows when gradio expires it)."""
    if request is not None and request.session_hash:
        shutil.rmtree(Session.folder_of(request.session_hash), ignore_errors=True)


def _result(session: Session, tab: str, what: str):
    result = session.results.get(tab)
    if result is None:
        raise VatError(f"nothing to show yet: {what} first")
    return result


def _scale_of(value, result) -> int:
    try:
        scales = int(round(float(value)))
    except (TypeError, ValueError) as exc:
        raise VatError(f"the number of scales must be a whole number, got {value!r}") from exc
    if not 1 <= scales <= result.num_scales:
        raise VatError(f"the number of scales must be between 1 and {result.num_scales}, got {scales}")
    return scales


def _resolution_of(value) -> int:
    try:
        resolution = int(value)
    except (TypeError, ValueError) as exc:
        raise VatError(f"the mesh resolution must be a whole number of grid cells, got {value!r}") from exc
    if not 16 <= resolution <= 512:
        raise VatError(f"the mesh resolution must be between 16 and 512 grid cells per side, got {resolution}")
    return resolution


def _scale_readout(result, scales: int, mesh, extra: str = "") -> str:
    return (f"Scale **{scales} of {result.num_scales}**: {result.tokens_at(scales):,} tokens, "
            f"{len(result.vat(scales)):,} bytes · {len(mesh.faces):,} faces{extra}")


def _scale_slider(result) -> gr.Slider:
    return gr.Slider(minimum=1, maximum=result.num_scales, value=result.num_scales, step=1, interactive=True)


# ---------------------------------------------------------------------------- tools without a model


@user_errors
def compare(reference_file: str | None, other_file: str | None, icp: bool = False, state=None,
            request: gr.Request = None):
    """F-score and Chamfer of one mesh against another on the protocol; works without weights."""
    if not reference_file or not other_file:
        raise VatError("Upload two meshes: a reference and one to score against it.")
    reference, other = load_mesh(reference_file), load_mesh(other_file)
    result = compare_meshes(reference, other, icp=icp)
    _, transform = normalize_mesh(reference)
    other = other.copy()
    other.apply_transform(transform)
    session = _session(state, request)
    path = export_mesh(other, session.path(f"scored-{Path(other_file).stem}.glb"))
    report = (
        f"**F-score@0.01** {result['f_score']:.3f} · **Chamfer-L1** {result['chamfer']:.5f} · "
        f"precision {result['precision']:.3f} · recall {result['recall']:.3f}"
    )
    return report, str(path), session


@user_errors
def procedural(seed: float = 0, state=None, request: gr.Request = None):
    """A watertight procedural shape (CSG of primitives) with its caption: an input for the codec."""
    shape = random_shape(int(seed or 0))
    session = _session(state, request)
    glb = export_mesh(shape.mesh, session.path(f"shape-{int(seed or 0)}.glb"))
    return str(glb), f"**{shape.caption}** · {len(shape.mesh.faces):,} faces · watertight", str(glb), session


def example_images(folder: str | os.PathLike | None) -> list[str]:
    """The example images in `folder` (sorted); none when it has none or does not exist."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# ---------------------------------------------------------------------------- the demo


# ---------------------------------------------------------------------------- model calls
# On a ZeroGPU Space each of these runs in a worker process forked from this one, its arguments and
# result pickled across: so they take and return plain data (paths, numbers, arrays, meshes) and
# find the models, loaded before the fork (Models.preload), by checkpoint name.

_MODELS: dict[str, Models] = {}
_MODELS_LOCK = threading.Lock()


def models_for(checkpoint: str) -> Models:
    """The one Models of `checkpoint` in this process."""
    with _MODELS_LOCK:
        if checkpoint not in _MODELS:
            _MODELS[checkpoint] = Models(checkpoint)
        return _MODELS[checkpoint]


@on_gpu
def sample_tokens(checkpoint: str, image: str | None, text: str | None, seed: int, settings: dict,
                  progress=None) -> dict:
    """vat.pipeline.Pipeline.generate, reduced to plain data: the tokens per scale, the image the
    model saw, how its background was found, the timings. `settings`: generate's keyword arguments."""
    def on_scale(done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc=f"Sampling scale {done} of {total}", unit="scales")

    result = models_for(checkpoint).pipeline().generate(image=image, text=text, seed=seed, progress=on_scale,
                                                        **settings)
    return dict(indices=result.indices, input_image=result.input_image, method=result.preprocess_method,
                timings=result.timings, settings=result.settings)


@on_gpu
def decode_tokens(checkpoint: str, indices: list, scales: int, resolution: int, clean: bool = True):
    """The mesh of the first `scales` scales of `indices` (vat.pipeline.MeshCodec.decode_mesh)."""
    return models_for(checkpoint).codec().decode_mesh(indices, scales=scales, resolution=resolution, clean=clean)


@on_gpu
def encode_mesh(checkpoint: str, mesh):
    """vat.pipeline.MeshCodec.encode: the mesh's tokens and .vat bytes."""
    return models_for(checkpoint).codec().encode(mesh)


# ---------------------------------------------------------------------------- the demo


class Demo:
    """The handlers of the demo over one checkpoint; `build()` lays them out as gr.Blocks."""

    def __init__(self, checkpoint: str | os.PathLike | None = None,
                 examples: str | os.PathLike | None = EXAMPLES_DIR):
        self.checkpoint = str(checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT)
        self.models = models_for(self.checkpoint)
        self.examples = example_images(examples)

    def _mesh(self, session: Session, tab: str, scales: int, clean: bool = True):
        """The mesh of `tab`'s result from its first `scales` scales: decoded once, then cached in the session."""
        result = session.results[tab]
        key = (tab, scales, clean)
        if key not in session.meshes:
            start = time.perf_counter()
            session.meshes[key] = decode_tokens(self.checkpoint, result.indices, scales, result.resolution, clean)
            result.timings[f"decode_s{scales}" + ("" if clean else "_raw")] = time.perf_counter() - start
        return session.meshes[key]

    # --- image to 3D ---------------------------------------------------------------------------
    @user_errors
    def preview(self, image, foreground_ratio: float = 0.85, skip_background_removal: bool = False):
        """The image as the generator will see it: object cut out, centred, on white."""
        from vat.preprocess import preprocess_image

        path, name = _upload(image)
        if path is None:
            return None, ""
        with _named(path, name):
            done = preprocess_image(path, foreground_ratio=float(foreground_ratio),
                                    remove_background="none" if skip_background_removal else "auto")
        return done.image, _method_note(done.method)

    @user_errors
    def generate(self, image, text: str = "", seed: float = 0, randomize_seed: bool = True,
                 guidance_scale: float = 1.5, temperature: float = 1.0, top_k: float = 0, top_p: float = 0.0,
                 resolution: int = DEFAULT_RESOLUTION, foreground_ratio: float = 0.85,
                 skip_background_removal: bool = False, state=None, request: gr.Request = None,
                 progress=gr.Progress()):
        """Image (and/or text) -> tokens scale by scale -> the mesh of all scales."""
        from vat.pipeline import Generation

        (path, name), text = _upload(image), (text or "").strip()
        if path is None and not text:
            raise VatError("upload an image (or write a text prompt) first")
        codec = self.models.pipeline().codec  # loads the models here, or says what is missing
        seed = random.randint(0, MAX_SEED) if randomize_seed else int(seed or 0)
        settings = dict(cfg=float(guidance_scale), temperature=float(temperature), top_k=int(top_k or 0),
                        top_p=float(top_p or 0.0), foreground_ratio=float(foreground_ratio),
                        remove_background="none" if skip_background_removal else "auto",
                        resolution=_resolution_of(resolution))
        with _named(path, name):
            tokens = sample_tokens(self.checkpoint, path, text or None, seed, settings, progress=progress)
        result = Generation(indices=tokens["indices"], codec=codec, seed=seed, settings=tokens["settings"],
                            timings=tokens["timings"], input_image=tokens["input_image"],
                            preprocess_method=tokens["method"], resolution=settings["resolution"])
        session = _session(state, request)
        session.store("generate", result)
        progress(1.0, desc=f"Decoding the mesh ({result.resolution}³ grid)")
        mesh = self._mesh(session, "generate", result.num_scales)
        glb = export_mesh(mesh, session.path(f"generated-{seed}-s{result.num_scales}.glb"))
        timings = {k: result.timings.get(k, 0.0) for k in ("preprocess", "condition", "sample")}
        timings["decode"] = result.timings[f"decode_s{result.num_scales}"]
        info = (f"Seed **{seed}** · {result.num_scales} scales · {result.tokens_at():,} tokens in "
                f"**{len(result.vat()):,} bytes** · " + " · ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        note = _method_note(result.preprocess_method) if result.preprocess_method else ""
        return (result.input_image, note, str(glb), seed, info, _scale_slider(result),
                _scale_readout(result, result.num_scales, mesh), session)

    @user_errors
    def show_scale(self, scales: float, state=None, request: gr.Request = None):
        """The generated mesh decoded from its first `scales` scales (cached per session)."""
        session = _session(state, request)
        result = _result(session, "generate", "generate a mesh")
        scales = _scale_of(scales, result)
        mesh = self._mesh(session, "generate", scales)
        glb = export_mesh(mesh, session.path(f"generated-{result.seed}-s{scales}.glb"))
        return str(glb), _scale_readout(result, scales, mesh), session

    @user_errors
    def download(self, file_format: str = "glb", target_faces: float = 0, remove_floaters: bool = True,
                 scales: float = 0, state=None, request: gr.Request = None):
        """The shown mesh as GLB/OBJ/STL/PLY (optionally simplified, floaters kept or removed), and its .vat."""
        session = _session(state, request)
        result = _result(session, "generate", "generate a mesh")
        scales = result.num_scales if not scales else _scale_of(scales, result)
        if file_format not in EXPORT_CHOICES:
            raise VatError(f"the download format must be one of {', '.join(EXPORT_CHOICES)}, got {file_format!r}")
        target = int(target_faces or 0)
        if target and target < 4:
            raise VatError(f"the target face count must be at least 4 (or 0 to keep every face), got {target}")
        # Decoded meshes come cleaned (floaters removed); keeping floaters needs the raw extraction.
        mesh = self._mesh(session, "generate", scales, clean=remove_floaters)
        if target or not remove_floaters:
            mesh = postprocess(mesh, remove_floaters=remove_floaters, target_faces=target or None)
        stem = f"vat-{result.seed}-s{scales}" + (f"-{target}f" if target else "")
        path = export_mesh(mesh, session.path(f"{stem}.{file_format}"))
        vat_path = session.path(f"vat-{result.seed}-s{scales}.vat")
        vat_path.write_bytes(result.vat(scales))
        return str(path), str(vat_path), session

    # --- the codec -----------------------------------------------------------------------------
    @user_errors
    def encode(self, mesh_file: str | None, resolution: int = DEFAULT_RESOLUTION, state=None,
               request: gr.Request = None):
        """Mesh -> tokens -> .vat; the reconstruction from all scales and its F-score against the input."""
        from vat.pipeline import Generation

        if not mesh_file:
            raise VatError("upload a mesh file first (" + " ".join(MESH_FILE_TYPES) + ")")
        resolution = _resolution_of(resolution)
        codec = self.models.codec()  # loads the tokenizer here, or says what is missing
        source, _ = normalize_mesh(load_mesh(mesh_file))
        encoded = encode_mesh(self.checkpoint, source)
        # A Generation is what the scale slider needs: tokens, their .vat prefixes, a resolution.
        result = Generation(indices=encoded.indices, codec=codec, seed=0, settings={"source": Path(mesh_file).name},
                            timings={}, resolution=resolution)
        session = _session(state, request)
        session.store("encode", result, source)
        stem = Path(mesh_file).stem
        vat_path = session.path(f"{stem}.vat")
        vat_path.write_bytes(encoded.data)
        input_glb = export_mesh(source, session.path(f"{stem}-input.glb"))
        mesh = self._mesh(session, "encode", result.num_scales)
        f_score = compare_meshes(source, mesh)["f_score"]
        glb = export_mesh(mesh, session.path(f"{stem}-s{result.num_scales}.glb"))
        file_bytes = Path(mesh_file).stat().st_size
        report = (f"{Path(mesh_file).name}: {file_bytes:,} bytes → **{len(encoded.data):,} bytes** of .vat "
                  f"({encoded.num_tokens:,} tokens in {result.num_scales} scales) · compression ratio "
                  f"**{file_bytes / len(encoded.data):,.0f}×** · F-score@0.01 against the input **{f_score:.3f}**")
        readout = _scale_readout(result, result.num_scales, mesh, f" · F-score@0.01 {f_score:.3f}")
        return str(input_glb), str(glb), report, str(vat_path), _scale_slider(result), readout, session

    @user_errors
    def show_reconstruction(self, scales: float, state=None, request: gr.Request = None):
        """The encoded mesh decoded from its first `scales` scales, with that prefix's bytes and F-score."""
        session = _session(state, request)
        result = _result(session, "encode", "encode a mesh")
        scales = _scale_of(scales, result)
        mesh = self._mesh(session, "encode", scales)
        f_score = compare_meshes(session.sources["encode"], mesh)["f_score"]
        glb = export_mesh(mesh, session.path(f"reconstruction-s{scales}.glb"))
        return str(glb), _scale_readout(result, scales, mesh, f" · F-score@0.01 {f_score:.3f}"), session

    @user_errors
    def decode(self, vat_file: str | None, scales: float = 0, resolution: int = DEFAULT_RESOLUTION, state=None,
               request: gr.Request = None):
        """.vat -> the mesh from all its scales (or the first `scales`)."""
        if not vat_file:
            raise VatError("upload a .vat file first")
        codec = self.models.codec()
        data = Path(vat_file).read_bytes()
        indices = codec.read(data)
        scales = int(scales or 0) or len(indices)
        if not 1 <= scales <= len(indices):
            raise VatError(f"this .vat file holds {len(indices)} scales: ask for 1 to {len(indices)} (0 for all)")
        mesh = decode_tokens(self.checkpoint, indices, scales, _resolution_of(resolution))
        session = _session(state, request)
        glb = export_mesh(mesh, session.path(f"{Path(vat_file).stem}-s{scales}.glb"))
        info = (f"{Path(vat_file).name}: {len(data):,} bytes, {len(indices)} of {codec.num_scales} scales stored · "
                f"decoded from {scales} · {len(mesh.faces):,} faces")
        return str(glb), info, str(glb), session

    # --- layout --------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        generator_missing = self.models.missing(needs_generator=True)
        tokenizer_missing = self.models.missing(needs_generator=False)
        with gr.Blocks(title="vat", analytics_enabled=False, delete_cache=(SESSION_TTL_S, SESSION_TTL_S)) as demo:
            state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_close_session)
            gr.Markdown(
                f"# vat {__version__}\nThe Variational Tokenizer (arXiv 2412.02202): image to 3D by next-scale "
                "prediction, and a 3D codec that stores a shape in a few hundred bytes. "
                f"Checkpoint: `{self.models.checkpoint}`."
            )
            with gr.Tab("Image to 3D", id="generate"):
                gr.Markdown(f"⚠️ {generator_missing}", visible=bool(generator_missing), elem_id="generate-missing")
                with gr.Row():
                    with gr.Column(scale=1):
                        image = gr.Image(label="Image of one object", type="filepath", image_mode=None,
                                         sources=["upload", "clipboard"], height=280, elem_id="input-image")
                        text = gr.Textbox("", label="Text prompt (optional)", placeholder="a wooden chair", max_lines=2)
                        with gr.Accordion("Preprocessing", open=False):
                            foreground_ratio = gr.Slider(0.5, 1.0, value=0.85, step=0.01, label="Foreground ratio",
                                                         info="share of the frame the object fills")
                            skip_removal = gr.Checkbox(False, label="Skip background removal (keep the whole image)")
                        with gr.Accordion("Sampling", open=False):
                            with gr.Row():
                                seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
                                randomize = gr.Checkbox(True, label="Randomise seed")
                            guidance = gr.Slider(0.0, 10.0, value=1.5, step=0.1, label="Guidance scale (CFG)")
                            temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                            top_k = gr.Number(0, label="Top-k (0: off)", precision=0, minimum=0)
                            top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Top-p (0: off)")
                        resolution = gr.Radio(RESOLUTIONS, value=DEFAULT_RESOLUTION, label="Mesh resolution")
                        run = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        if self.examples:
                            gr.Examples([[p] for p in self.examples], inputs=[image],
                                        label="Examples (sources and licences: examples/README.md)",
                                        cache_examples=False, examples_per_page=12)
                        else:
                            gr.Markdown("No example images in `examples/` yet.")
                    with gr.Column(scale=1):
                        seen = gr.Image(label="What the model sees", interactive=False, height=280, format="png",
                                        elem_id="model-input")
                        method = gr.Markdown(label="Background")
                    with gr.Column(scale=2):
                        view = gr.Model3D(label="Mesh", height=420, clear_color=(1.0, 1.0, 1.0, 1.0),
                                          elem_id="mesh-view")
                        scale = gr.Slider(1, 10, value=10, step=1, label="Scales decoded (coarse to fine)",
                                          interactive=False, elem_id="scale-slider")
                        readout = gr.Markdown(label="Scale readout", elem_id="scale-readout")
                        info = gr.Markdown(label="Generation info", elem_id="generate-info")
                        with gr.Accordion("Download", open=False):
                            with gr.Row():
                                file_format = gr.Dropdown(EXPORT_CHOICES, value="glb", label="Format")
                                target_faces = gr.Number(0, label="Simplify to faces (0: keep all)", precision=0,
                                                         minimum=0)
                                floaters = gr.Checkbox(True, label="Remove floaters")
                            prepare = gr.Button("Prepare files")
                            with gr.Row():
                                mesh_file = gr.File(label="Mesh", interactive=False)
                                vat_file = gr.File(label=".vat tokens", interactive=False)
                preview_inputs = [image, foreground_ratio, skip_removal]
                gr.on([image.change, foreground_ratio.release, skip_removal.input], self.preview, preview_inputs,
                      [seen, method], api_name="preprocess", trigger_mode="always_last", preprocess=False)
                run.click(self.generate,
                          [image, text, seed, randomize, guidance, temperature, top_k, top_p, resolution,
                           foreground_ratio, skip_removal, state],
                          [seen, method, view, seed, info, scale, readout, state], api_name="generate",
                          concurrency_id="model", preprocess=False)
                scale.release(self.show_scale, [scale, state], [view, readout, state], api_name="show_scale",
                              trigger_mode="always_last", concurrency_id="model")
                prepare.click(self.download, [file_format, target_faces, floaters, scale, state],
                              [mesh_file, vat_file, state], api_name="download", concurrency_id="model")

            with gr.Tab("Mesh to tokens", id="codec"):
                gr.Markdown(f"⚠️ {tokenizer_missing}", visible=bool(tokenizer_missing), elem_id="codec-missing")
                gr.Markdown("Encode a mesh into the tokenizer's tokens (a `.vat` file), see it rebuilt from the "
                            "first scales, and decode `.vat` files back into meshes.")
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label="Mesh (" + " ".join(MESH_FILE_TYPES) + ")", file_types=MESH_FILE_TYPES)
                        encode_resolution = gr.Radio(RESOLUTIONS, value=DEFAULT_RESOLUTION, label="Mesh resolution")
                        encode_run = gr.Button("Encode", variant="primary")
                        source_view = gr.Model3D(label="Input (unit cube)", height=300)
                    with gr.Column(scale=2):
                        recon_view = gr.Model3D(label="Reconstruction", height=420)
                        recon_scale = gr.Slider(1, 10, value=10, step=1, label="Scales decoded", interactive=False)
                        recon_readout = gr.Markdown(label="Reconstruction readout")
                        report = gr.Markdown(label="Encoding report")
                        encoded_file = gr.File(label=".vat tokens", interactive=False)
                encode_run.click(self.encode, [upload, encode_resolution, state],
                                 [source_view, recon_view, report, encoded_file, recon_scale, recon_readout, state],
                                 api_name="encode", concurrency_id="model")
                recon_scale.release(self.show_reconstruction, [recon_scale, state], [recon_view, recon_readout, state],
                                    api_name="show_reconstruction", trigger_mode="always_last",
                                    concurrency_id="model")
                gr.Markdown("### Tokens to mesh")
                with gr.Row():
                    with gr.Column(scale=1):
                        vat_upload = gr.File(label=".vat file", file_types=[".vat"])
                        decode_scales = gr.Number(0, label="Scales to decode (0: all)", precision=0, minimum=0)
                        decode_resolution = gr.Radio(RESOLUTIONS, value=DEFAULT_RESOLUTION, label="Mesh resolution")
                        decode_run = gr.Button("Decode", variant="primary")
                    with gr.Column(scale=2):
                        decoded_view = gr.Model3D(label="Decoded mesh", height=360)
                        decoded_info = gr.Markdown(label="Decoding info")
                        decoded_file = gr.File(label="GLB", interactive=False)
                decode_run.click(self.decode, [vat_upload, decode_scales, decode_resolution, state],
                                 [decoded_view, decoded_info, decoded_file, state], api_name="decode",
                                 concurrency_id="model")

            with gr.Tab("Compare meshes", id="compare"):
                with gr.Row():
                    reference = gr.File(label="Reference mesh (" + " ".join(MESH_FILE_TYPES) + ")")
                    other = gr.File(label="Mesh to score")
                icp = gr.Checkbox(label="ICP-align first (as for generated meshes)", value=False)
                score = gr.Button("Compare", variant="primary")
                score_report = gr.Markdown(label="Scores")
                scored_view = gr.Model3D(label="Mesh scored (in the reference's unit cube)")
                score.click(compare, [reference, other, icp, state], [score_report, scored_view, state],
                            api_name="compare")

            with gr.Tab("Procedural shapes", id="procedural"):
                shape_seed = gr.Number(label="Seed", value=0, precision=0)
                make = gr.Button("Make shape", variant="primary")
                shape_view = gr.Model3D(label="Shape")
                caption = gr.Markdown(label="Caption")
                shape_file = gr.File(label="Download GLB (an input for Mesh to tokens)")
                make.click(procedural, [shape_seed, state], [shape_view, caption, shape_file, state],
                           api_name="procedural")
            demo.unload(_end_session)
        return demo


def _method_note(method: str | None) -> str:
    notes = {
        "alpha": "Background: the image's own transparency.",
        "rembg": "Background removed with rembg.",
        "builtin": "Background removed with the built-in segmentation (no rembg model on this machine); "
                   "an image with a plain background or transparency works best.",
        "none": "Background kept (removal skipped).",
    }
    return notes.get(method, "")


def build_demo(checkpoint: str | os.PathLike | None = None,
               examples: str | os.PathLike | None = EXAMPLES_DIR) -> gr.Blocks:
    """The demo's Blocks over `checkpoint` (default: $VAT_CHECKPOINT, else the repo's checkpoints/)."""
    return Demo(checkpoint, examples).build()


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          prevent_thread_lock: bool = False):
    """Queue (bounded) and launch; returns what gr.Blocks.launch returns."""
    demo.queue(max_size=QUEUE_SIZE)
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
                       theme=THEME, quiet=prevent_thread_lock)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Launch the vat demo.")
    # A Space names its host and port in gradio's environment variables; elsewhere: localhost:7860.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--checkpoint", default=os.environ.get(CHECKPOINT_ENV) or str(DEFAULT_CHECKPOINT),
                        help=f"folder or Hugging Face hub id of the models (default: ${CHECKPOINT_ENV}, else "
                             f"{DEFAULT_CHECKPOINT})")
    parser.add_argument("--examples", default=str(EXAMPLES_DIR), help="folder of example images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    demo = Demo(args.checkpoint, args.examples)
    if spaces is not None:
        demo.models.preload()
    serve(demo.build(), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
