r"""Stage 1: train the VAT tokenizer on shards written by train/prepare_data.py.

    python train/train_tokenizer.py --data data/train --val-data data/val-sh3d --out runs/tiny \
        --config train/configs/tokenizer_tiny.json
    torchrun --nproc_per_node 8 train/train_tokenizer.py --data ... --out runs/paper256 --preset paper-256 \
        --batch-size 32 --steps 300000 --phase1-steps 200000
    python train/train_tokenizer.py ... --preset tiny --model-override width=64 --model-override heads=2

Phase 1 trains without quantisation; phase 2 starts by filling the codebook with encoder latents
and fine-tunes everything with it, restarting dead codes now and then. Running the same command
again resumes from OUT/checkpoint.pt. OUT/final holds the EMA weights (VAT.from_pretrained).
Options come from the TrainConfig defaults, then --config JSON, then the command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from vat import data
from vat.errors import VatError
from vat.models.tokenizer import PRESETS, VAT, SurfaceLevels, TokenizerConfig
from vat.training.distributed import gather_rows, rank_of_process
from vat.training.options import add_options, check_source_weights, config_from_args, training_parser
from vat.training.run import Run, StepLog, init_weights
from vat.training.schedule import PRECISIONS, uses_bf16
from vat.training.tokenizer_data import ShapeSamples
from vat.training.tokenizer_eval import calibrate_surface, evaluate

log = logging.getLogger("train_tokenizer")


@dataclass
class TrainConfig:
    """Every option of a run; saved as OUT/train_config.json (with the model config)."""

    data: str  # shard folder (train/prepare_data.py --out)
    out: str  # run folder: checkpoint, tb/, final/
    val_data: str | None = None  # validation shard folder for IoU / accuracy (e.g. data/val-sh3d)
    # Leave the validation split (vat.data.in_validation: a fixed 1/12 of every source) out of training,
    # as train_generator.py's option does, so that --val-data data/val-sh3d validates on unseen shapes.
    hold_out_validation: bool = False
    source_weights: dict = field(default_factory=dict)  # {source: K}: its shapes K times per pass
    preset: str = "tiny"  # model size, a key of vat.models.tokenizer.PRESETS
    model_overrides: dict = field(default_factory=dict)  # TokenizerConfig fields replaced in the preset
    init_from: str | None = None  # a tokenizer folder (e.g. an earlier run's final/) to start a new run from
    steps: int = 300_000  # phase 1 + phase 2 (paper: 200k + 100k)
    phase1_steps: int = 200_000  # steps without quantisation
    batch_size: int = 8  # shapes per rank and step
    uniform_queries: int = 20_000  # occupancy queries per shape and step, drawn from the uniform ones...
    near_queries: int = 20_000  # ...and from the near-surface ones (surface points: model num_points)
    lr: float = 1e-4  # peak
    min_lr_ratio: float = 0.0  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 2_000
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    occupancy_weight: float = 1.0
    codebook_weight: float = 0.2
    kl_weight: float = 1e-4
    kl_warmup_steps: int = 2_000  # the KL weight ramps up linearly from 0 over these steps (against posterior collapse)
    restart_every: int = 200  # phase 2: move dead codes onto encoder latents every N steps (0: never)
    restart_threshold: float = 0.03  # a code is dead below this share of the average usage
    val_every: int = 2_000
    val_shapes: int = 64  # at most this many validation shapes
    save_every: int = 1_000
    calibrate_shapes: int = 64  # the exported model's surface levels are fitted on this many training shapes (0: none)
    snapshot_every: int = 0  # also keep the EMA model of every N-th step in OUT/snapshots/step-N (learning curves)
    log_every: int = 20
    workers: int = 2  # data loader processes per rank
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # bf16: autocast to bfloat16 (weights stay float32); on a CPU with AMX the convolutions of the
    # grid design run in channels-last bf16 kernels, several times faster. auto: bf16 on CUDA and on
    # CPUs with native bf16 (oneDNN says so), else fp32.
    precision: str = "auto"  # auto | bf16 | fp32
    max_shapes: int = 0  # train on the first N shapes only (0: all), e.g. the 64-shape rung of the learning-curve ladder
    # Phase 2: decode this share of each batch's shapes from a random prefix of 1..S-1 scales (the rest
    # from all S), so that coarse scales decode to coarse shapes (CS-IoU, the app's scale scrubber).
    prefix_share: float = 0.0
    # Train the decoder only (from_latent and the field); the encoder and the codebook stay as
    # --init-from has them, so a shape's tokens, and a generator trained on them, stay valid.
    freeze_encoder: bool = False
    # With --freeze-encoder: decode each shape from its tokens with near misses (one of the 8 codes nearest
    # the true one) at a rate drawn from U(0, token_noise) per shape, so that the decoder draws a clean shape
    # from a generator's slightly wrong tokens (MultiScaleQuantizer.near_misses). 0: off.
    token_noise: float = 0.0
    # Scale each training draw per axis (0.75-1.33) and mirror it half the time, framed again
    # (vat.training.tokenizer_data.Augmentation): the offline augmented copies' distribution, a new draw each time.
    augment: bool = False
    fresh_shapes: int = 0  # if N > 0: keep 10% of every shape's queries out of training and score the first N
    # training shapes on them at each validation (how well the field interpolates between its samples)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        check_source_weights(self.source_weights)
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.phase1_steps <= self.steps:
            raise ValueError("phase1_steps must be in 0..steps")
        if not 0.0 <= self.prefix_share <= 1.0:
            raise ValueError(f"prefix_share must be in [0, 1], got {self.prefix_share}")
        if self.freeze_encoder and (not self.init_from or self.phase1_steps):
            raise ValueError("freeze_encoder keeps a trained encoder and codebook: give --init-from and --phase1-steps 0")
        if not 0.0 <= self.token_noise <= 1.0:
            raise ValueError(f"token_noise must be in [0, 1], got {self.token_noise}")
        if self.token_noise and not self.freeze_encoder:
            raise ValueError("token_noise trains the decoder on wrong tokens: only with --freeze-encoder")

    def model_config(self) -> TokenizerConfig:
        overrides = dict(self.model_overrides)
        if "num_latents" in overrides:  # the preset's scale schedule was made for its own K
            overrides.setdefault("scale_sides", ())
        return PRESETS[self.preset].with_overrides(**overrides)


# ---------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None) -> TrainConfig:
    p, _, optim, _ = training_parser(__doc__, (("--data", "training shard folder"),
                                               ("--val-data", "validation shard folder (e.g. data/val-sh3d)")),
                                     PRESETS, "TokenizerConfig")
    add_options(optim, (
        ("phase1_steps", int, "steps before quantisation is switched on"),
        ("init_from", str, "tokenizer folder (an earlier run's final/) whose matching weights start this run"),
        ("uniform_queries", int, "uniform queries per shape"), ("near_queries", int, "near-surface queries per shape"),
        ("occupancy_weight", float, "BCE weight"), ("codebook_weight", float, "codebook MSE weight"),
        ("kl_weight", float, "KL weight"), ("kl_warmup_steps", int, "steps over which the KL weight ramps up from 0"),
        ("restart_every", int, "dead-code restart interval in phase 2 (0: never)"),
        ("restart_threshold", float, "usage below which a code is dead"),
        ("precision", str, "auto | bf16 | fp32 (auto: bf16 autocast on CUDA and CPU)"),
        ("max_shapes", int, "train on the first N shapes only (0: all)"),
        ("calibrate_shapes", int, "fit the exported model's surface levels (one per decoded prefix of scales) "
                                  "on N training shapes (0: keep logit 0)"),
        ("snapshot_every", int, "keep the EMA model every N steps in OUT/snapshots (0: never)"),
        ("fresh_shapes", int, "hold 10%% of each shape's queries out of training; score N training shapes on them"),
        ("prefix_share", float, "phase 2: share of shapes decoded from a random prefix of the scales (coarse to fine)"),
        ("token_noise", float, "with --freeze-encoder: decode each shape's tokens with near misses at a rate "
                               "from U(0, R) (a decoder robust to a generator's mistakes; 0: off)"),
    ))
    optim.add_argument("--augment", action="store_true",
                       help="scale each training draw per axis and mirror it half the time (shape augmentation)")
    optim.add_argument("--freeze-encoder", action="store_true",
                       help="train the decoder only; tokens (and a generator trained on them) stay valid")
    return config_from_args(p, argv, TrainConfig, ("data", "out"), check=TrainConfig.model_config)


# ---------------------------------------------------------------------------- training pieces


def kl_factor(step: int, config: TrainConfig) -> float:
    """KL annealing: with the full weight from the start, the KL term's small but steady pull
    (normalised by Adam into full-size steps) raises sigma before the decoder depends on the
    latents, and they end as noise the decoder ignores."""
    return min(1.0, (step + 1) / config.kl_warmup_steps) if config.kl_warmup_steps > 0 else 1.0


def wrap(model: VAT, quantize: bool, device: torch.device, freeze_encoder: bool = False) -> nn.Module:
    """The module to train. DDP only syncs parameters that get gradients, so the quantiser is
    frozen in phase 1 (where it is unused) and the wrapper is rebuilt when phase 2 starts.
    DDP broadcasts rank 0's buffers (the codebook usage) at every forward. `freeze_encoder`
    freezes everything up to the tokens (encoder, latent head, quantiser)."""
    for module in (model.encoder, model.to_latent):
        module.requires_grad_(not freeze_encoder)
    model.quantizer.requires_grad_(quantize and not freeze_encoder)
    if not dist.is_initialized():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def restart_codes(model: VAT, ema: AveragedModel, batch: dict, threshold: float, everything: bool = False) -> int:
    """Move dead codes (all codes if `everything`) onto encoder latents of this step's batch,
    gathered from every rank. Rank 0 picks them by its usage and broadcasts the codebook and
    usage, so replicas stay equal.
    The EMA's codebook takes the result as is: averaging a code with its old place means nothing."""
    quantizer = model.quantizer
    z_BKC, _ = model.latent(batch["points"], batch["normals"], sample=True)
    samples_NC = gather_rows(z_BKC.flatten(0, 1).float())
    if everything:
        quantizer.usage.zero_()
    restarted = quantizer.restart_dead_codes(samples_NC, threshold) if rank_of_process() == 0 else 0
    if dist.is_initialized():
        dist.broadcast(quantizer.codebook.weight.data, 0)
        dist.broadcast(quantizer.usage, 0)
        count = torch.tensor([restarted], device=samples_NC.device)
        dist.broadcast(count, 0)
        restarted = int(count)
    if restarted:
        ema.module.quantizer.codebook.weight.copy_(quantizer.codebook.weight)
    return restarted


