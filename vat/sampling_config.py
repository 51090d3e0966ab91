"""Sampling settings of a generator (what vat.pipeline.Pipeline.generate uses where the caller gives none),
and the checkpoint file that carries them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vat.errors import VatError

# Sampling settings of a generator: these defaults, overridden by the checkpoint's sampling_config.json
# (the setting chosen for that generator on its validation split; see the model card), overridden by
# the caller's arguments.
# temperature_last: the temperature at the last scale, reached linearly from `temperature` at the first
# (vat.models.gpt.scale_temperature); None keeps `temperature` at every scale (files without the key load so).
SAMPLING_DEFAULTS = {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "temperature_last": None, "top_k": 0,
                     "top_p": 0.0}
SAMPLING_KINDS = {"cfg": float, "cfg_schedule": str, "temperature": float, "temperature_last": float, "top_k": int,
                  "top_p": float}
SAMPLING_CONFIG = "sampling_config.json"
UNGUIDED_SAMPLING = ("temperature", "temperature_last", "top_k", "top_p")  # what an unconditional sample uses


def check_sampling(settings: dict) -> dict:
    """`settings` (a subset of SAMPLING_DEFAULTS' keys, None meaning unset) checked and typed;
    raises VatError on an unknown key or a value out of range."""
    unknown = set(settings) - set(SAMPLING_DEFAULTS)
    if unknown:
        raise VatError(f"unknown sampling setting(s) {sorted(unknown)}; known: {sorted(SAMPLING_DEFAULTS)}")
    valid = {"cfg": lambda v: v >= 0, "cfg_schedule": lambda v: v in ("linear", "constant"),
             "temperature": lambda v: v > 0, "temperature_last": lambda v: v > 0, "top_k": lambda v: v >= 0,
             "top_p": lambda v: 0 <= v <= 1}
    out = {}
    for key, value in settings.items():
        if value is None:
            continue
        kind = SAMPLING_KINDS[key]
        try:
            typed = kind(value)
        except (TypeError, ValueError):
            raise VatError(f"sampling setting {key}={value!r} is not a {kind.__name__}") from None
        if (kind is float and not np.isfinite(typed)) or (kind is int and typed != value) or not valid[key](typed):
            raise VatError(f"sampling setting {key}={value!r} is out of range")
        out[key] = typed
    return out


def read_sampling(folder: str | os.PathLike) -> dict:
    """SAMPLING_DEFAULTS updated by FOLDER/sampling_config.json when there is one."""
    path = Path(folder) / SAMPLING_CONFIG
    if not path.is_file():
        return dict(SAMPLING_DEFAULTS)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VatError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(stored, dict):
        raise VatError(f"{path}: expected a JSON object of sampling settings")
    return {**SAMPLING_DEFAULTS, **check_sampling(stored)}
