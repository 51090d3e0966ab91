"""The checkpoint's models, loaded once per process through the library's loaders (vat.pipeline), and
what the page says about them: which parts are missing and how to get weights, the model card, the
sampling defaults and the number of scales (read from the configs, no weights loaded)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from vat.errors import VatError
from vat.sampling_config import DEFAULT_SAMPLING, SamplingConfig

log = logging.getLogger("vat.app")

CHECKPOINT_ENV = "VAT_CHECKPOINT"  # a folder or hub id; --checkpoint wins over it
CARDS = ("MODEL_CARD.md", "README.md")  # a model card, as this repository names it or as the hub does
# The line of a model card (after this marker) that the page shows as what to expect from the model.
SUMMARY_MARKER = "<!-- demo-summary -->"


class Models:
    """The checkpoint's models, loaded on first use, once: the lock makes concurrent first requests
    wait for one load. The tokenizer alone serves the codec tabs; image to 3D needs the generator
    and the condition encoders too (vat.pipeline.Pipeline), which then share that tokenizer."""

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
        from vat.pipeline import CODEC_PARTS, PIPELINE_PARTS, missing_files

        try:
            folder = self.folder()
        except VatError as exc:
            return f"{exc}. {self._how_to_get_weights()}"
        absent = missing_files(folder, PIPELINE_PARTS if needs_generator else CODEC_PARTS)
        if not absent:
            return None
        what = "image-to-3D" if needs_generator else "tokenizer"
        return (f"The {what} weights are not in `{folder.name}` (missing: {', '.join(absent)}). "
                f"{self._how_to_get_weights()}")

    @staticmethod
    def _how_to_get_weights() -> str:
        from vat.pipeline import PIPELINE_PARTS

        *parts, last = [f"{part}_*" for part in PIPELINE_PARTS]
        return (f"To get weights, start the app with `--checkpoint DIR_OR_HUB_ID` (or set {CHECKPOINT_ENV}): a folder "
                f"or a Hugging Face repo holding {', '.join(parts)} and {last} files, or one you "
                "trained with the scripts in `train/` (see the README). Comparing meshes works without weights.")

    def card(self) -> str | None:
        """The checkpoint's model card (Markdown), None when it has none."""
        try:
            folder = self.folder()
        except VatError:
            return None
        cards = [folder / name for name in CARDS if (folder / name).is_file()]
        return cards[0].read_text(encoding="utf-8") if cards else None

    def name(self) -> str:
        """What the page calls the model: its model card's title, else the hub id or the folder's name
        (never the server's path)."""
        title = next((line[2:].strip() for line in (self.card() or "").splitlines() if line.startswith("# ")), None)
        folder = Path(self.checkpoint)
        return title or (folder.resolve().name if folder.is_dir() else self.checkpoint)

    def sampling(self) -> SamplingConfig:
        """The generator's default sampling settings, a vat.sampling_config.SamplingConfig: the checkpoint's
        sampling_config.json, else the library's defaults; no weights loaded."""
        try:
            return SamplingConfig.read(self.folder())
        except VatError:  # no folder, or a broken file: loading the pipeline says so
            return DEFAULT_SAMPLING

    def num_scales(self) -> int | None:
        """The tokenizer's number of scales, from its config (no weights loaded); None without one."""
        from vat.pipeline import read_tokenizer_config

        if self.missing(needs_generator=False):
            return None
        return len(read_tokenizer_config(self.folder()).scale_sides)

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


_MODELS: dict[str, Models] = {}
_MODELS_LOCK = threading.Lock()


def models_for(checkpoint: str) -> Models:
    """The one Models of `checkpoint` in this process (the model calls of vat.app.gpu find it by name)."""
    with _MODELS_LOCK:
        if checkpoint not in _MODELS:
            _MODELS[checkpoint] = Models(checkpoint)
        return _MODELS[checkpoint]


def model_summary(card: str | None) -> str | None:
    """The line after SUMMARY_MARKER in a model card: what to expect from the model, in one line."""
    lines = (card or "").splitlines() + [""]
    marked = [i for i, line in enumerate(lines) if line.strip() == SUMMARY_MARKER]
    return (lines[marked[0] + 1].strip() or None) if marked else None
