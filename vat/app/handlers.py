"""What each of the demo's events does: check the inputs (vat.app.inputs), call the models (vat.app.gpu),
keep the result in the visitor's session (vat.app.sessions), and return what the page shows. app.py lays
these handlers out; gradio_client reaches each under its api_name."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import random
import time
from pathlib import Path

import gradio as gr
import numpy as np

from vat.app import gpu
from vat.app.inputs import (DECODE_SCALES, DEFAULT_RESOLUTION_CHOICE, EACH_LABEL, EXPORT_CHOICES, FLOATERS_LABEL,
                            FOREGROUND_RATIO, FORMAT_LABEL, GUIDANCE, ICP_LABEL, IMAGE_LABEL, MESH_FILE_TYPES,
                            MESH_LABEL, NORMALIZATIONS, NORMALIZE_LABEL, OTHER_LABEL, REFERENCE_LABEL, SEARCH, SEED,
                            SKIP_REMOVAL_LABEL, TARGET_FACES, TEMPERATURE, TEXT_LABEL, TOP_K, TOP_P, VAT_LABEL, Bounds,
                            check_choice, check_flag, check_resolution, check_scales, check_text, check_upload,
                            for_visitors)
from vat.app.models import models_for
from vat.app.sessions import Session, session_of
from vat.app.views import export_view
from vat.errors import VatError
from vat.geometry import export_mesh, load_mesh, normalize_mesh
from vat.geometry.extract import postprocess
from vat.geometry.procedural import random_shape
from vat.metrics import compare_meshes, placement_hint
from vat.preprocess_config import DEFAULT_PREPROCESS
from vat.tokens import decode_key
from vat.ui import BACKGROUND_METHODS, MAX_SEED, size_change, stage_times

log = logging.getLogger("vat.app")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
F_SCORE = "F-score (τ = 0.01)"  # not "F-score@0.01": Markdown renders that as an e-mail address

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


# ---------------------------------------------------------------------------- words for the page


def count(number: int, noun: str) -> str:
    """'1 token', '2 tokens', '1,024 faces'."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def method_note(method: str | None, warning: str = "") -> str:
    """How the object was cut out of the image (vat.ui.BACKGROUND_METHODS), and a warning when the cut-out
    looks wrong, for the page."""
    note = f"Background: {BACKGROUND_METHODS[method]}." if method in BACKGROUND_METHODS else ""
    return note + (f"\n\n⚠️ {warning}" if warning else "")


def placement_words(placement) -> str:
    """'centre (2, -1, 0.5), size 3': where a .vat file puts its decoded mesh back (vat.codec.Placement:
    the centre of the mesh's bounding box and its longest side, in the mesh's own units)."""
    return f"centre ({', '.join(f'{v:.3g}' for v in placement.centre)}), size {placement.size:.3g}"


def scale_readout(session: Session, tab: str, result, scales: int, extra: str = "") -> str:
    """What the first `scales` scales hold (tokens, bytes, faces), then the same for every scale, the
    faces of those decoded so far: how detail and size change from coarse to fine."""
    side = result.codec.config.scale_sides[scales - 1]
    every = range(1, result.num_scales + 1)
    sizes = [len(result.vat(s)) for s in every]
    faces = [session.faces.get((tab, s)) for s in every]  # None: that scale is not decoded yet
    line = (f"Scale **{scales} of {result.num_scales}**: {count(result.tokens_at(scales), 'token')} "
            f"(+{side * side:,} in this scale's {side}×{side} map), {count(sizes[scales - 1], 'byte')} · "
            f"{count(faces[scales - 1], 'face')}{extra}")
    # One row per scale: a row per quantity needs a column per scale, too wide for the page.
    table = ["| scales | tokens | bytes | faces |", "|---:|---:|---:|---:|"]
    for s, size, faces_s in zip(every, sizes, faces):
        cells = [str(s), f"{result.tokens_at(s):,}", f"{size:,}", "" if faces_s is None else f"{faces_s:,}"]
        table.append("| " + " | ".join(f"**{c}**" if s == scales and c else c for c in cells) + " |")
    note = "\n\nA scale's faces are counted once it is decoded (move the slider)." if None in faces else ""
    return line + "\n\n" + "\n".join(table) + note


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def sample_caption(sample) -> str:
    """'seed 12 · fit 0.57' for the gallery: the sample's seed and its outline's IoU with the image."""
    if sample.outline_score < 0:
        return f"seed {sample.seed} · no surface"
    return f"seed {sample.seed} · fit {sample.outline_score:.2f}"


