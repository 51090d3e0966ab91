r"""Stage 1: train the VAT tokenizer on shards written by train/prepare_data.py.

    python train/train_tokenizer.py --data /data/vat/train --val-data /data/vat/heldout --out runs/tiny \
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

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
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

from vat import data, metrics
from vat.errors import VatError
from vat.models.tokenizer import PRESETS, VAT, TokenizerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train/common.py, also when imported from elsewhere
from common import (PRECISIONS, ShardBatches, add_options, config_from_args, export, finish_run,  # noqa: E402
                    gather_rows, init_weights, lr_factor, make_optimizer, rank_of_process, replica_digests, report, restore,
                    save_atomic, start_run, step_seed, tensorboard_writer, training_parser, uses_bf16)

log = logging.getLogger("train_tokenizer")

CHECKPOINT = "checkpoint.pt"
FINAL = "final"
SNAPSHOTS = "snapshots"


@dataclass
class TrainConfig:
    """Every option of a run; saved as OUT/train_config.json (with the model config)."""

    data: str  # shard folder (train/prepare_data.py --out)
    out: str  # run folder: checkpoint, tb/, final/
    val_data: str | None = None  # held-out shard folder for IoU / accuracy
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
    fresh_shapes: int = 0  # if N > 0: keep 10% of every shape's queries out of training and score the first N
    # training shapes on them at each validation (how well the field interpolates between its samples)

    def __post_init__(self):
        self.betas = tuple(self.betas)
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

    def model_config(self) -> TokenizerConfig:
        overrides = dict(self.model_overrides)
        if "num_latents" in overrides:  # the preset's scale schedule was made for its own K
            overrides.setdefault("scale_sides", ())
        return replace(PRESETS[self.preset], **overrides)


# ---------------------------------------------------------------------------- configuration


def parse_args(argv: list[str] | None) -> TrainConfig:
    p, _, optim, _ = training_parser(__doc__, (("--data", "training shard folder"),
                                               ("--val-data", "held-out shard folder for validation")),
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
    ))
    optim.add_argument("--freeze-encoder", action="store_true",
                       help="train the decoder only; tokens (and a generator trained on them) stay valid")
    return config_from_args(p, argv, TrainConfig, ("data", "out"), check=TrainConfig.model_config)


# ---------------------------------------------------------------------------- data


def stored_uniform_queries(directory: str | os.PathLike) -> int:
    """How many of each shape's queries are uniform (they come first); from the shard manifests."""
    counts = {json.loads(p.read_text())["sample_config"]["uniform_queries"]
              for p in Path(directory).rglob("manifest-*.json")}
    if len(counts) != 1:
        raise SystemExit(f"{directory}: expected manifests of train/prepare_data.py agreeing on uniform_queries, "
                         f"found {sorted(counts) or 'none'}")
    return counts.pop()


