"""The vat Gradio demo: a thin UI over vat.pipeline (image to 3D, coarse-to-fine scales, the mesh
codec, mesh comparison). Run `python app.py [--checkpoint DIR_OR_HUB_ID] [--host H --port P --share]
[--max-sessions N]`.

Every handler has a stable api_name, so gradio_client can drive it: /generate takes the image first
and has a default for every other parameter (a seed it passes is the seed it gets; an empty one is
random). Models load once, on first use; without weights the app still starts and its model tabs say
how to get them. Memory stays bounded: a session keeps its latest results and a few decoded meshes,
and the server keeps --max-sessions sessions, none idle for more than an hour.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Offline-first: gradio's usage telemetry would phone home on every launch and event.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Everything this process writes goes under one temporary folder, gradio's cache included (uploads
# and outputs): removed at exit, and on SIGTERM (see main), whether or not gradio's own shutdown
# gets to clean up. The demo's files live inside it too, so gradio serves them without a copy.
os.makedirs(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir(), exist_ok=True)
PROCESS_TEMP = Path(tempfile.mkdtemp(prefix="vat-app-", dir=os.environ.get("GRADIO_TEMP_DIR")))
os.environ["GRADIO_TEMP_DIR"] = str(PROCESS_TEMP)
atexit.register(shutil.rmtree, PROCESS_TEMP, True)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from vat import __version__  # noqa: E402
from vat.errors import VatError  # noqa: E402
from vat.geometry import LOAD_FORMATS, export_mesh, load_mesh, normalize_mesh  # noqa: E402
from vat.geometry.extract import GRID_BOUND, postprocess  # noqa: E402
from vat.geometry.procedural import random_shape  # noqa: E402
from vat.metrics import compare_meshes, placement_hint  # noqa: E402
from vat.ui import (BACKGROUND_METHODS, DEFAULT_REFINE, DEFAULT_RESOLUTION, MAX_SEED, MAX_TARGET_FACES, RESOLUTIONS,  # noqa: E402
                    size_change, stage_times)

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
# Marching-cubes grid presets (vat.ui.RESOLUTIONS): the protocol's 256^3 is the finest; 128^3 keeps a CPU
# demo in seconds. The values are strings because that is the type gradio documents for a radio's choices.
RESOLUTION_CHOICES = [(f"{name} · {cells}³", str(cells)) for name, cells in zip(("Draft", "Standard", "Fine"),
                                                                              RESOLUTIONS)]
DEFAULT_RESOLUTION = str(DEFAULT_RESOLUTION)
# The Compare tab's normalisation (vat.metrics.compare_meshes(normalize=...)), as `vat compare --normalize`.
EACH_LABEL = "Each in its own unit cube"
NORMALIZATIONS = [("Reference's unit cube, the other moved with it (the protocol)", "reference"),
                  (EACH_LABEL, "each"), ("None: the files' coordinates", "none")]
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full"
SESSION_TTL_S = 3600  # a session's results and files live this long after its last use
MAX_SESSIONS = 16  # sessions whose results are held (least recently used go first); --max-sessions
MESHES_PER_SESSION = 2  # decoded meshes a session keeps: the one on show and one more (e.g. a download's)
GPU_SECONDS = 120  # ZeroGPU time asked for per model call
# One subfolder per session for the files the demo writes: it goes when its session ends (tab
# closed, idle past SESSION_TTL_S, or evicted), the rest with PROCESS_TEMP.
OUTPUT_ROOT = PROCESS_TEMP / "sessions"
OUTPUT_ROOT.mkdir()
# System fonts: the default theme fetches its fonts from Google, which an offline machine cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
# A slider's number box tells the server only when it loses focus; Enter makes it lose focus.
PAGE_JS = """() => document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches(".scale-slider input[type=number]")) event.target.blur();
})"""
# The line of a model card (after this marker) that the page shows as what to expect from the model.
SUMMARY_MARKER = "<!-- demo-summary -->"
# Library messages name Python arguments; a visitor knows the controls by their labels.
VISITOR_WORDS = {"remove_background='none'": "ticking “Skip background removal” (under Preprocessing)"}


def on_gpu(fn):
    """`spaces.GPU` on a Hugging Face Space (ZeroGPU attaches a GPU for the call), a no-op elsewhere."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to trim
    _LIBC = None


def release_memory() -> None:
    """Give the heap memory that a request freed back to the OS. glibc keeps it in per-thread arenas,
    and gradio serves requests from many threads: without this the app's RSS crept up by about
    15 MB a generate (`vat bench --soak`)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def handler(fn):
    """Every event handler: the library's errors become a gr.Error the visitor sees (never a
    traceback); anything else is a bug, its traceback goes to the server log and the visitor gets
    its one-line message. After the call, the memory it freed goes back to the OS."""

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
        finally:
            release_memory()

    return wrapper


def _upload(value, label: str) -> tuple[str | None, str]:
    """(file path, name for messages) of an upload. The events run with preprocess=False (their
    handlers check every input, with one message whether the call comes from the page or the API; and
    gr.Image would open the file with Pillow before the handler, so a client would get a bare "error"
    for a corrupt one): their uploads arrive as gradio's file dict; direct calls pass a path.
    Anything else is a VatError naming the input by its `label`."""
    if value is None or value == "":
        return None, ""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return value["path"], value.get("orig_name") or Path(value["path"]).name
    path = getattr(value, "path", value)
    if not isinstance(path, (str, os.PathLike)):
        raise VatError(f"{label} must be a file (from gradio_client: handle_file(path)), got {value!r}")
    return str(path), Path(path).name


def _checked_upload(component):
    """`component` (a file or image input) whose API value must be a file: gradio checks the file data
    before any handler runs, and answered a client's `123` with a bare "error". Its check now says which
    input wants a file (serve() launches with show_error, so the client gets the message)."""
    import pydantic

    base, label = component.data_model, component.label

    def is_a_file(cls, value):
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return value
        raise ValueError(f"{label} must be a file (from gradio_client: handle_file(path)), got {value!r}")

    component.data_model = type(base.__name__, (base,), {  # the same name and schema: the API docs keep it
        "__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__,
        "_is_a_file": pydantic.model_validator(mode="before")(classmethod(is_a_file))})
    return component


def _text(value, label: str) -> str:
    """A text input, stripped ('' for None); VatError naming the input when it is not text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise VatError(f"{label} must be text, got {value!r}")
    return value.strip()


