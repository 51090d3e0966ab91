"""How an input image is framed for the generator (vat.preprocess.preprocess_image): the defaults the
library, the command line and the demo share. Light on purpose (no numpy, no PIL): `vat --help` imports it."""

from __future__ import annotations

from dataclasses import dataclass

from vat.errors import VatError

# Where the object's foreground comes from (vat.preprocess.preprocess_image's remove_background).
REMOVE_BACKGROUND = ("auto", "rembg", "grabcut", "builtin", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """The framing of an input image: the object centred, its longer side `foreground_ratio` of a `size` x
    `size` square, on white. Checked on construction (VatError when out of range)."""

    foreground_ratio: float = 0.85  # the object's longer side, as a share of the square's side: (0, 1]
    size: int = 512  # side of the square output, pixels (at least 8)
    remove_background: str = "auto"  # one of REMOVE_BACKGROUND

    def __post_init__(self):
        if not 0.0 < self.foreground_ratio <= 1.0:
            raise VatError(f"foreground_ratio must be in (0, 1], got {self.foreground_ratio}")
        if int(self.size) != self.size or self.size < 8:
            raise VatError(f"size must be an integer of at least 8 pixels, got {self.size}")
        if self.remove_background not in REMOVE_BACKGROUND:
            raise VatError(f"remove_background must be one of {REMOVE_BACKGROUND}, got {self.remove_background!r}")


DEFAULT_PREPROCESS = PreprocessConfig()