def samples_on_show(session: Session) -> list:
    """The Image to 3D result's search samples, best fit first (the gallery's order); none before a generation."""
    result = session.results.get("generate")
    return result.samples_by_fit() if result is not None else []


def blank_preview() -> np.ndarray:
    """A white picture for a sample with no surface."""
    return np.full((gpu.PREVIEW_SIZE, gpu.PREVIEW_SIZE, 3), 255, dtype=np.uint8)


# ---------------------------------------------------------------------------- tools without a model


def pick_seed(seed, randomize: bool):
    """The seed the Generate button sends: a new random one when "Randomise seed" is ticked or the box
    is empty. (The button's own step: an API call's seed is used as it is.)"""
    return random.randint(0, MAX_SEED) if randomize or seed is None else seed


@handler
def compare(reference_file, other_file, icp: bool = False, normalize: str = "reference", state=None,
            request: gr.Request = None):
    """F-score and Chamfer of one mesh against another on the protocol (`vat compare`), after the
    chosen normalisation; works without weights."""
    reference_path, reference_name = check_upload(reference_file, REFERENCE_LABEL)
    other_path, other_name = check_upload(other_file, OTHER_LABEL)
    icp = check_flag(icp, ICP_LABEL)
    normalize = check_choice(normalize, NORMALIZE_LABEL, [v for _, v in NORMALIZATIONS])
    if not reference_path or not other_path:
        raise VatError("Upload two meshes: a reference and one to score against it.")
    with for_visitors(reference_path, reference_name):
        reference = load_mesh(reference_path)
    with for_visitors(other_path, other_name):
        other = load_mesh(other_path)
    result = compare_meshes(reference, other, icp=icp, normalize=normalize)
    # The view shows the scored mesh where it was compared: in the reference's unit cube, in its own, or as given.
    scored = other.copy()
    if normalize != "none":
        scored.apply_transform(normalize_mesh(reference if normalize == "reference" else other)[1])
    session = session_of(state, request)
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
    session = session_of(state, request)
    view = export_view(shape.mesh, session.file("procedural", "view", f"shape-{seed}-view.glb"))
    glb = export_mesh(shape.mesh, session.file("procedural", "mesh", f"shape-{seed}.glb"))
    return view, f"**{shape.caption}** · {count(len(shape.mesh.faces), 'face')} · watertight", str(glb), session


def example_images(folder: str | os.PathLike | None) -> list[str]:
    """The example images in `folder` (sorted); none when it has none or does not exist."""
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# ---------------------------------------------------------------------------- the model tabs