def _flag(value, label: str) -> bool:
    """A checkbox's value; VatError naming the input unless it is true or false (a string such as
    "false" would otherwise count as ticked)."""
    if not isinstance(value, bool):
        raise VatError(f"{label} must be true or false, got {value!r}")
    return value


def _choice(value, label: str, choices, unit: str = "") -> str:
    """A radio's or dropdown's value, one of `choices` (strings); VatError naming the input otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise VatError(f"{label} must be one of {', '.join(repr(c) for c in choices)}{unit}, got {value!r}")
    return value


@contextlib.contextmanager
def _for_visitors(path: str | None, name: str):
    """Library messages name the server-side upload path and Python arguments; the visitor knows
    the file by its name and the controls by their labels."""
    try:
        yield
    except VatError as exc:
        message = str(exc).replace(path, name) if path else str(exc)
        for words, label in VISITOR_WORDS.items():
            message = message.replace(words, label)
        if message != str(exc):
            raise VatError(message) from exc
        raise


def _count(number: int, noun: str) -> str:
    """'1 token', '2 tokens', '1,024 faces'."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _plain(number: float) -> str:
    """2147483647, 0.05, 10: a number as a person writes it."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


@dataclass(frozen=True)
class Bounds:
    """A numeric input's label and range: its UI component shows them and its handler checks them
    (an API call reaches the handler without the component's checks), with one message for both."""

    label: str
    minimum: float
    maximum: float = math.inf
    whole: bool = False

    def check(self, value) -> float | int:
        """`value` as a number in range (an int when whole); VatError naming the input otherwise."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise VatError(f"{self.label} must be a number, got {value!r}") from None
        if self.whole and not number.is_integer():
            raise VatError(f"{self.label} must be a whole number, got {value!r}")
        if not self.minimum <= number <= self.maximum:
            within = f"at least {_plain(self.minimum)}" if self.maximum == math.inf else \
                f"between {_plain(self.minimum)} and {_plain(self.maximum)}"
            raise VatError(f"{self.label} must be {within}, got {value!r}")
        return int(number) if self.whole else number

    def ui(self) -> dict:
        """The component's label and range."""
        return dict(label=self.label, minimum=self.minimum, maximum=None if self.maximum == math.inf else self.maximum)


SEED = Bounds("Seed", 0, MAX_SEED, whole=True)
GUIDANCE = Bounds("Guidance scale (CFG)", 0.0, 10.0)
TEMPERATURE = Bounds("Temperature", 0.05, 2.0)
TOP_K = Bounds("Top-k (0: off)", 0, whole=True)
TOP_P = Bounds("Top-p (0: off)", 0.0, 1.0)
SEARCH = Bounds("Samples (the best outline is kept)", 1, 16, whole=True)
FOREGROUND_RATIO = Bounds("Foreground ratio", 0.5, 1.0)
TARGET_FACES = Bounds("Simplify to faces (0: keep all)", 0, MAX_TARGET_FACES, whole=True)
DECODE_SCALES = Bounds("Scales to decode (0: all)", 0, whole=True)
# The labels of the other inputs: the page shows them, and the handlers' messages name the inputs by them.
IMAGE_LABEL = "Image of one object"
TEXT_LABEL = "Text prompt (optional)"
SKIP_REMOVAL_LABEL = "Skip background removal (keep the whole image)"
RESOLUTION_LABEL = "Mesh resolution"
FORMAT_LABEL = "Format"
FLOATERS_LABEL = "Remove floaters"
MESH_LABEL = "Mesh (" + " ".join(MESH_FILE_TYPES) + ")"
VAT_LABEL = ".vat file"
REFERENCE_LABEL = "Reference mesh (" + " ".join(MESH_FILE_TYPES) + ")"
OTHER_LABEL = "Mesh to score"
ICP_LABEL = "ICP-align first (as for generated meshes)"
NORMALIZE_LABEL = "Normalisation"


def _resolution_of(value) -> int:
    """A mesh resolution choice (the radio's value: "64", "128" or "256") as grid cells per side."""
    return int(_choice(value, RESOLUTION_LABEL, [v for _, v in RESOLUTION_CHOICES], " (grid cells per side)"))


def _scale_of(value, result) -> int:
    return Bounds("Scales decoded", 1, result.num_scales, whole=True).check(value)


def pick_seed(seed, randomize: bool):
    """The seed the Generate button sends: a new random one when "Randomise seed" is ticked or the box
    is empty. (The button's own step: an API call's seed is used as it is.)"""
    return random.randint(0, MAX_SEED) if randomize or seed is None else seed


@functools.cache
def _grid_box() -> trimesh.path.Path3D:
    """The 12 edges of the decoding grid's box (the unit cube and its margin), light grey."""
    corners = np.array(list(itertools.product((-GRID_BOUND, GRID_BOUND), repeat=3)))
    # An edge joins two corners that differ along one axis (a triangulated box's edges_unique also has
    # the faces' diagonals, which cross every view out).
    edges = [(i, j) for i, j in itertools.combinations(range(8), 2) if (corners[i] != corners[j]).sum() == 1]
    path = trimesh.load_path(corners[edges])
    path.colors = [(190, 190, 190, 255)] * len(path.entities)
    return path


def _lit(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` in the grey of the project's renders, shaded as vat.geometry.render shades it (Lambert and
    ambient under a light beside the camera) for the viewer's first view, from the front (+Z): the
    shade is baked into the vertex colours, and export_view marks the material unlit, because the
    viewer's own lighting washes a mesh out to a pale lilac. The light counts from either side of a
    surface, so the mesh turned round is lit as well."""
    from vat.geometry.render import AMBIENT, LIGHT_DIRECTION, NEUTRAL_GREY

    facing = np.abs(np.asarray(mesh.vertex_normals) @ LIGHT_DIRECTION)
    shade = NEUTRAL_GREY[0] * (AMBIENT + (1.0 - AMBIENT) * facing)  # the renders' value, written as sRGB
    linear = 255 * shade**2.2  # glTF vertex colours are linear: the viewer turns them back into sRGB
    colours = np.concatenate([np.repeat(linear[:, None], 3, axis=1), np.full((len(linear), 1), 255.0)], axis=1)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colours.round().astype(np.uint8), process=False)


def _unlit(tree: dict) -> None:
    """glTF tree post-processor: every primitive is drawn in its vertex colours, without the viewer's lights
    (a primitive without a material gets a white one, which the colours multiply)."""
    materials = tree.setdefault("materials", [])
    for primitive in (p for mesh in tree.get("meshes", []) for p in mesh["primitives"]):
        if "material" not in primitive:
            primitive["material"] = len(materials)
            materials.append({"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}})
    for material in materials:
        material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
    tree["extensionsUsed"] = sorted(set(tree.get("extensionsUsed", [])) | {"KHR_materials_unlit"})


def export_view(mesh, path: Path) -> str:
    """`mesh` (in the unit cube) as a GLB for a 3D viewer, lit as the project's renders are (_lit), inside
    the edges of the decoding grid's box. The viewer frames a model by its bounds: with the box, every
    mesh gets the same camera, so a coarse scale's larger or smaller shape shows as such."""
    scene = trimesh.Scene([_lit(mesh), _grid_box()])
    path.write_bytes(trimesh.exchange.gltf.export_glb(scene, tree_postprocessor=_unlit))
    return str(path)


# ---------------------------------------------------------------------------- models, sessions


class Models:
    """The checkpoint's models, loaded on first use, once: the lock makes concurrent first requests
    wait for one load. The tokenizer alone serves the codec tabs; image to 3D needs the generator
    and the condition encoders too (vat.pipeline.Pipeline), which then share that tokenizer."""

    TOKENIZER = ("tokenizer_config.json", "tokenizer.safetensors")
    GENERATOR = ("generator_config.json", "generator.safetensors", "conditioning_config.json",
                 "conditioning.safetensors")
    CARDS = ("MODEL_CARD.md", "README.md")  # a model card, as this repository names it or as the hub does

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
        return (f"The {what} weights are not in `{folder.name}` (missing: {', '.join(absent)}). "
                f"{self._how_to_get_weights()}")

    @staticmethod
    def _how_to_get_weights() -> str:
        return (f"To get weights, start the app with `--checkpoint DIR_OR_HUB_ID` (or set {CHECKPOINT_ENV}): a folder "
                "or a Hugging Face repo holding tokenizer_*, generator_* and conditioning_* files, or one you "
                "trained with the scripts in `train/` (see the README). Comparing meshes works without weights.")

    def card(self) -> str | None:
        """The checkpoint's model card (Markdown), None when it has none."""
        try:
            folder = self.folder()
        except VatError:
            return None
        cards = [folder / name for name in self.CARDS if (folder / name).is_file()]
        return cards[0].read_text(encoding="utf-8") if cards else None

    def name(self) -> str:
        """What the page calls the model: its model card's title, else the hub id or the folder's name
        (never the server's path)."""
        title = next((line[2:].strip() for line in (self.card() or "").splitlines() if line.startswith("# ")), None)
        folder = Path(self.checkpoint)
        return title or (folder.resolve().name if folder.is_dir() else self.checkpoint)

    def sampling(self) -> dict:
        """The generator's default sampling settings (vat.pipeline.read_sampling: the checkpoint's
        sampling_config.json, else the library's defaults); no weights loaded."""
        from vat.pipeline import SAMPLING_DEFAULTS, read_sampling

        try:
            return read_sampling(self.folder())
        except VatError:  # no folder, or a broken file: loading the pipeline says so
            return dict(SAMPLING_DEFAULTS)

    def num_scales(self) -> int | None:
        """The tokenizer's number of scales, from its config (no weights loaded); None without one."""
        from vat.models.tokenizer import TokenizerConfig

        if self.missing(needs_generator=False):
            return None
        config = json.loads((self.folder() / self.TOKENIZER[0]).read_text())
        return len(TokenizerConfig(**config).scale_sides)

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


def model_summary(card: str | None) -> str | None:
    """The line after SUMMARY_MARKER in a model card: what to expect from the model, in one line."""
    lines = (card or "").splitlines() + [""]
    marked = [i for i, line in enumerate(lines) if line.strip() == SUMMARY_MARKER]
    return (lines[marked[0] + 1].strip() or None) if marked else None


class Session:
    """One visitor's results (token sequences with their lazily decoded meshes) and files, bounded:
    at most MESHES_PER_SESSION decoded meshes, and one file per slot (the mesh on show, each download)."""

    def __init__(self, key: str | None = None):
        self.name = Session.name_of(key) if key else uuid.uuid4().hex
        self.folder = OUTPUT_ROOT / self.name
        self.results: dict = {}  # tab -> vat.pipeline.Generation (tokens, settings, timings)
        self.sources: dict = {}  # tab -> the input mesh in the unit cube (mesh to tokens)
        # (tab, scales, cleaned) -> a decoded mesh's (vertices, faces), least recently used first: a trimesh's
        # caches (edges, adjacency, ...) weigh several times its arrays, and are rebuilt when needed.
        self.meshes: OrderedDict = OrderedDict()
        self.faces: dict = {}  # (tab, scales) -> faces of the cleaned mesh: the readout keeps them after the mesh goes
        self.files: dict = {}  # (tab, slot) -> the slot's file
        self.released = False  # its results were dropped (idle too long, evicted, or its tab closed)

    @staticmethod
    def name_of(key: str) -> str:
        """The folder name of a session hash: it comes from the client, so it is hashed, never trusted as a path."""
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def store(self, tab: str, result, source=None) -> None:
        """A new result for `tab`; the old one's meshes and face counts go."""
        self.results[tab], self.sources[tab] = result, source
        for key in [k for k in self.meshes if k[0] == tab]:
            del self.meshes[key]
        self.faces = {k: v for k, v in self.faces.items() if k[0] != tab}
        self.released = False

    def mesh(self, key: tuple) -> trimesh.Trimesh | None:
        """The cached mesh under `key` (now the most recently used), or None."""
        if key not in self.meshes:
            return None
        self.meshes.move_to_end(key)
        return trimesh.Trimesh(*self.meshes[key], process=False)

    def keep(self, key: tuple, mesh: trimesh.Trimesh) -> None:
        """Cache a decoded mesh; the least recently used beyond MESHES_PER_SESSION go."""
        self.meshes[key] = (np.asarray(mesh.vertices), np.asarray(mesh.faces))
        if key[2]:
            self.faces[key[:2]] = len(mesh.faces)
        while len(self.meshes) > MESHES_PER_SESSION:
            self.meshes.popitem(last=False)

    def file(self, tab: str, slot: str, name: str) -> Path:
        """Where to write `name`, the new file of `tab`'s `slot` (the mesh on show, a download, ...):
        the slot's previous file goes, so a session holds one file per slot."""
        old = self.files.pop((tab, slot), None)
        if old is not None:
            old.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files[(tab, slot)] = self.folder / name
        return self.folder / name

    def close(self) -> None:
        """Drop the results, meshes and files (a new result starts the session again)."""
        self.released = self.released or bool(self.results)
        for held in (self.results, self.sources, self.meshes, self.faces, self.files):
            held.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class Sessions:
    """The sessions whose results are held in memory: at most `capacity`, the least recently used
    dropped first, and none idle longer than `ttl_s`. A dropped session frees its results and files."""

    def __init__(self, capacity: int = MAX_SESSIONS, ttl_s: float = SESSION_TTL_S):
        self.capacity, self.ttl_s = capacity, ttl_s
        self._held: OrderedDict[str, tuple[Session, float]] = OrderedDict()  # name -> (session, last use)
        self._lock = threading.Lock()

    def use(self, state, key: str | None) -> Session:
        """The visitor's session, marked as used now: `state` when it is one (gradio's State holds it),
        else the one held for session hash `key`, else a new one."""
        now = time.monotonic()
        with self._lock:
            if isinstance(state, Session):
                session = state
            else:
                held = self._held.get(Session.name_of(key)) if key else None
                session = held[0] if held else Session(key)
            self._held.pop(session.name, None)
            self._held[session.name] = (session, now)
            expired = [name for name, (_, last) in self._held.items() if now - last > self.ttl_s]
            dropped = [self._held.pop(name)[0] for name in expired]
            while len(self._held) > self.capacity:
                dropped.append(self._held.popitem(last=False)[1][0])
        for old in dropped:
            old.close()
        return session

    def end(self, name: str) -> None:
        """Session `name` is over (its tab closed, or gradio expired its state): free it and its files."""
        with self._lock:
            session = self._held.pop(name, (None, 0.0))[0]
        if session is not None:
            session.close()
        shutil.rmtree(OUTPUT_ROOT / name, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, session: Session) -> bool:
        return session.name in self._held


SESSIONS = Sessions()


def _session(state, request: gr.Request | None) -> Session:
    return SESSIONS.use(state, getattr(request, "session_hash", None))


def _close_session(state) -> None:
    """gr.State's delete_callback: gradio expired the session's state."""
    if isinstance(state, Session):
        SESSIONS.end(state.name)


def _end_session(request: gr.Request) -> None:
    """demo.unload: the tab closed (or a client closed its connection); its results and files go now."""
    if request is not None and request.session_hash:
        SESSIONS.end(Session.name_of(request.session_hash))


def _result(session: Session, tab: str, what: str):
    result = session.results.get(tab)
    if result is None:
        if session.released:
            raise VatError(f"this page's results were released (the server keeps them {SESSION_TTL_S // 60} minutes "
                           f"after their last use, for its {SESSIONS.capacity} most recent visitors): {what} again")
        raise VatError(f"nothing to show yet: {what} first")
    return result


def _scale_readout(session: Session, tab: str, result, scales: int, extra: str = "") -> str:
    """What the first `scales` scales hold (tokens, bytes, faces), then the same for every scale, the
    faces of those decoded so far: how detail and size change from coarse to fine."""
    side = result.codec.config.scale_sides[scales - 1]
    every = range(1, result.num_scales + 1)
    sizes = [len(result.vat(s)) for s in every]
    faces = [session.faces.get((tab, s)) for s in every]  # None: that scale is not decoded yet
    line = (f"Scale **{scales} of {result.num_scales}**: {_count(result.tokens_at(scales), 'token')} "
            f"(+{side * side:,} in this scale's {side}×{side} map), {_count(sizes[scales - 1], 'byte')} · "
            f"{_count(faces[scales - 1], 'face')}{extra}")
    # One row per scale: a row per quantity needs a column per scale, too wide for the page.
    table = ["| scales | tokens | bytes | faces |", "|---:|---:|---:|---:|"]
    for s, size, count in zip(every, sizes, faces):
        cells = [str(s), f"{result.tokens_at(s):,}", f"{size:,}", "" if count is None else f"{count:,}"]
        table.append("| " + " | ".join(f"**{c}**" if s == scales and c else c for c in cells) + " |")
    note = "\n\nA scale's faces are counted once it is decoded (move the slider)." if None in faces else ""
    return line + "\n\n" + "\n".join(table) + note


# ---------------------------------------------------------------------------- tools without a model

F_SCORE = "F-score (τ = 0.01)"  # not "F-score@0.01": Markdown renders that as an e-mail address


@handler
def compare(reference_file, other_file, icp: bool = False, normalize: str = "reference", state=None,
            request: gr.Request = None):
    """F-score and Chamfer of one mesh against another on the protocol (`vat compare`), after the
    chosen normalisation; works without weights."""
    reference_path, reference_name = _upload(reference_file, REFERENCE_LABEL)
    other_path, other_name = _upload(other_file, OTHER_LABEL)
    icp, normalize = _flag(icp, ICP_LABEL), _choice(normalize, NORMALIZE_LABEL, [v for _, v in NORMALIZATIONS])
    if not reference_path or not other_path:
        raise VatError("Upload two meshes: a reference and one to score against it.")
    with _for_visitors(reference_path, reference_name):
        reference = load_mesh(reference_path)
    with _for_visitors(other_path, other_name):
        other = load_mesh(other_path)
    result = compare_meshes(reference, other, icp=icp, normalize=normalize)
    # The view shows the scored mesh where it was compared: in the reference's unit cube, in its own, or as given.
    scored = other.copy()
    if normalize != "none":
        scored.apply_transform(normalize_mesh(reference if normalize == "reference" else other)[1])
    session = _session(state, request)
    path = export_view(scored, session.file("compare", "view", f"scored-{Path(other_name).stem}.glb"))
    report = (
        f"**{F_SCORE}** {result['f_score']:.3f} · **Chamfer-L1** {result['chamfer']:.5f} · "
        f"precision {result['precision']:.3f} · recall {result['recall']:.3f}"
    )
    hint = placement_hint(reference, other, normalize)
    if hint:
        report += (f"\n\n⚠️ Note: {hint}. If they are one shape placed or scaled differently, choose "
                   f"“{EACH_LABEL}” under {NORMALIZE_LABEL}.")
    return report, str(path), session


@handler
def procedural(seed: float = 0, state=None, request: gr.Request = None):
    """A watertight procedural shape (CSG of primitives) with its caption: an input for the codec."""
    seed = SEED.check(seed)
    shape = random_shape(seed)
    session = _session(state, request)
    view = export_view(shape.mesh, session.file("procedural", "view", f"shape-{seed}-view.glb"))
    glb = export_mesh(shape.mesh, session.file("procedural", "mesh", f"shape-{seed}.glb"))
    return view, f"**{shape.caption}** · {_count(len(shape.mesh.faces), 'face')} · watertight", str(glb), session


def example_images(folder: str | os.PathLike | None) -> list[str]:
    """The example images in `folder` (sorted); none when it has none or does not exist."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


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
    samples = settings.get("search", 1)  # at most SEARCH.maximum = SAMPLE_BATCH: drawn as one batch

    def on_scale(done: int, total: int) -> None:
        if progress is not None:
            desc = f"Sampling scale {done} of {total}" + (f", {samples} samples at once" if samples > 1 else "")
            progress((done, total), desc=desc, unit="scales")

    result = models_for(checkpoint).pipeline().generate(image=image, text=text, seed=seed, progress=on_scale,
                                                        **settings)
    return dict(indices=result.indices, input_image=result.input_image, method=result.preprocess_method,
                timings=result.timings, settings=result.settings, seed=result.seed, warning=result.preprocess_warning)


@on_gpu
def decode_tokens(checkpoint: str, indices: list, scales: int, resolution: int, clean: bool = True):
    """The mesh of the first `scales` scales of `indices` (vat.pipeline.MeshCodec.decode_mesh)."""
    return models_for(checkpoint).codec().decode_mesh(indices, scales=scales, resolution=resolution, clean=clean)


@on_gpu
def encode_mesh(checkpoint: str, mesh):
    """vat.pipeline.MeshCodec.encode (with the encoder-side search and refinement `vat encode` uses): tokens and
    .vat bytes."""
    from vat.pipeline import DEFAULT_SEARCH
    return models_for(checkpoint).codec().encode(mesh, search=DEFAULT_SEARCH, refine=DEFAULT_REFINE)


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
        mesh = session.mesh(key)
        if mesh is None:
            start = time.perf_counter()
            mesh = decode_tokens(self.checkpoint, result.indices, scales, result.resolution, clean)
            result.timings[f"decode_s{scales}" + ("" if clean else "_raw")] = time.perf_counter() - start
            session.keep(key, mesh)
        return mesh

    # --- image to 3D ---------------------------------------------------------------------------
    @handler
    def preview(self, image, foreground_ratio: float = 0.85, skip_background_removal: bool = False):
        """The image as the generator will see it: object cut out, centred, on white."""
        from vat.preprocess import preprocess_image

        path, name = _upload(image, IMAGE_LABEL)
        skip = _flag(skip_background_removal, SKIP_REMOVAL_LABEL)
        if path is None:
            return None, ""
        with _for_visitors(path, name):
            done = preprocess_image(path, foreground_ratio=FOREGROUND_RATIO.check(foreground_ratio),
                                    remove_background="none" if skip else "auto")
        return done.image, _method_note(done.method, done.warning)

    def preview_on_page(self, image, foreground_ratio: float = 0.85, skip_background_removal: bool = False):
        """`preview` for the page: a file it cannot use is said beside the preview, not in a pop-up, so
        that pressing Generate next does not stack the same message twice."""
        try:
            return self.preview(image, foreground_ratio, skip_background_removal)
        except gr.Error as exc:
            return None, f"⚠️ {exc.message}"

    @handler
    def generate(self, image, text: str = "", seed: float | None = 0, guidance_scale: float | None = None,
                 temperature: float | None = None, top_k: float | None = None, top_p: float | None = None,
                 resolution: str = DEFAULT_RESOLUTION, foreground_ratio: float = 0.85,
                 skip_background_removal: bool = False, search: float | None = None, state=None,
                 request: gr.Request = None, progress=gr.Progress()):
        """Image (and/or text) -> tokens scale by scale -> the mesh of all scales. An empty seed is a
        random one; the seed used comes back. Sampling settings left None are the checkpoint's.
        `search` samples (default DEFAULT_GENERATE_SEARCH with an image, 1 without) are drawn and the one
        whose outline best fits the image is kept (vat.pipeline.Pipeline.generate)."""
        from vat.pipeline import DEFAULT_GENERATE_SEARCH, Generation

        (path, name), text = _upload(image, IMAGE_LABEL), _text(text, TEXT_LABEL)
        skip = _flag(skip_background_removal, SKIP_REMOVAL_LABEL)
        if path is None and not text:
            raise VatError("upload an image (or write a text prompt) first")
        seed = random.randint(0, MAX_SEED) if seed is None or seed == "" else SEED.check(seed)
        def given(bounds: Bounds, value):
            return None if value is None else bounds.check(value)

        settings = dict(cfg=given(GUIDANCE, guidance_scale), temperature=given(TEMPERATURE, temperature),
                        top_k=given(TOP_K, top_k), top_p=given(TOP_P, top_p),
                        foreground_ratio=FOREGROUND_RATIO.check(foreground_ratio),
                        remove_background="none" if skip else "auto", resolution=_resolution_of(resolution),
                        search=DEFAULT_GENERATE_SEARCH if search is None else SEARCH.check(search))
        if path is None:  # nothing to fit an outline to: one sample
            settings["search"] = 1
        codec = self.models.pipeline().codec  # loads the models here, or says what is missing
        with _for_visitors(path, name):
            tokens = sample_tokens(self.checkpoint, path, text or None, seed, settings, progress=progress)
        result = Generation(indices=tokens["indices"], codec=codec, seed=seed, settings=tokens["settings"],
                            timings=tokens["timings"], input_image=tokens["input_image"],
                            preprocess_method=tokens["method"], resolution=settings["resolution"])
        session = _session(state, request)
        session.store("generate", result)
        progress(1.0, desc=f"Decoding the mesh ({result.resolution}³ grid)")
        mesh = self._mesh(session, "generate", result.num_scales)
        glb = export_view(mesh, session.file("generate", "view", f"generated-{seed}-s{result.num_scales}.glb"))
        timings = {k: result.timings.get(k, 0.0) for k in ("preprocess", "condition", "sample", "search")
                   if k != "search" or k in result.timings}
        timings["decode"] = result.timings[f"decode_s{result.num_scales}"]
        kept = tokens["seed"]
        searched = (f" · best outline of {settings['search']} samples (sample seed {kept})"
                    if settings["search"] > 1 else "")
        info = (f"Seed **{seed}**{searched} · {result.num_scales} scales · {_count(result.tokens_at(), 'token')} in "
                f"**{len(result.vat()):,} bytes** · " + stage_times(timings, " · "))
        note = _method_note(result.preprocess_method, tokens["warning"]) if result.preprocess_method else ""
        return (result.input_image, note, glb, seed, info, result.num_scales,
                _scale_readout(session, "generate", result, result.num_scales), session)

    @handler
    def show_scale(self, scales: float, state=None, request: gr.Request = None):
        """The generated mesh decoded from its first `scales` scales (cached per session)."""
        session = _session(state, request)
        result = _result(session, "generate", "generate a mesh")
        scales = _scale_of(scales, result)
        mesh = self._mesh(session, "generate", scales)
        glb = export_view(mesh, session.file("generate", "view", f"generated-{result.seed}-s{scales}.glb"))
        return glb, _scale_readout(session, "generate", result, scales), session

    @handler
    def download(self, file_format: str = "glb", target_faces: float = 0, remove_floaters: bool = True,
                 scales: float = 0, state=None, request: gr.Request = None):
        """The shown mesh as GLB/OBJ/STL/PLY (optionally simplified, floaters kept or removed), and its .vat."""
        file_format = _choice(file_format, FORMAT_LABEL, EXPORT_CHOICES)
        remove_floaters = _flag(remove_floaters, FLOATERS_LABEL)
        target = TARGET_FACES.check(target_faces)
        if target and target < 4:
            raise VatError(f"{TARGET_FACES.label} must be at least 4 (or 0 to keep every face), got {target}")
        session = _session(state, request)
        result = _result(session, "generate", "generate a mesh")
        scales = result.num_scales if not scales else _scale_of(scales, result)
        # Decoded meshes come cleaned (floaters removed); keeping floaters needs the raw extraction.
        mesh = self._mesh(session, "generate", scales, clean=remove_floaters)
        if target or not remove_floaters:
            mesh = postprocess(mesh, remove_floaters=remove_floaters, target_faces=target or None)
        stem = f"vat-{result.seed}-s{scales}" + (f"-{target}f" if target else "")
        path = export_mesh(mesh, session.file("generate", "mesh", f"{stem}.{file_format}"))
        vat_path = session.file("generate", "vat", f"vat-{result.seed}-s{scales}.vat")
        vat_path.write_bytes(result.vat(scales))
        return str(path), str(vat_path), session

    # --- the codec -----------------------------------------------------------------------------
    @handler
    def encode(self, mesh_file, resolution: str = DEFAULT_RESOLUTION, state=None, request: gr.Request = None):
        """Mesh -> tokens -> .vat; the reconstruction from all scales and its F-score against the input."""
        from vat.pipeline import Generation

        path, name = _upload(mesh_file, MESH_LABEL)
        if path is None:
            raise VatError("upload a mesh file first (" + " ".join(MESH_FILE_TYPES) + ")")
        resolution = _resolution_of(resolution)
        codec = self.models.codec()  # loads the tokenizer here, or says what is missing
        with _for_visitors(path, name):
            original = load_mesh(path)
            source, _ = normalize_mesh(original)
        encoded = encode_mesh(self.checkpoint, original)  # the file keeps where the mesh was
        # A Generation is what the scale slider needs: tokens, their .vat prefixes, a resolution.
        result = Generation(indices=encoded.indices, codec=codec, seed=0, settings={"source": name}, timings={},
                            resolution=resolution, placement=encoded.placement)
        session = _session(state, request)
        session.store("encode", result, source)
        stem = Path(name).stem
        vat_path = session.file("encode", "vat", f"{stem}.vat")
        vat_path.write_bytes(encoded.data)
        input_glb = export_view(source, session.file("encode", "input", f"{stem}-input.glb"))
        mesh = self._mesh(session, "encode", result.num_scales)
        f_score = compare_meshes(source, mesh)["f_score"]
        glb = export_view(mesh, session.file("encode", "view", f"{stem}-s{result.num_scales}.glb"))
        file_bytes = Path(path).stat().st_size
        report = (f"{name} → **{len(encoded.data):,} bytes** of .vat ({_count(encoded.num_tokens, 'token')} in "
                  f"{result.num_scales} scales) · {size_change(file_bytes, len(encoded.data))} · {F_SCORE} against "
                  f"the input **{f_score:.3f}** · {'entropy-coded' if encoded.entropy_coded else 'raw tokens'} · "
                  f"placement kept: centre ({', '.join(f'{v:.3g}' for v in encoded.placement.centre)}), "
                  f"size {encoded.placement.size:.3g}")
        readout = _scale_readout(session, "encode", result, result.num_scales, f" · {F_SCORE} {f_score:.3f}")
        return input_glb, glb, report, str(vat_path), result.num_scales, readout, session

    @handler
    def show_reconstruction(self, scales: float, state=None, request: gr.Request = None):
        """The encoded mesh decoded from its first `scales` scales, with that prefix's bytes and F-score."""
        session = _session(state, request)
        result = _result(session, "encode", "encode a mesh")
        scales = _scale_of(scales, result)
        mesh = self._mesh(session, "encode", scales)
        f_score = compare_meshes(session.sources["encode"], mesh)["f_score"]
        glb = export_view(mesh, session.file("encode", "view", f"reconstruction-s{scales}.glb"))
        return glb, _scale_readout(session, "encode", result, scales, f" · {F_SCORE} {f_score:.3f}"), session

    @handler
    def decode(self, vat_file, scales: float = 0, resolution: str = DEFAULT_RESOLUTION, state=None,
               request: gr.Request = None):
        """.vat -> the mesh from all its scales (or the first `scales`)."""
        path, name = _upload(vat_file, VAT_LABEL)
        if path is None:
            raise VatError("upload a .vat file first")
        scales, resolution = DECODE_SCALES.check(scales), _resolution_of(resolution)
        codec = self.models.codec()
        data = Path(path).read_bytes()
        with _for_visitors(path, name):
            indices = codec.read(data)
        scales = scales or len(indices)
        if scales > len(indices):
            raise VatError(f"this .vat file holds {len(indices)} scales: ask for 1 to {len(indices)} (0 for all)")
        mesh = decode_tokens(self.checkpoint, indices, scales, resolution)
        session = _session(state, request)
        stem = f"{Path(name).stem}-s{scales}"
        view = export_view(mesh, session.file("decode", "view", f"{stem}-view.glb"))
        glb = export_mesh(mesh, session.file("decode", "mesh", f"{stem}.glb"))
        info = (f"{name}: {len(data):,} bytes, {len(indices)} of {codec.num_scales} scales stored · "
                f"decoded from {scales} · {_count(len(mesh.faces), 'face')}")
        return view, info, str(glb), session

    # --- layout --------------------------------------------------------------------------------
    def _header(self) -> str:
        """Title, what the demo is, how to use it, and the model with what to expect from it."""
        summary = model_summary(self.models.card())
        model = f"Model: **{self.models.name()}**"
        if summary:
            model += f" · {summary} ([model card](#model-card))"
        return (f"# vat {__version__}\n"
                "The Variational Tokenizer (arXiv 2412.02202): image to 3D by next-scale prediction, and a 3D "
                "codec that stores a shape in a few hundred bytes.\n\n"
                "**How to use:** upload a photo or render of one object (or click an example), press **Generate**, "
                "then move **Scales decoded** to see the shape built up from its first token to all of them.\n\n"
                + model)

    def build(self) -> gr.Blocks:
        from vat.pipeline import DEFAULT_GENERATE_SEARCH

        generator_missing = self.models.missing(needs_generator=True)
        tokenizer_missing = self.models.missing(needs_generator=False)
        num_scales = self.models.num_scales() or 10  # without a tokenizer the sliders serve nothing: any range
        card = self.models.card()
        sampling = self.models.sampling()

        def scale_slider(label: str, **kwargs) -> gr.Slider:
            # Its range is the checkpoint's from the start: the handlers return the slider a plain number
            # (what view_api documents), never a component update.
            return gr.Slider(1, num_scales, value=num_scales, step=1, label=label, elem_classes="scale-slider",
                             **kwargs)

        def resolution_radio() -> gr.Radio:
            return gr.Radio(RESOLUTION_CHOICES, value=DEFAULT_RESOLUTION, label=RESOLUTION_LABEL)

        with gr.Blocks(title="vat", analytics_enabled=False, delete_cache=(SESSION_TTL_S, SESSION_TTL_S)) as demo:
            state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=_close_session)
            gr.Markdown(self._header(), elem_id="header")
            with gr.Tab("Image to 3D", id="generate"):
                gr.Markdown(f"⚠️ {generator_missing}", visible=bool(generator_missing), elem_id="generate-missing")
                with gr.Row():
                    with gr.Column(scale=1):
                        image = _checked_upload(gr.Image(label=IMAGE_LABEL, type="filepath", image_mode=None,
                                                         sources=["upload", "clipboard"], height=280,
                                                         elem_id="input-image"))
                        text = gr.Textbox("", label=TEXT_LABEL, placeholder="a wooden chair", max_lines=2)
                        with gr.Accordion("Preprocessing", open=False):
                            foreground_ratio = gr.Slider(value=0.85, step=0.01, **FOREGROUND_RATIO.ui(),
                                                         info="share of the frame the object fills")
                            skip_removal = gr.Checkbox(False, label=SKIP_REMOVAL_LABEL)
                        with gr.Accordion("Sampling", open=False):
                            with gr.Row():
                                seed = gr.Number(0, precision=0, **SEED.ui())
                                randomize = gr.Checkbox(True, label="Randomise seed")
                            guidance = gr.Slider(value=sampling["cfg"], step=0.1, **GUIDANCE.ui(),
                                                 info=f"{sampling['cfg_schedule']} over the scales")
                            temperature = gr.Slider(value=sampling["temperature"], step=0.05, **TEMPERATURE.ui(),
                                                    info=_temperature_info(sampling))
                            top_k = gr.Number(sampling["top_k"], precision=0, **TOP_K.ui())
                            top_p = gr.Slider(value=sampling["top_p"], step=0.01, **TOP_P.ui())
                            search = gr.Slider(value=DEFAULT_GENERATE_SEARCH, step=1, **SEARCH.ui(),
                                               info="more samples fit the image better and take longer")
                        resolution = resolution_radio()
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
                        scale = scale_slider("Scales decoded (coarse to fine)", elem_id="scale-slider", info=SCALE_INFO)
                        readout = gr.Markdown(label="Scale readout", elem_id="scale-readout")
                        info = gr.Markdown(label="Generation info", elem_id="generate-info")
                        with gr.Accordion("Download", open=False):
                            with gr.Row():
                                file_format = gr.Dropdown(EXPORT_CHOICES, value="glb", label=FORMAT_LABEL)
                                target_faces = gr.Number(0, precision=0, **TARGET_FACES.ui())
                                floaters = gr.Checkbox(True, label=FLOATERS_LABEL)
                            prepare = gr.Button("Prepare files")
                            with gr.Row():
                                mesh_file = gr.File(label="Mesh", interactive=False)
                                vat_file = gr.File(label=".vat tokens", interactive=False)
                preview_inputs = [image, foreground_ratio, skip_removal]
                gr.on([image.change, foreground_ratio.release, skip_removal.input], self.preview_on_page,
                      preview_inputs, [seen, method], api_visibility="private", trigger_mode="always_last",
                      preprocess=False)
                # The API's /preprocess raises its errors as every endpoint does (a button never shown).
                gr.Button(visible=False).click(self.preview, preview_inputs, [seen, method], api_name="preprocess",
                                               preprocess=False)
                # The button first picks the seed (random when ticked), then generates with it; an API call
                # to /generate skips that step, so a seed it passes is the seed it gets.
                run.click(pick_seed, [seed, randomize], [seed], api_visibility="private", queue=False,
                          preprocess=False).then(
                    self.generate,
                    [image, text, seed, guidance, temperature, top_k, top_p, resolution, foreground_ratio,
                     skip_removal, search, state],
                    [seen, method, view, seed, info, scale, readout, state], api_name="generate",
                    concurrency_id="model", preprocess=False, show_progress_on=[view])
                scale.release(self.show_scale, [scale, state], [view, readout, state], api_name="show_scale",
                              trigger_mode="always_last", concurrency_id="model", preprocess=False)
                prepare.click(self.download, [file_format, target_faces, floaters, scale, state],
                              [mesh_file, vat_file, state], api_name="download", concurrency_id="model",
                              preprocess=False)

            with gr.Tab("Mesh to tokens", id="codec"):
                gr.Markdown(f"⚠️ {tokenizer_missing}", visible=bool(tokenizer_missing), elem_id="codec-missing")
                gr.Markdown("Encode a mesh into the tokenizer's tokens (a `.vat` file), see it rebuilt from the "
                            "first scales, and decode `.vat` files back into meshes.")
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = _checked_upload(gr.File(label=MESH_LABEL, file_types=MESH_FILE_TYPES))
                        encode_resolution = resolution_radio()
                        encode_run = gr.Button("Encode", variant="primary")
                        source_view = gr.Model3D(label="Input (unit cube)", height=300)
                    with gr.Column(scale=2):
                        recon_view = gr.Model3D(label="Reconstruction", height=420)
                        recon_scale = scale_slider("Scales decoded")
                        recon_readout = gr.Markdown(label="Reconstruction readout")
                        report = gr.Markdown(label="Encoding report")
                        encoded_file = gr.File(label=".vat tokens", interactive=False)
                encode_run.click(self.encode, [upload, encode_resolution, state],
                                 [source_view, recon_view, report, encoded_file, recon_scale, recon_readout, state],
                                 api_name="encode", concurrency_id="model", preprocess=False)
                recon_scale.release(self.show_reconstruction, [recon_scale, state], [recon_view, recon_readout, state],
                                    api_name="show_reconstruction", trigger_mode="always_last",
                                    concurrency_id="model", preprocess=False)
                gr.Markdown("### Tokens to mesh")
                with gr.Row():
                    with gr.Column(scale=1):
                        vat_upload = _checked_upload(gr.File(label=VAT_LABEL, file_types=[".vat"]))
                        decode_scales = gr.Number(0, precision=0, **DECODE_SCALES.ui())
                        decode_resolution = resolution_radio()
                        decode_run = gr.Button("Decode", variant="primary")
                    with gr.Column(scale=2):
                        decoded_view = gr.Model3D(label="Decoded mesh", height=360)
                        decoded_info = gr.Markdown(label="Decoding info")
                        decoded_file = gr.File(label="GLB", interactive=False)
                decode_run.click(self.decode, [vat_upload, decode_scales, decode_resolution, state],
                                 [decoded_view, decoded_info, decoded_file, state], api_name="decode",
                                 concurrency_id="model", preprocess=False)

            with gr.Tab("Compare meshes", id="compare"):
                with gr.Row():
                    reference = _checked_upload(gr.File(label=REFERENCE_LABEL))
                    other = _checked_upload(gr.File(label=OTHER_LABEL))
                normalize = gr.Radio(NORMALIZATIONS, value="reference", label=NORMALIZE_LABEL,
                                     info="where the two meshes are put before they are compared")
                icp = gr.Checkbox(label=ICP_LABEL, value=False)
                score = gr.Button("Compare", variant="primary")
                score_report = gr.Markdown(label="Scores", elem_id="compare-report")
                scored_view = gr.Model3D(label="Mesh scored (where it was compared)")
                score.click(compare, [reference, other, icp, normalize, state], [score_report, scored_view, state],
                            api_name="compare", preprocess=False)

            with gr.Tab("Procedural shapes", id="procedural"):
                shape_seed = gr.Number(0, precision=0, **SEED.ui())
                make = gr.Button("Make shape", variant="primary")
                shape_view = gr.Model3D(label="Shape")
                caption = gr.Markdown(label="Caption")
                shape_file = gr.File(label="Download GLB (an input for Mesh to tokens)")
                make.click(procedural, [shape_seed, state], [shape_view, caption, shape_file, state],
                           api_name="procedural", preprocess=False)
            if card:
                with gr.Accordion("Model card", open=False, elem_id="model-card"):
                    gr.Markdown(card)
            demo.unload(_end_session)
        return demo


# What the early scales show (measured with `vat eval-gen --per-scale`; model card, "Every prefix of scales").
SCALE_INFO = ("Scales 1-4 are coarse blobs that differ little from image to image (scale 1 is often the very "
              "same); the image's shape shows from about scale 5 to 7, and the last scales add detail.")


def _temperature_info(sampling: dict) -> str | None:
    last = sampling.get("temperature_last")
    return None if last is None else f"at scale 1, going to {last:g} at the last scale (cooler fine scales)"


def _method_note(method: str | None, warning: str = "") -> str:
    """How the object was cut out of the image (vat.ui.BACKGROUND_METHODS), and a warning when the cut-out
    looks wrong, for the page."""
    note = f"Background: {BACKGROUND_METHODS[method]}." if method in BACKGROUND_METHODS else ""
    return note + (f"\n\n⚠️ {warning}" if warning else "")


def build_demo(checkpoint: str | os.PathLike | None = None,
               examples: str | os.PathLike | None = EXAMPLES_DIR) -> gr.Blocks:
    """The demo's Blocks over `checkpoint` (default: $VAT_CHECKPOINT, else the repo's checkpoints/)."""
    return Demo(checkpoint, examples).build()


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          prevent_thread_lock: bool = False):
    """Queue (bounded) and launch; returns what gr.Blocks.launch returns."""
    demo.queue(max_size=QUEUE_SIZE)
    # show_error: a message gradio itself raises before a handler runs (a malformed upload, see _checked_upload)
    # reaches the client; the handlers' own errors are gr.Errors, shown either way.
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
                       theme=THEME, js=PAGE_JS, quiet=prevent_thread_lock, show_error=True)


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
    parser.add_argument("--max-sessions", type=int, default=MAX_SESSIONS,
                        help=f"visitors whose results are held in memory; the least recently active go first "
                             f"(default {MAX_SESSIONS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    SESSIONS.capacity = args.max_sessions
    # A host stops the app with SIGTERM: handled as Ctrl-C, gradio closes its server (deleting its
    # cached files) and the exit handlers remove this process's files.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = Demo(args.checkpoint, args.examples)
    if spaces is not None:
        demo.models.preload()
    serve(demo.build(), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