# ---------------------------------------------------------------------------- the run


def quantized_at(config, step: int) -> bool:
    """Whether the model after `step` steps quantises: past phase 1, or from the start in a run that begins
    quantised from --init-from's trained weights (--phase1-steps 0), whose codebook comes with them (so a
    `--steps 0` run validates the starting model as it tokenizes)."""
    return step > config.phase1_steps or (config.phase1_steps == 0 and bool(config.init_from))


class TokenizerSteps:
    """One optimisation step of the tokenizer (Run.train's `step`): phase 1 without quantisation;
    at phase1_steps the codebook is filled with encoder latents (not with --freeze-encoder, nor at
    step 0 of a run from --init-from, whose codebook comes with its weights), then dead codes are
    restarted every restart_every steps."""

    def __init__(self, run: Run, model_config: TokenizerConfig, bf16: bool):
        self.run, self.config, self.model, self.ema = run, run.config, run.model, run.ema
        self.scales = len(model_config.scale_sides)
        self.autocast = torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16)
        self.quantize = run.start_step >= self.config.phase1_steps
        self.trained = wrap(self.model, self.quantize, run.device, self.config.freeze_encoder)
        self.model.train()

    def _codebook(self, step: int, batch: dict) -> int:
        """Phase 2's start and the dead-code restarts; how many codes moved."""
        config = self.config
        if config.freeze_encoder:
            return 0  # the codebook stays as it is: the tokens must keep their meaning
        if step == config.phase1_steps:
            self.quantize = True
            self.trained = wrap(self.model, True, self.run.device)
            if step == 0 and config.init_from:
                # Quantised from the first step of a run that starts from trained weights: the codebook
                # comes with them (refilling it from one batch's latents would throw it away).
                log.info("step 0: quantisation on; codebook as --init-from has it")
                return 0
            restarted = restart_codes(self.model, self.ema, batch, config.restart_threshold, everything=True)
            log.info("step %d: phase 2, quantisation on; codebook filled with encoder latents", step)
            return restarted
        if self.quantize and config.restart_every and (step - config.phase1_steps) % config.restart_every == 0:
            return restart_codes(self.model, self.ema, batch, config.restart_threshold)
        return 0

    def __call__(self, step: int, batch: dict) -> StepLog:
        config, model, run = self.config, self.model, self.run
        restarted = self._codebook(step, batch)
        scales = None
        if self.quantize and config.prefix_share > 0:
            S = self.scales
            scales = torch.where(torch.rand(len(batch["points"])) < config.prefix_share,
                                 torch.randint(1, S, (len(batch["points"]),)), S)
        noise = None
        if self.quantize and config.token_noise > 0:
            noise = torch.rand(len(batch["points"])) * config.token_noise
        with self.autocast:
            result = self.trained(batch["points"], batch["normals"], batch["queries"], quantize=self.quantize,
                                  scales_B=scales, token_noise_B=noise)
        occupancy = F.binary_cross_entropy_with_logits(result["logits"].float(), batch["occupancy"])
        loss = (config.occupancy_weight * occupancy + config.codebook_weight * result["codebook"]
                + kl_factor(step, config) * config.kl_weight * result["kl"])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        self.ema.update_parameters(model)

        def logged():
            scalars = {"loss/total": loss.item(), "loss/occupancy": occupancy.item(),
                       "loss/codebook": result["codebook"].item(), "loss/kl": result["kl"].item(),
                       "train/grad_norm": grad_norm.item(), "train/lr": run.scheduler.get_last_lr()[0],
                       "codebook/live_codes": int((model.quantizer.usage >= config.restart_threshold).sum()),
                       "codebook/restarted": restarted,
                       **{f"latent/{k}": result[k].item() for k in ("mu_spread", "sigma") if k in result}}
            return scalars, {"loss": f"{scalars['loss/total']:.4f}", "phase": 2 if self.quantize else 1}

        return logged, bool(restarted)


