"""Checkpoint folders: NAME_config.json (readable by a person) beside NAME.safetensors (no pickles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vat.errors import VatError


def part_files(part: str) -> tuple[str, str]:
    """The config and weights files of checkpoint part `part` (e.g. "tokenizer", one of
    vat.pipeline.PIPELINE_PARTS), as save_weights writes them and load_weights reads them."""
    return f"{part}_config.json", f"{part}.safetensors"


def save_weights(module: nn.Module, config: dict, directory: str | Path, name: str,
                 dtype: torch.dtype = torch.float16) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_name, weights_name = part_files(name)
    (directory / config_name).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    save_file(state, directory / weights_name)


def load_weights(directory: str | Path, name: str, build: Callable[[dict], nn.Module]) -> nn.Module:
    """`build(config dict)` makes the module; its weights come from the folder, in float32, eval mode.
    Missing files, a bad config and weights that do not fit the config raise VatError."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = (directory / file for file in part_files(name))
    if not config_path.is_file() or not weights_path.is_file():
        raise VatError(f"{directory} has no {name} (expected {config_path.name} and {weights_path.name})")
    try:
        model = build(json.loads(config_path.read_text()))
    except (TypeError, ValueError) as exc:
        raise VatError(f"{config_path} is not a valid {name} config: {exc}") from exc
    try:
        state = load_file(weights_path)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except Exception as exc:  # safetensors and torch raise several types for corrupt or mismatched files
        raise VatError(f"{weights_path} does not match {config_path}: {exc}") from exc
    return model.eval()