class ShapeSamples(torch.utils.data.Dataset):
    """Shard items as tensors: a random subset of the surface points and of the uniform and
    near-surface queries, drawn with the seed that comes with the index (so runs reproduce).
    `limit` keeps the first N shapes; `reserve` keeps that share of each shape's uniform and of its
    near-surface queries (the last ones stored) out of the draws, for `fresh_queries`."""

    def __init__(self, directory: str | os.PathLike, num_points: int, uniform_queries: int, near_queries: int,
                 limit: int = 0, reserve: float = 0.0):
        self.shards = data.ShardDataset(directory)
        if len(self.shards) == 0:
            raise SystemExit(f"{directory} holds no prepared shapes")
        self.length = min(limit, len(self.shards)) if limit > 0 else len(self.shards)
        self.stored_uniform = stored_uniform_queries(directory)
        first = self.shards[0]
        self.stored_near = len(first["query_points"]) - self.stored_uniform
        self.pool_uniform = self.stored_uniform - int(self.stored_uniform * reserve)
        self.pool_near = self.stored_near - int(self.stored_near * reserve)
        for want, have, what in ((num_points, len(first["surface_points"]), "surface points (model num_points)"),
                                 (uniform_queries, self.pool_uniform, "uniform queries"),
                                 (near_queries, self.pool_near, "near-surface queries")):
            if want > have:
                raise SystemExit(f"{directory}: asked for {want} {what} per shape, the shards hold {have}"
                                 + (" after the reserved share" if reserve else ""))
        self.num_points, self.uniform_queries, self.near_queries = num_points, uniform_queries, near_queries

    def __len__(self) -> int:
        return self.length

    def chunk_of_items(self) -> np.ndarray:
        return self.shards.chunk_of_items()[: self.length]

    def fresh_queries(self) -> np.ndarray:
        """Indices of the stored queries kept out of training (all of them when none are reserved)."""
        if self.pool_uniform == self.stored_uniform and self.pool_near == self.stored_near:
            return np.arange(self.stored_uniform + self.stored_near)
        return np.concatenate([np.arange(self.pool_uniform, self.stored_uniform),
                               np.arange(self.stored_uniform + self.pool_near, self.stored_uniform + self.stored_near)])

    def __getitem__(self, key: tuple[int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        index, entropy = key
        item = self.shards[index]
        rng = np.random.default_rng(entropy)
        surface = rng.choice(len(item["surface_points"]), self.num_points, replace=False)
        queries = np.concatenate([rng.choice(self.pool_uniform, self.uniform_queries, replace=False),
                                  self.stored_uniform + rng.choice(self.pool_near, self.near_queries, replace=False)])
        return {
            "points": torch.from_numpy(item["surface_points"][surface].astype(np.float32)),
            "normals": torch.from_numpy(item["surface_normals"][surface].astype(np.float32)),
            "queries": torch.from_numpy(item["query_points"][queries].astype(np.float32)),
            "occupancy": torch.from_numpy(item["query_occupancy"][queries].astype(np.float32)),
        }


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


def scoring_tensors(shapes: ShapeSamples, index: int, fresh: np.ndarray, device: torch.device):
    """Shape `index` as scored: its surface points (a fixed draw per shape) and normals [1, N, 3], the
    `fresh` queries [1, Q, 3] and their semi-continuous labels [Q]."""
    item = shapes.shards[index]
    surface = np.random.default_rng(index).choice(len(item["surface_points"]), shapes.num_points, replace=False)
    points = torch.from_numpy(item["surface_points"][surface].astype(np.float32))[None].to(device)
    normals = torch.from_numpy(item["surface_normals"][surface].astype(np.float32))[None].to(device)
    queries = torch.from_numpy(item["query_points"][fresh])[None].to(device)
    labels = torch.from_numpy(item["query_occupancy"][fresh].astype(np.float32)).to(device)
    return points, normals, queries, labels


@torch.no_grad()
def evaluate(model: VAT, shapes: ShapeSamples, max_shapes: int, device: torch.device, bf16: bool = False,
             quantized: bool = True) -> dict[str, float]:
    """IoU and accuracy (vat.metrics) over each shape's fresh queries (all stored ones of a held-out
    set), inside = occupancy > 0.5, predicted inside = logit > 0, and the threshold-free BCE against
    the semi-continuous labels; without quantisation and, if `quantized` (phase 2: the codebook is
    trained), with it, then also CS-IoU (the mean IoU decoded from the first s scales over all s);
    averaged over shapes (and ranks)."""
    rank, world = rank_of_process(), dist.get_world_size() if dist.is_initialized() else 1
    was_training = model.training
    model.eval()
    sums = torch.zeros(8, dtype=torch.float64)
    fresh = shapes.fresh_queries()
    for index in range(rank, min(max_shapes, len(shapes)), world):
        points, normals, queries, labels = scoring_tensors(shapes, index, fresh, device)
        inside = labels.cpu().numpy() > 0.5
        for offset, quantize in ((0, True), (3, False)) if quantized else ((3, False),):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                result = model(points, normals, queries, quantize=quantize)
            logits = result["logits"][0].float()
            pred = (logits > 0).cpu().numpy()
            sums[offset] += metrics.iou(pred, inside)
            sums[offset + 1] += metrics.accuracy(pred, inside)
            sums[offset + 2] += F.binary_cross_entropy_with_logits(logits, labels).item()
            if quantize:  # CS-IoU: the prefixes of this pass's tokens (eval mode: the latent means, as encode)
                indices, full_iou = result["indices"], metrics.iou(pred, inside)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    ious = [metrics.iou((model.field.query(model.decode_indices(indices[:s]), queries)[0] > 0)
                                        .cpu().numpy(), inside) for s in range(1, len(indices))]
                sums[6] += metrics.cs_iou([*ious, full_iou])
        sums[7] += 1
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was_training)
    n = max(1.0, float(sums[7]))
    keys = ("iou", "acc", "bce", "iou_unquantized", "acc_unquantized", "bce_unquantized", "cs_iou")
    return {key: float(sums[i]) / n for i, key in enumerate(keys) if quantized or 3 <= i < 6}


@torch.no_grad()
def calibrate_surface(model: VAT, shapes: ShapeSamples, max_shapes: int, device: torch.device, bf16: bool,
                      quantized: bool) -> list[float]:
    """The logit levels whose sign gives the best mean IoU over the fresh queries (all stored ones when
    none are reserved) of `max_shapes` training shapes spread evenly over the set: the surfaces the
    exported model extracts. Quantised: one level per decoded prefix (entry s - 1: the first s scales,
    the last: all of them); otherwise one level for the unquantised field. Fitted on training shapes
    only, never on held-out ones. Same on every rank."""
    was_training = model.training
    model.eval()
    levels = torch.arange(-3.0, 3.0001, 0.05)
    fresh = shapes.fresh_queries()
    ious = []  # per shape: [prefixes, levels]
    for index in np.unique(np.linspace(0, len(shapes) - 1, min(max_shapes, len(shapes))).round().astype(int)):
        points, normals, queries, labels = scoring_tensors(shapes, int(index), fresh, device)
        inside = labels > 0.5
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if quantized:
                indices = model.encode(points, normals)
                logits = [model.field.query(model.decode_indices(indices[:s]), queries)[0].float()
                          for s in range(1, len(indices) + 1)]
            else:
                logits = [model(points, normals, queries, quantize=False)["logits"][0].float()]
        pred_PLQ = torch.stack(logits)[:, None] > levels.to(device)[None, :, None]
        intersection, union = (pred_PLQ & inside).sum(2), (pred_PLQ | inside).sum(2)
        ious.append(torch.where(union > 0, intersection / union.clamp(min=1), 1.0).cpu())
    model.train(was_training)
    if not ious:
        return [0.0]
    return [round(float(levels[i]), 4) for i in torch.stack(ious).mean(0).argmax(1)]  # float32 steps of 0.05


# ---------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    rank, world, device, out = start_run(config)
    model_config = config.model_config()

    resume = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True) if (out / CHECKPOINT).is_file() else None
    train_seconds = float(resume.get("train_seconds", 0.0)) if resume is not None else 0.0
    if resume is not None:  # fields added since the checkpoint was written count as their defaults
        resume["model_config"] = {**{f.name: f.default for f in fields(TokenizerConfig)}, **resume["model_config"]}
    if resume is not None and resume["model_config"] != model_config.to_dict():
        changed = sorted(k for k, v in model_config.to_dict().items() if resume["model_config"].get(k) != v)
        raise SystemExit(f"{out / CHECKPOINT} was trained with other model settings ({', '.join(changed)}); "
                         "use another --out or the same settings")
    if rank == 0:
        text = json.dumps({"train": asdict(config), "model": model_config.to_dict()}, indent=2) + "\n"
        data.write_atomic(out / "train_config.json", lambda f: f.write(text.encode()))

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = VAT(model_config)
    if config.init_from and resume is None:
        init_weights(model, config.init_from, "tokenizer")
        try:
            source = VAT.from_pretrained(config.init_from) if config.freeze_encoder else None
        except VatError as exc:  # a folder whose config does not build a tokenizer: one line, no traceback
            raise SystemExit(f"--init-from {config.init_from}: {exc}") from None
        if source is not None and source.fingerprint() != model.fingerprint():
            raise SystemExit(f"--freeze-encoder: {config.init_from} has another encoder config or codebook than "
                             "this run (a frozen encoder must keep its tokens): use its preset and model overrides")
    model = model.to(device)
    if config.freeze_encoder:  # before the optimizer, which takes the trainable parameters only
        wrap(model, True, device, freeze_encoder=True)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    start_step = restore(resume, model, ema, optimizer, scheduler, out / CHECKPOINT)
    del resume

    shapes = ShapeSamples(config.data, model_config.num_points, config.uniform_queries, config.near_queries,
                          limit=config.max_shapes, reserve=0.1 if config.fresh_shapes else 0.0)
    val_shapes = ShapeSamples(config.val_data, model_config.num_points, 0, 0) if config.val_data else None
    sampler = ShardBatches(shapes, config.batch_size, rank, world, config.seed, start_step)
    loader = torch.utils.data.DataLoader(shapes, batch_sampler=sampler, num_workers=config.workers,
                                         pin_memory=device.type == "cuda", persistent_workers=config.workers > 0)
    log.info("%d training shapes, %d ranks x %d per step, %.2fM parameters, device %s",
             len(shapes), world, config.batch_size, sum(p.numel() for p in model.parameters()) / 1e6, device)

    writer = tensorboard_writer(out, rank, start_step)

    def checkpoint(step: int) -> list[str]:
        digests = replica_digests(step, model, ema)
        if rank == 0:
            save_atomic({"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "model_config": model_config.to_dict(), "train_config": asdict(config),
                         "replica_digests": digests, "train_seconds": train_seconds}, out / CHECKPOINT)
        return digests

    bf16 = uses_bf16(config.precision, device)

    def validate(step: int) -> dict[str, float]:
        # Seconds of training (validation, checkpoints and start-up excluded), summed over resumes:
        # the x axis of learning curves against time.
        report(log, writer, step, {"train_seconds": train_seconds}, "", prefix="time/")
        result, quantized = {}, step > config.phase1_steps
        if config.fresh_shapes:
            fresh = evaluate(ema.module, shapes, config.fresh_shapes, device, bf16, quantized)
            report(log, writer, step, fresh, " fresh queries of training shapes (EMA)", prefix="fresh/")
            result.update({f"fresh_{k}": v for k, v in fresh.items()})
        if val_shapes is not None:
            held_out = evaluate(ema.module, val_shapes, config.val_shapes, device, bf16, quantized)
            report(log, writer, step, held_out, " validation (EMA)", prefix="val/")
            result.update(held_out)
        return result

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    if bf16 and device.type == "cpu":  # oneDNN's fast bf16 3D convolutions are channels-last
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                module.to(memory_format=torch.channels_last_3d)
    quantize = start_step >= config.phase1_steps
    trained = wrap(model, quantize, device, config.freeze_encoder)
    model.train()
    val_result = {}
    step = start_step
    batches = iter(loader)
    interval_seconds, interval_steps = 0.0, 0
    with tqdm(total=config.steps, initial=start_step, disable=rank != 0, unit="step", mininterval=2) as bar, \
            logging_redirect_tqdm():
        for step in range(start_step, config.steps):
            step_start = time.perf_counter()
            torch.manual_seed(step_seed(config.seed, rank, step))  # resuming replays the same noise
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            restarted = 0
            if config.freeze_encoder:
                pass  # the codebook stays as it is: the tokens must keep their meaning
            elif step == config.phase1_steps:
                quantize = True
                trained = wrap(model, quantize, device)
                if step == 0 and config.init_from:
                    # Quantised from the first step of a run that starts from trained weights: the codebook
                    # comes with them (refilling it from one batch's latents would throw it away).
                    log.info("step 0: quantisation on; codebook as --init-from has it")
                else:
                    restarted = restart_codes(model, ema, batch, config.restart_threshold, everything=True)
                    log.info("step %d: phase 2, quantisation on; codebook filled with encoder latents", step)
            elif quantize and config.restart_every and (step - config.phase1_steps) % config.restart_every == 0:
                restarted = restart_codes(model, ema, batch, config.restart_threshold)
            scales = None
            if quantize and config.prefix_share > 0:
                S = len(model_config.scale_sides)
                scales = torch.where(torch.rand(len(batch["points"])) < config.prefix_share,
                                     torch.randint(1, S, (len(batch["points"]),)), S)

            with autocast:
                result = trained(batch["points"], batch["normals"], batch["queries"], quantize=quantize, scales_B=scales)
            occupancy = F.binary_cross_entropy_with_logits(result["logits"].float(), batch["occupancy"])
            loss = (config.occupancy_weight * occupancy + config.codebook_weight * result["codebook"]
                    + kl_factor(step, config) * config.kl_weight * result["kl"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            bar.update()
            step_seconds = time.perf_counter() - step_start
            train_seconds += step_seconds
            interval_seconds += step_seconds
            interval_steps += 1

            done = step + 1
            if writer is not None and (done % config.log_every == 0 or restarted):  # rank 0's batch
                scalars = {"loss/total": loss.item(), "loss/occupancy": occupancy.item(),
                           "loss/codebook": result["codebook"].item(), "loss/kl": result["kl"].item(),
                           "train/grad_norm": grad_norm.item(), "train/lr": scheduler.get_last_lr()[0],
                           "codebook/live_codes": int((model.quantizer.usage >= config.restart_threshold).sum()),
                           "codebook/restarted": restarted,
                           "time/step_seconds": interval_seconds / interval_steps}
                scalars.update({f"latent/{k}": result[k].item() for k in ("mu_spread", "sigma") if k in result})
                report(log, writer, done, scalars, "")
                bar.set_postfix(loss=f"{scalars['loss/total']:.4f}", phase=2 if quantize else 1)
                interval_seconds, interval_steps = 0.0, 0
            if (val_shapes is not None or config.fresh_shapes) and (done % config.val_every == 0 or done == config.steps):
                val_result = validate(done)
            if done % config.save_every == 0 or done == config.steps:
                digests = checkpoint(done)
            if rank == 0 and config.snapshot_every and done % config.snapshot_every == 0:
                export(out / SNAPSHOTS / f"step-{done:07d}", ema.module)

    if start_step >= config.steps:
        digests = checkpoint(start_step)  # nothing left to train: still check and report
        if val_shapes is not None or config.fresh_shapes:
            val_result = validate(start_step)
    if config.calibrate_shapes:
        levels = calibrate_surface(ema.module, shapes, config.calibrate_shapes, device, bf16,
                                   quantized=max(start_step, config.steps) > config.phase1_steps)
        # The exported copy only: training keeps raw logits.
        ema.module.config.surface_logit = levels[-1]
        ema.module.config.surface_logits = tuple(levels) if len(levels) > 1 else ()
        log.info("surface levels fitted on %d training shapes: logit %s (per decoded prefix of scales)",
                 min(config.calibrate_shapes, len(shapes)), " ".join(f"{v:.2f}" for v in levels))
    if rank == 0:
        export(out / FINAL, ema.module)
        log.info("wrote the EMA model to %s", out / FINAL)
    del trained, batches, loader  # before finish_run: see there
    finish_run(writer)
    return {"start_step": start_step, "step": max(start_step, config.steps), "val": val_result,
            "replica_digests": digests}


if __name__ == "__main__":
    main()