def build_model(config: TrainConfig, model_config: TokenizerConfig, resuming: bool) -> VAT:
    """A new tokenizer (seeded: the same weights on every rank), from --init-from's weights when given
    and not resuming; --freeze-encoder needs that source's encoder and codebook."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = VAT(model_config)
    if config.init_from and not resuming:
        init_weights(model, config.init_from, "tokenizer")
        try:
            source = VAT.from_pretrained(config.init_from) if config.freeze_encoder else None
        except VatError as exc:  # a folder whose config does not build a tokenizer: one line, no traceback
            raise SystemExit(f"--init-from {config.init_from}: {exc}") from None
        if source is not None and source.fingerprint() != model.fingerprint():
            raise SystemExit(f"--freeze-encoder: {config.init_from} has another encoder config or codebook than "
                             "this run (a frozen encoder must keep its tokens): use its preset and model overrides")
    return model


def validation(run: Run, shapes: ShapeSamples, val_shapes: ShapeSamples | None, bf16: bool):
    """Run.train's `validate`: the EMA model on the fresh queries of training shapes (fresh/, with
    --fresh-shapes) and on the validation shapes of --val-data (val/); None when there is neither."""
    config = run.config
    if val_shapes is None and not config.fresh_shapes:
        return None

    def validate(step: int) -> dict[str, float]:
        # Seconds of training (validation, checkpoints and start-up excluded), summed over resumes:
        # the x axis of learning curves against time.
        run.report(step, {"train_seconds": run.train_seconds}, "", prefix="time/")
        result, quantized = {}, quantized_at(config, step)
        if config.fresh_shapes:
            fresh = evaluate(run.ema.module, shapes, config.fresh_shapes, run.device, bf16, quantized)
            run.report(step, fresh, " fresh queries of training shapes (EMA)", prefix="fresh/")
            result.update({f"fresh_{k}": v for k, v in fresh.items()})
        if val_shapes is not None:
            held_out = evaluate(run.ema.module, val_shapes, config.val_shapes, run.device, bf16, quantized)
            run.report(step, held_out, " validation (EMA)", prefix="val/")
            result.update(held_out)
        return result

    return validate


def calibrate(run: Run, shapes: ShapeSamples, bf16: bool) -> None:
    """Fit the exported copy's surface levels (training keeps raw logits)."""
    config, ema = run.config, run.ema
    levels = calibrate_surface(ema.module, shapes, config.calibrate_shapes, run.device, bf16,
                               quantized=quantized_at(config, max(run.start_step, config.steps)))
    ema.module.config.surface = SurfaceLevels.fitted(levels, len(ema.module.config.scale_sides))
    log.info("surface levels fitted on %d training shapes: logit %s (per decoded prefix of scales)",
             min(config.calibrate_shapes, len(shapes)), " ".join(f"{v:.2f}" for v in levels))


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    run = Run(config, log, count_seconds=True)
    model_config = config.model_config()
    # A saved config in v1's flat form (fields added since take their defaults) or the typed one.
    run.check_saved({"model_config": model_config.to_dict()},
                    upgrade={"model_config": lambda saved: TokenizerConfig.from_dict(saved).to_dict()})
    model = build_model(config, model_config, run.resuming).to(run.device)
    if config.freeze_encoder:  # before the optimizer, which takes the trainable parameters only
        wrap(model, True, run.device, freeze_encoder=True)
    start_step = run.start(model)

    shapes = ShapeSamples(config.data, model_config.num_points, config.uniform_queries, config.near_queries,
                          limit=config.max_shapes, reserve=0.1 if config.fresh_shapes else 0.0,
                          exclude=data.in_validation if config.hold_out_validation else None, augment=config.augment)
    val_shapes = ShapeSamples(config.val_data, model_config.num_points, 0, 0) if config.val_data else None
    loader = run.loader(shapes)
    log.info("%d training shapes, %d ranks x %d per step, %.2fM parameters, device %s",
             len(shapes), run.world, config.batch_size, sum(p.numel() for p in model.parameters()) / 1e6, run.device)
    bf16 = uses_bf16(config.precision, run.device)
    if bf16 and run.device.type == "cpu":  # oneDNN's fast bf16 3D convolutions are channels-last
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                module.to(memory_format=torch.channels_last_3d)
    steps = TokenizerSteps(run, model_config, bf16)
    val_result, digests = run.train(loader, steps, validation(run, shapes, val_shapes, bf16), config.snapshot_every)
    if config.calibrate_shapes:
        calibrate(run, shapes, bf16)
    run.export("the EMA model", run.ema.module)
    del steps, loader  # before finish: see there
    run.finish()
    return {"start_step": start_step, "step": max(start_step, config.steps), "val": val_result,
            "replica_digests": digests, "train_shapes": len(shapes)}


if __name__ == "__main__":
    main()
