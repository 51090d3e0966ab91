"""The generator's text encoder: a CLIP text tower (open_clip's TextTransformer and its bundled BPE
tokenizer), from an open_clip model name, hub repo or folder, or built here from its architecture.
Layout names: B batch, T text tokens, C channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from vat.errors import VatError
from vat.models.hub import hub_file, local_folder, missing_weights

DEFAULT_TEXT_ENCODER = "ViT-L-14"
# Where a CLIP text tower's weights sit in an open_clip state dict (CLIP class: at the top level;
# CustomTextCLIP: under "text.").
_TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
# open_clip's weight files in a model folder or hub repo, preferred first.
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_VOCABULARY = 49408  # open_clip's bundled BPE tokenizer (SimpleTokenizer)


@dataclass
class TextEncoderConfig:
    """A CLIP text tower (open_clip): hub weights (`pretrained`) or a random one built from `tower`."""

    # An open_clip model name (weights: its "openai" tag, else its first, from the hub repo open_clip
    # names for it), an open_clip hub repo ("timm/vit_large_patch14_clip_224.openai", "hf-hub:" optional)
    # or a local folder holding open_clip_config.json and the weights.
    pretrained: str | None = DEFAULT_TEXT_ENCODER
    # {"embed_dim": E, "quick_gelu": bool, **open_clip CLIPTextCfg fields} of a tower built here.
    tower: dict | None = None

    def __post_init__(self):
        if (self.pretrained is None) == (self.tower is None):
            raise ValueError("a text encoder needs exactly one of `pretrained` (open_clip model, hub repo or folder) "
                             "and `tower` (its architecture as a dict)")


# ---------------------------------------------------------------------------- text: CLIP


def _load_open_clip_text(source: str, allow_download: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """(tower architecture, text-tower state dict) of an open_clip model name, hub repo or folder."""
    import open_clip
    from open_clip.factory import load_state_dict

    schema, name = open_clip.factory.parse_model_name(source)
    folder = local_folder(name) if schema != "hf-hub" else None
    if folder is not None:
        config_path = folder / "open_clip_config.json"
        weights = [folder / f for f in _OPEN_CLIP_WEIGHTS if (folder / f).is_file()]
        if not config_path.is_file() or not weights:
            raise VatError(f"{folder} does not hold an open_clip model (open_clip_config.json and one of "
                           f"{', '.join(_OPEN_CLIP_WEIGHTS)})")
        model_config, weights_path = json.loads(config_path.read_text()).get("model_cfg", {}), str(weights[0])
        quick_gelu = model_config.get("quick_gelu", False)
    elif schema is None and open_clip.get_model_config(name) is not None:
        model_config = open_clip.get_model_config(name)
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not tags:
            raise VatError(f"open_clip knows no pretrained weights for {name!r}: pass a hub repo or a folder")
        pretrained = open_clip.get_pretrained_cfg(name, "openai" if "openai" in tags else tags[0])
        parts = pretrained.get("hf_hub", "").strip("/").split("/")
        if len(parts) < 2:
            raise VatError(f"open_clip has no Hugging Face repo for {name!r}'s weights: download them and pass a folder")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        missing = missing_weights("CLIP text", name, repo, "--text-encoder")
        weights_path = hub_file(repo, [filename] if filename else _OPEN_CLIP_WEIGHTS, allow_download, missing)
        quick_gelu = pretrained.get("quick_gelu", model_config.get("quick_gelu", False))
    else:
        missing = missing_weights("CLIP text", name, name, "--text-encoder")
        config_path = hub_file(name, ["open_clip_config.json"], allow_download, missing)
        model_config = json.loads(Path(config_path).read_text()).get("model_cfg", {})
        weights_path = hub_file(name, _OPEN_CLIP_WEIGHTS, allow_download, missing)
        quick_gelu = model_config.get("quick_gelu", False)
    if "text_cfg" not in model_config or "embed_dim" not in model_config:
        raise VatError(f"{source}: its open_clip config has no text tower (text_cfg, embed_dim)")
    architecture = {"embed_dim": model_config["embed_dim"], "quick_gelu": bool(quick_gelu), **model_config["text_cfg"]}
    try:
        state = load_state_dict(weights_path)
    except Exception as exc:  # torch and safetensors raise several types for a corrupt file
        raise VatError(f"could not read the CLIP weights {weights_path}: {exc}") from exc
    if any(k.startswith("text.") for k in state):
        text_state = {k[len("text."):]: v for k, v in state.items() if k.startswith("text.")}
    else:
        text_state = {k: v for k, v in state.items() if k.split(".")[0] in _TEXT_KEYS}
    return architecture, text_state


def _build_tower(architecture: dict) -> nn.Module:
    from open_clip.model import CLIPTextCfg, _build_text_tower

    tower = dict(architecture)
    embed_dim, quick_gelu = tower.pop("embed_dim", None), tower.pop("quick_gelu", False)
    if embed_dim is None:
        raise VatError("a text tower needs its output width: embed_dim")
    try:
        text_config = CLIPTextCfg(**tower)
    except TypeError as exc:
        raise VatError(f"not a valid open_clip text config: {exc}") from exc
    if text_config.hf_model_name or text_config.hf_tokenizer_name or text_config.vocab_size != CLIP_VOCABULARY:
        raise VatError("only CLIP-style open_clip text towers (open_clip's own transformer and BPE tokenizer, "
                       f"{CLIP_VOCABULARY} tokens) are supported, not Hugging Face text models")
    # A private helper of open_clip (pinned in requirements.txt): it builds the text tower alone, so
    # the 300M-parameter vision tower of ViT-L-14 is never made.
    return _build_text_tower(embed_dim, text_config, quick_gelu=quick_gelu)


class TextEncoder(nn.Module):
    """Captions -> CLIP's pooled, projected text embedding [B, C] (open_clip's TextTransformer and
    its bundled BPE tokenizer, both offline)."""

    def __init__(self, config: TextEncoderConfig, allow_download: bool = False):
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer

        self.config = config
        state = None
        if config.pretrained is not None:
            self.tower_architecture, state = _load_open_clip_text(config.pretrained, allow_download)
        else:
            self.tower_architecture = dict(config.tower)
        self.tower = _build_tower(self.tower_architecture)
        if state is not None:
            try:
                self.tower.load_state_dict(state)
            except RuntimeError as exc:
                raise VatError(f"the CLIP weights of {config.pretrained!r} do not fit its text tower: {exc}") from exc
        self.tokenizer = SimpleTokenizer(context_length=self.tower.context_length)

    @property
    def channels(self) -> int:
        return self.tower_architecture["embed_dim"]

    def architecture(self) -> TextEncoderConfig:
        """This encoder as a config that rebuilds it without the hub (its weights saved beside it)."""
        return TextEncoderConfig(pretrained=None, tower=dict(self.tower_architecture))

    def tokenize(self, texts) -> torch.Tensor:
        """int64 [B, T] token ids (start, BPE, end, zero padding; truncated to the context length).
        `texts`: a string or a list of strings (None counts as the empty caption)."""
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, Sequence) or len(texts) == 0 or \
                not all(t is None or isinstance(t, str) for t in texts):
            raise VatError("texts must be a string or a non-empty list of strings")
        return self.tokenizer([t or "" for t in texts])

    def forward(self, text_ids_BT: torch.Tensor) -> torch.Tensor:
        return self.tower(text_ids_BT.to(self.tower.positional_embedding.device))
