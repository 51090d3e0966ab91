"""Sampling settings of a generator (what vat.pipeline.Pipeline.generate uses where the caller gives none),
and the checkpoint file that carries them. Light on purpose (no torch, no numpy): `vat --help` imports it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path

from vat.errors import VatError

CFG_SCHEDULES = ("linear", "constant")  # guidance over the scales (vat.models.gpt.guidance_weight)
SAMPLING_CONFIG = "sampling_config.json"  # the file in a checkpoint folder
UNGUIDED_SAMPLING = ("temperature", "temperature_last", "top_k", "top_p")  # what an unconditional sample uses


@dataclass(frozen=True)
class SamplingConfig:
    """How a generator samples tokens. These defaults, overridden by the checkpoint's sampling_config.json
    (the setting chosen for that generator on its validation split; see the model card), overridden by
    the caller's arguments. Values are checked and typed on construction (VatError when out of range)."""

    cfg: float = 1.5  # classifier-free guidance scale (0: off)
    cfg_schedule: str = "linear"  # one of CFG_SCHEDULES: linear (VAR: 0 at the first scale, cfg at the last)
    temperature: float = 1.0  # softmax temperature (at the first scale)
    # The temperature at the last scale, reached linearly from `temperature` at the first
    # (vat.models.gpt.scale_temperature); None keeps `temperature` at every scale (files without the key load so).
    temperature_last: float | None = None
    top_k: int = 0  # sample among the k likeliest tokens (0: all)
    top_p: float = 0.0  # nucleus sampling mass (0: off)

    def __post_init__(self):
        for name, kind in _kinds().items():
            value = getattr(self, name)
            if value is not None or name != "temperature_last":
                object.__setattr__(self, name, _typed(name, value, kind))
        out_of_range = {"cfg": self.cfg < 0, "cfg_schedule": self.cfg_schedule not in CFG_SCHEDULES,
                        "temperature": self.temperature <= 0,
                        "temperature_last": self.temperature_last is not None and self.temperature_last <= 0,
                        "top_k": self.top_k < 0, "top_p": not 0 <= self.top_p <= 1}
        for name, wrong in out_of_range.items():
            if wrong:
                raise VatError(f"sampling setting {name}={getattr(self, name)!r} is out of range ({_RANGES[name]})")

    def replace(self, **overrides) -> SamplingConfig:
        """These settings with the `overrides` that are not None (VatError on an unknown name)."""
        unknown = set(overrides) - set(_kinds())
        if unknown:
            raise VatError(f"unknown sampling setting(s) {sorted(unknown)}; known: {sorted(_kinds())}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> SamplingConfig:
        """The defaults updated by FOLDER/sampling_config.json when there is one."""
        path = Path(folder) / SAMPLING_CONFIG
        if not path.is_file():
            return cls()
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise VatError(f"{path}: not a readable JSON file ({exc})") from exc
        if not isinstance(stored, dict):
            raise VatError(f"{path}: expected a JSON object of sampling settings")
        return cls().replace(**stored)

    def save(self, folder: str | os.PathLike) -> None:
        """FOLDER/sampling_config.json: every setting, what read() gives back."""
        (Path(folder) / SAMPLING_CONFIG).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# What each setting takes, in words (the error messages').
_RANGES = {"cfg": "0 or more", "cfg_schedule": " or ".join(CFG_SCHEDULES), "temperature": "more than 0",
           "temperature_last": "more than 0", "top_k": "0 or more", "top_p": "0 to 1"}


def _kinds() -> dict[str, type]:
    """Each setting's type, from SamplingConfig's annotations (float for `float | None`)."""
    hints = typing.get_type_hints(SamplingConfig)
    return {f.name: next(a for a in (typing.get_args(hints[f.name]) or (hints[f.name],)) if a is not type(None))
            for f in dataclasses.fields(SamplingConfig)}


def _typed(name: str, value, kind: type):
    try:
        typed = kind(value)
    except (TypeError, ValueError):
        raise VatError(f"sampling setting {name}={value!r} is not a {kind.__name__}") from None
    if kind is int and typed != value:
        raise VatError(f"sampling setting {name}={value!r} is not a whole number")
    if kind is float and not math.isfinite(typed):
        raise VatError(f"sampling setting {name}={value!r} is out of range ({_RANGES[name]})")
    return typed


DEFAULT_SAMPLING = SamplingConfig()
# The dict forms: vat.pipeline's public names from before SamplingConfig, kept for callers of that API (the
# library, CLI and demo use SamplingConfig).
SAMPLING_DEFAULTS = DEFAULT_SAMPLING.to_dict()


def check_sampling(settings: dict) -> dict:
    """`settings` (a subset of SamplingConfig's fields, None meaning unset) checked and typed;
    raises VatError on an unknown key or a value out of range."""
    checked = DEFAULT_SAMPLING.replace(**settings)
    return {key: getattr(checked, key) for key, value in settings.items() if value is not None}


def read_sampling(folder: str | os.PathLike) -> dict:
    """SamplingConfig.read(folder) as a dict."""
    return SamplingConfig.read(folder).to_dict()
