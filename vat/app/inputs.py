"""What a request may send, checked: every input's label and range (Bounds), the choices of the radios
and dropdowns, and the checks of uploads, text and checkboxes. The page shows the labels, and a wrong
value is a VatError naming the input by its label, whether it comes from the page or the API."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from vat import tokens
from vat.errors import VatError
from vat.geometry import EXPORT_FORMATS, LOAD_FORMATS
from vat.ui import DEFAULT_RESOLUTION, MAX_SEED, MAX_TARGET_FACES, RESOLUTIONS

MESH_FILE_TYPES = [f".{f}" for f in LOAD_FORMATS]
EXPORT_CHOICES = list(EXPORT_FORMATS)
# Marching-cubes grid presets (vat.ui.RESOLUTIONS): the protocol's 256^3 is the finest; 128^3 keeps a CPU
# demo in seconds. The values are strings because that is the type gradio documents for a radio's choices.
RESOLUTION_CHOICES = [(f"{name} · {cells}³", str(cells)) for name, cells in zip(("Draft", "Standard", "Fine"),
                                                                              RESOLUTIONS)]
DEFAULT_RESOLUTION_CHOICE = str(DEFAULT_RESOLUTION)
# The Compare tab's normalisation (vat.metrics.compare_meshes(normalize=...)), as `vat compare --normalize`.
EACH_LABEL = "Each in its own unit cube"
NORMALIZATIONS = [("Reference's unit cube, the other moved with it (the protocol)", "reference"),
                  (EACH_LABEL, "each"), ("None: the files' coordinates", "none")]
# Library messages name Python arguments; a visitor knows the controls by their labels.
VISITOR_WORDS = {"remove_background='none'": "ticking “Skip background removal” (under Preprocessing)",
                 "scale must be": "Scales decoded must be"}  # vat.tokens.check_scales, on the scale slider


def plain(number: float) -> str:
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
            within = f"at least {plain(self.minimum)}" if self.maximum == math.inf else \
                f"between {plain(self.minimum)} and {plain(self.maximum)}"
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


def check_upload(value, label: str) -> tuple[str | None, str]:
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


def checked_upload(component):
    """`component` (a file or image input) whose API value must be a file: gradio checks the file data
    before any handler runs, and answered a client's `123` with a bare "error". Its check now says which
    input wants a file (app.serve launches with show_error, so the client gets the message)."""
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


def check_text(value, label: str) -> str:
    """A text input, stripped ('' for None); VatError naming the input when it is not text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise VatError(f"{label} must be text, got {value!r}")
    return value.strip()


def check_flag(value, label: str) -> bool:
    """A checkbox's value; VatError naming the input unless it is true or false (a string such as
    "false" would otherwise count as ticked)."""
    if not isinstance(value, bool):
        raise VatError(f"{label} must be true or false, got {value!r}")
    return value


def check_choice(value, label: str, choices, unit: str = "") -> str:
    """A radio's or dropdown's value, one of `choices` (strings); VatError naming the input otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise VatError(f"{label} must be one of {', '.join(repr(c) for c in choices)}{unit}, got {value!r}")
    return value


def check_resolution(value) -> int:
    """A mesh resolution choice (the radio's value: "64", "128" or "256") as grid cells per side."""
    return int(check_choice(value, RESOLUTION_LABEL, [v for _, v in RESOLUTION_CHOICES], " (grid cells per side)"))


def check_scales(value, result) -> int:
    """A number of scales of `result` to decode: a whole number (any: the range is the library's), 1 to all of
    them (vat.tokens.check_scales, its message naming the input)."""
    with for_visitors(None, "Scales decoded"):
        return tokens.check_scales(Bounds("Scales decoded", -math.inf, whole=True).check(value), result.num_scales)


@contextlib.contextmanager
def for_visitors(path: str | None, name: str):
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