class Handlers:
    """The handlers of the model tabs over one checkpoint (a folder or hub id)."""

    def __init__(self, checkpoint: str | os.PathLike, examples: str | os.PathLike | None = None):
        self.checkpoint = str(checkpoint)
        self.models = models_for(self.checkpoint)
        self.examples = example_images(examples)

    def _mesh(self, session: Session, tab: str, scales: int, clean: bool = True):
        """The mesh of `tab`'s result (a vat.tokens.Tokens) from its first `scales` scales at its resolution:
        decoded inside the GPU call (vat.app.gpu.tokens_to_mesh, Tokens.mesh on a copy of the tokens: the
        result's own Tokens.mesh would decode outside a ZeroGPU call), once, then cached in the session, the
        app's only mesh cache (bounded, as Tokens' own is not). Timed under Tokens.mesh's key,
        vat.tokens.decode_key: decode_s<S>_r<R> (+ _raw when not cleaned)."""
        result = session.results[tab]
        key = (tab, scales, clean)
        mesh = session.mesh(key)
        if mesh is None:
            start = time.perf_counter()
            mesh = gpu.tokens_to_mesh(self.checkpoint, result.indices, scales, result.resolution, clean)
            result.timings[decode_key(scales, result.resolution, clean)] = time.perf_counter() - start
            session.keep(key, mesh)
        return mesh

    # --- image to 3D ---------------------------------------------------------------------------
    @handler
    def preview(self, image, foreground_ratio: float = DEFAULT_PREPROCESS.foreground_ratio,
                skip_background_removal: bool = False):
        """The image as the generator will see it: object cut out, centred, on white."""
        from vat.preprocess import preprocess_image

        path, name = check_upload(image, IMAGE_LABEL)
        skip = check_flag(skip_background_removal, SKIP_REMOVAL_LABEL)
        if path is None:
            return None, ""
        with for_visitors(path, name):
            done = preprocess_image(path, foreground_ratio=FOREGROUND_RATIO.check(foreground_ratio),
                                    remove_background="none" if skip else DEFAULT_PREPROCESS.remove_background)
        return done.image, method_note(done.method, done.warning)

    def preview_on_page(self, image, foreground_ratio: float = DEFAULT_PREPROCESS.foreground_ratio,
                        skip_background_removal: bool = False):
        """`preview` for the page: a file it cannot use is said beside the preview, not in a pop-up, so
        that pressing Generate next does not stack the same message twice."""
        try:
            return self.preview(image, foreground_ratio, skip_background_removal)
        except gr.Error as exc:
            return None, f"⚠️ {exc.message}"

    @handler
    def generate(self, image, text: str = "", seed: float | None = 0, guidance_scale: float | None = None,
                 temperature: float | None = None, top_k: float | None = None, top_p: float | None = None,
                 resolution: str = DEFAULT_RESOLUTION_CHOICE,
                 foreground_ratio: float = DEFAULT_PREPROCESS.foreground_ratio,
                 skip_background_removal: bool = False, search: float | None = None, state=None,
                 request: gr.Request = None, progress=gr.Progress()):
        """Image (and/or text) -> tokens scale by scale -> the mesh of all scales. An empty seed is a
        random one; the seed used comes back. Sampling settings left None are the checkpoint's.
        `search` samples (default DEFAULT_GENERATE_SEARCH with an image, 1 without) are drawn and the one
        whose outline best fits the image is kept (vat.pipeline.Pipeline.generate)."""
        from vat.pipeline import DEFAULT_GENERATE_SEARCH, Generation

        (path, name), text = check_upload(image, IMAGE_LABEL), check_text(text, TEXT_LABEL)
        skip = check_flag(skip_background_removal, SKIP_REMOVAL_LABEL)
        if path is None and not text:
            raise VatError("upload an image (or write a text prompt) first")
        seed = random.randint(0, MAX_SEED) if seed is None or seed == "" else SEED.check(seed)
        def given(bounds: Bounds, value):
            return None if value is None else bounds.check(value)

        settings = dict(cfg=given(GUIDANCE, guidance_scale), temperature=given(TEMPERATURE, temperature),
                        top_k=given(TOP_K, top_k), top_p=given(TOP_P, top_p),
                        foreground_ratio=FOREGROUND_RATIO.check(foreground_ratio),
                        remove_background="none" if skip else DEFAULT_PREPROCESS.remove_background,
                        resolution=check_resolution(resolution),
                        search=DEFAULT_GENERATE_SEARCH if search is None else SEARCH.check(search))
        if path is None:  # nothing to fit an outline to: one sample
            settings["search"] = 1
        codec = self.models.pipeline().codec  # loads the models here, or says what is missing
        with for_visitors(path, name):
            tokens = gpu.generate_tokens(self.checkpoint, path, text or None, seed, settings, progress=progress)
        # The result's seed is the kept sample's (as the library's): that seed alone, with one sample, gives it again.
        result = Generation(indices=tokens["indices"], codec=codec, seed=tokens["seed"], settings=tokens["settings"],
                            timings=tokens["timings"], input_image=tokens["input_image"],
                            preprocess_method=tokens["method"], resolution=settings["resolution"],
                            samples=tokens["samples"])
        session = session_of(state, request)
        session.store("generate", result)
        session.previews = tokens["previews"]
        progress(1.0, desc=f"Decoding the mesh ({result.resolution}³ grid)")
        searched = (f" · best outline of {settings['search']} samples (sample seed {tokens['seed']})"
                    if settings["search"] > 1 else "")
        glb, info, readout = self._show_generation(session, result, f"Seed **{seed}**{searched}")
        note = method_note(result.preprocess_method, tokens["warning"]) if result.preprocess_method else ""
        return result.input_image, note, glb, seed, info, result.num_scales, readout, session

    def _show_generation(self, session: Session, result, headline: str) -> tuple[str, str, str]:
        """The view (GLB path) of the Image to 3D tab's result from all its scales, its info line (after
        `headline`: its bytes and stage times) and its scale readout."""
        mesh = self._mesh(session, "generate", result.num_scales)
        glb = export_view(mesh, session.file("generate", "view", f"generated-{result.seed}-s{result.num_scales}.glb"))
        timings = {k: result.timings.get(k, 0.0) for k in ("preprocess", "condition", "sample", "search")
                   if k != "search" or k in result.timings}
        timings["decode"] = result.timings[decode_key(result.num_scales, result.resolution)]
        info = (f"{headline} · {result.num_scales} scales · {count(result.tokens_at(), 'token')} in "
                f"**{len(result.vat()):,} bytes** · " + stage_times(timings, " · "))
        return str(glb), info, scale_readout(session, "generate", result, result.num_scales)

    @handler
    def samples(self, state=None, request: gr.Request = None):
        """The outline search's samples of the shown generation, best fit first: (picture, caption) pairs for a
        gallery (none after a single sample). Their order is what pick_sample's index counts."""
        session = session_of(state, request)
        ranked = samples_on_show(session)
        return [(session.previews[s.seed] if s.seed in session.previews else blank_preview(),
                 sample_caption(s)) for s in ranked], session

    @handler
    def use_sample(self, sample_seed: float, state=None, request: gr.Request = None):
        """Show another of the outline search's samples (by its seed) in place of the one it kept: its mesh
        from all scales, info and readout; downloads and the scale slider then use it."""
        session = session_of(state, request)
        result = session.result("generate", "generate a mesh")
        chosen = result.choose(SEED.check(sample_seed))
        session.store("generate", chosen)
        ranked = chosen.samples_by_fit()
        rank = next(k for k, s in enumerate(ranked) if s.seed == chosen.seed)
        headline = (f"Sample seed **{chosen.seed}**, chosen: {ordinal(rank + 1)} best outline of {len(ranked)} "
                    f"(fit {chosen.settings['outline_score']:.2f})")
        glb, info, readout = self._show_generation(session, chosen, headline)
        return glb, info, chosen.num_scales, readout, session

    @handler
    def pick_sample(self, state=None, selected: gr.SelectData = None, request: gr.Request = None):
        """The page's click on the samples gallery: use_sample of the sample at the clicked place."""
        session = session_of(state, request)
        ranked = samples_on_show(session)
        index = selected.index if selected is not None else None
        if not isinstance(index, int) or not 0 <= index < len(ranked):
            raise gr.Error("that sample is no longer on show: generate again", print_exception=False)
        return self.use_sample(ranked[index].seed, session, request)

    @handler
    def show_scale(self, scales: float, state=None, request: gr.Request = None):
        """The generated mesh decoded from its first `scales` scales (cached per session)."""
        session = session_of(state, request)
        result = session.result("generate", "generate a mesh")
        scales = check_scales(scales, result)
        mesh = self._mesh(session, "generate", scales)
        glb = export_view(mesh, session.file("generate", "view", f"generated-{result.seed}-s{scales}.glb"))
        return glb, scale_readout(session, "generate", result, scales), session

    @handler
    def download(self, file_format: str = "glb", target_faces: float = 0, remove_floaters: bool = True,
                 scales: float = 0, state=None, request: gr.Request = None):
        """The shown mesh as GLB/OBJ/STL/PLY (optionally simplified, floaters kept or removed), and its .vat."""
        file_format = check_choice(file_format, FORMAT_LABEL, EXPORT_CHOICES)
        remove_floaters = check_flag(remove_floaters, FLOATERS_LABEL)
        target = TARGET_FACES.check(target_faces)
        if target and target < 4:
            raise VatError(f"{TARGET_FACES.label} must be at least 4 (or 0 to keep every face), got {target}")
        session = session_of(state, request)
        result = session.result("generate", "generate a mesh")
        scales = result.num_scales if not scales else check_scales(scales, result)
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
    def encode(self, mesh_file, resolution: str = DEFAULT_RESOLUTION_CHOICE, state=None, request: gr.Request = None):
        """Mesh -> tokens -> .vat; the reconstruction from all scales and its F-score against the input."""
        path, name = check_upload(mesh_file, MESH_LABEL)
        if path is None:
            raise VatError("upload a mesh file first (" + " ".join(MESH_FILE_TYPES) + ")")
        resolution = check_resolution(resolution)
        codec = self.models.codec()  # loads the tokenizer here, or says what is missing
        with for_visitors(path, name):
            original = load_mesh(path)
            source, _ = normalize_mesh(original)
        # vat.tokens.Tokens: what the scale slider needs (tokens, their .vat prefixes, a resolution); the file keeps
        # where the mesh was. Its codec stays behind when it comes back pickled from a GPU worker.
        result = gpu.encode_mesh(self.checkpoint, original)
        result.codec, result.resolution = codec, resolution
        session = session_of(state, request)
        session.store("encode", result, source)
        stem = Path(name).stem
        vat_path = session.file("encode", "vat", f"{stem}.vat")
        vat_path.write_bytes(result.vat())
        input_glb = export_view(source, session.file("encode", "input", f"{stem}-input.glb"))
        mesh = self._mesh(session, "encode", result.num_scales)
        f_score = compare_meshes(source, mesh)["f_score"]
        glb = export_view(mesh, session.file("encode", "view", f"{stem}-s{result.num_scales}.glb"))
        file_bytes = Path(path).stat().st_size
        report = (f"{name} → **{len(result.vat()):,} bytes** of .vat ({count(result.num_tokens, 'token')} in "
                  f"{result.num_scales} scales) · {size_change(file_bytes, len(result.vat()))} · {F_SCORE} against "
                  f"the input **{f_score:.3f}** · {'entropy-coded' if result.entropy_coded else 'raw tokens'} · "
                  f"placement kept: {placement_words(result.placement)}")
        readout = scale_readout(session, "encode", result, result.num_scales, f" · {F_SCORE} {f_score:.3f}")
        return input_glb, glb, report, str(vat_path), result.num_scales, readout, session

    @handler
    def show_reconstruction(self, scales: float, state=None, request: gr.Request = None):
        """The encoded mesh decoded from its first `scales` scales, with that prefix's bytes and F-score."""
        session = session_of(state, request)
        result = session.result("encode", "encode a mesh")
        scales = check_scales(scales, result)
        mesh = self._mesh(session, "encode", scales)
        f_score = compare_meshes(session.sources["encode"], mesh)["f_score"]
        glb = export_view(mesh, session.file("encode", "view", f"reconstruction-s{scales}.glb"))
        return glb, scale_readout(session, "encode", result, scales, f" · {F_SCORE} {f_score:.3f}"), session

    @handler
    def decode(self, vat_file, scales: float = 0, resolution: str = DEFAULT_RESOLUTION_CHOICE, state=None,
               request: gr.Request = None):
        """.vat -> the mesh from all its scales (or the first `scales`): the view in the unit cube, the GLB
        put back where the encoded mesh was (as `vat decode`); the info says the file's bytes and placement."""
        path, name = check_upload(vat_file, VAT_LABEL)
        if path is None:
            raise VatError("upload a .vat file first")
        scales, resolution = DECODE_SCALES.check(scales), check_resolution(resolution)
        codec = self.models.codec()
        data = Path(path).read_bytes()
        with for_visitors(path, name):
            tokens = codec.read_file(data)
        indices = list(tokens.indices)
        scales = scales or len(indices)
        if scales > len(indices):
            raise VatError(f"this .vat file holds {len(indices)} scales: ask for 1 to {len(indices)} (0 for all)")
        mesh = gpu.tokens_to_mesh(self.checkpoint, indices, scales, resolution)
        session = session_of(state, request)
        stem = f"{Path(name).stem}-s{scales}"
        view = export_view(mesh, session.file("decode", "view", f"{stem}-view.glb"))
        placed = mesh if tokens.placement is None else tokens.placement.apply(mesh)
        glb = export_mesh(placed, session.file("decode", "mesh", f"{stem}.glb"))
        where = ("no placement stored: the GLB stays in the unit cube" if tokens.placement is None else
                 f"placement stored: {placement_words(tokens.placement)} (the GLB is put back there)")
        info = (f"{name}: **{len(data):,} bytes** (format v{tokens.version}, "
                f"{'entropy-coded' if tokens.prior is not None else 'raw tokens'}), {len(indices)} of "
                f"{codec.num_scales} scales stored · {where} · decoded from {scales} · "
                f"{count(len(mesh.faces), 'face')}")
        return view, info, str(glb), session
