"""Pieces both training scripts share: torchrun/DDP set-up, replica checks, deterministic per-step
seeds, the chunk-aware batch sampler, AdamW groups, warm-up + cosine, atomic checkpoint writes.

The scripts import it as `common` (train/ is on sys.path when they run, and they add it when
imported from elsewhere, as the tests do)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def parse_override(text: str) -> tuple[str, object]:
    """FIELD=VALUE of a --model-override; VALUE is JSON, or a bare word such as compression=pooling."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ---------------------------------------------------------------------------- distributed helpers


def setup_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


def rank_of_process() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_rows(x_NC: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, concatenated (all ranks pass the same shape)."""
    if not dist.is_initialized():
        return x_NC
    parts = [torch.empty_like(x_NC) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x_NC.contiguous())
    return torch.cat(parts)


def state_digest(*modules: nn.Module) -> str:
    """sha256 of the modules' state: replicas that trained in lockstep have equal digests."""
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replica_digests(step: int, *modules: nn.Module) -> list[str]:
    """Every rank's state_digest of the modules; raises if the replicas differ."""
    digest = state_digest(*modules)
    digests = [None] * world_size()
    if dist.is_initialized():
        dist.all_gather_object(digests, digest)
    else:
        digests = [digest]
    if len(set(digests)) != 1:
        raise RuntimeError(f"replicas diverged at step {step}: {digests}")
    return digests


def encoder_fingerprints(encoders) -> dict:
    """{"image"/"text": {"config": its config, "digest": state_digest}} of the encoders present in a
    ConditionEncoders (None: {}): features cached by train/prepare_generator_data.py are used in
    training only when they came from the very same frozen encoder."""
    if encoders is None:
        return {}
    return {name: {"config": dataclasses.asdict(encoder.config), "digest": state_digest(encoder)}
            for name, encoder in (("image", encoders.image), ("text", encoders.text)) if encoder is not None}


def step_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


# ---------------------------------------------------------------------------- data order


class ShardBatches(torch.utils.data.Sampler):
    """One rank's endless batches from `start_step` on. Each epoch visits the chunks in a shuffled
    order and their rows shuffled (shard datasets keep one chunk in memory), every rank taking every
    world-th item. Each element is (item index, seed of its random choices), all derived from
    (seed, epoch, step), so a resumed run sees what an uninterrupted one would.
    `shards.chunk_of_items()`: [items] the chunk each item lies in, items listed chunk by chunk."""

    def __init__(self, shards, batch_size: int, rank: int, world: int, seed: int, start_step: int):
        chunk_of_item = shards.chunk_of_items()
        self.items_of_chunk = np.split(np.arange(len(chunk_of_item)), np.flatnonzero(np.diff(chunk_of_item)) + 1)
        self.batch_size, self.rank, self.world, self.seed, self.start_step = batch_size, rank, world, seed, start_step
        # Equal epoch lengths on all ranks keep them in the same chunks (with fewer items than
        # ranks, every rank sees all of them, with different random choices).
        self.epoch_length = len(chunk_of_item) // world or len(chunk_of_item)

    def _epoch(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = np.concatenate([rng.permutation(self.items_of_chunk[c]) for c in rng.permutation(len(self.items_of_chunk))])
        if len(order) < self.world:
            return order
        return order[self.rank::self.world][: self.epoch_length]

    def __iter__(self):
        step = self.start_step
        epoch, offset = divmod(step * self.batch_size, self.epoch_length)
        order = self._epoch(epoch)
        while True:
            batch = []
            while len(batch) < self.batch_size:
                take = order[offset: offset + self.batch_size - len(batch)]
                batch.extend(take.tolist())
                offset += len(take)
                if offset == len(order):
                    epoch, offset = epoch + 1, 0
                    order = self._epoch(epoch)
            yield [(index, (self.seed, self.rank, step, k)) for k, index in enumerate(batch)]
            step += 1


# ---------------------------------------------------------------------------- optimisation


def make_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (config: lr, betas, weight_decay); weight decay on the
    weights of linear and convolution layers only (not on norms, biases, embeddings, learned token
    sets or codebooks, which decay would pull towards zero)."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": config.weight_decay},
              {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


PRECISIONS = ("auto", "bf16", "fp32")


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run autocasts to bfloat16: "bf16", or "auto" on CUDA and on CPUs with native bf16
    (oneDNN says so; with AMX, large bf16 matrix products are many times faster than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and (
        device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())))


def lr_factor(step: int, config) -> float:
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio at the last step
    (config: warmup_steps, steps, min_lr_ratio)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------- files


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(directory: Path, *models: nn.Module) -> None:
    """Each model's save_pretrained (float32) into `directory`, replacing it only once complete."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for model in models:
        model.save_pretrained(tmp, dtype=torch.float32)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


# ---------------------------------------------------------------------------- the run's scaffolding


def config_from_args(parser: argparse.ArgumentParser, argv: list[str] | None, config_cls, required: tuple[str, ...],
                     check=None):
    """The run's config: the dataclass defaults, then --config JSON, then the command line (the
    parser's defaults must be SUPPRESS); --model-override entries merge into the JSON's. Missing
    `required` options and invalid values end in parser.error (one line, no traceback)."""
    args = vars(parser.parse_args(argv))
    options = json.loads(args.pop("config").read_text()) if "config" in args else {}
    if "model_overrides" in args:
        options["model_overrides"] = {**options.get("model_overrides", {}), **dict(args.pop("model_overrides"))}
    options.update(args)
    missing = [name for name in required if name not in options]
    if missing:
        parser.error("missing " + ", ".join("--" + m for m in missing))
    try:
        config = config_cls(**options)
        if check is not None:
            check(config)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return config


def start_run(config) -> tuple[int, int, torch.device, Path]:
    """(rank, world size, device, run folder): the process group, logging (rank 0 at INFO) and OUT."""
    rank, world, device = setup_distributed(config.device)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    return rank, world, device, out


def restore(resume: dict | None, model: nn.Module, ema: nn.Module, optimizer, scheduler, where: Path) -> int:
    """Load a checkpoint's model, EMA, optimiser and schedule; the step to go on from (0 without one)."""
    if resume is None:
        return 0
    model.load_state_dict(resume["model"])
    ema.load_state_dict(resume["ema"])
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    logging.getLogger(__name__).info("resumed from %s at step %d", where, resume["step"])
    return resume["step"]


def init_weights(model: nn.Module, directory: str | os.PathLike, name: str) -> None:
    """Start a new run from the weights of an earlier one (DIR/NAME.safetensors, e.g. a run's final/):
    tensors of the same name and shape are copied; the rest (new modules, changed sizes) keep their
    initialisation. Nothing shared is an error: the folder is not a checkpoint of this model."""
    from safetensors.torch import load_file

    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise SystemExit(f"--init-from {directory}: no {path.name} there")
    try:
        source = load_file(path)
    except Exception as exc:  # safetensors raises several types for a cut-off or foreign file
        raise SystemExit(f"--init-from {path}: not a readable safetensors file ({exc})") from None
    target = model.state_dict()
    shared = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    if not shared:
        raise SystemExit(f"--init-from {path}: no tensor matches this model by name and shape")
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in shared.items()}, strict=False)
    fresh = sorted(k for k in target if k not in shared)
    logging.getLogger(__name__).info("initialised %d of %d tensors from %s%s", len(shared), len(target), path,
                                     f"; new: {', '.join(fresh)}" if fresh else "")


def tensorboard_writer(out: Path, rank: int, start_step: int):
    """Rank 0's TensorBoard writer in OUT/tb (events after start_step from an earlier run dropped)."""
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(out / "tb", purge_step=start_step)


def report(log: logging.Logger, writer, step: int, scalars: dict, what: str, prefix: str = "") -> None:
    """One log line and the TensorBoard scalars (under `prefix`) of a step."""
    log.info("step %d%s: %s", step, what, ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    if writer is not None:
        for key, value in scalars.items():
            writer.add_scalar(prefix + key, value, step)


def finish_run(writer) -> None:
    """Close the writer; under torchrun wait for every rank and take the process group down. The
    caller drops its DDP wrapper and loader first: the wrapper's reducer holds the process group,
    and gloo's threads can abort the process at exit ("terminate called without an active exception")."""
    if writer is not None:
        writer.close()
    if dist.is_initialized():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()


# Options both scripts have (TrainConfig fields of the same name and meaning).
COMMON_OPTIMISATION = (
    ("steps", int, "total steps"), ("batch_size", int, "shapes per rank and step"),
    ("lr", float, "peak learning rate"), ("min_lr_ratio", float, "final lr / peak lr"),
    ("warmup_steps", int, "linear warm-up steps"), ("weight_decay", float, "AdamW weight decay"),
    ("grad_clip", float, "max gradient norm"), ("ema_decay", float, "EMA decay of the weights"),
)
COMMON_RUN = (
    ("val_every", int, "validate every N steps"), ("val_shapes", int, "at most N validation shapes"),
    ("save_every", int, "checkpoint every N steps"), ("log_every", int, "log every N steps"),
    ("workers", int, "data loader processes per rank"), ("seed", int, "seed of everything"),
)


def add_options(group, specs) -> None:
    """--some-field options (type, help) for TrainConfig fields, from (field, type, help) triples."""
    for name, kind, text in specs:
        group.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


def training_parser(description: str, folders: tuple[tuple[str, str], ...], presets, model_class: str):
    """The parser both training scripts start from: --config, the data folders, --out, and the groups
    model (--preset, --model-override), optimisation and run with the options they share. Defaults
    are SUPPRESS: the TrainConfig's own defaults apply (see config_from_args)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (the command line wins)")
    for flag, text in folders:
        p.add_argument(flag, help=text)
    p.add_argument("--out", help="run folder (resumed when it holds a checkpoint)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(presets))
    model.add_argument("--model-override", dest="model_overrides", type=parse_override, action="append",
                       metavar="FIELD=VALUE", help=f"replace a {model_class} field, e.g. depth=4 (repeatable)")
    optim = p.add_argument_group("optimisation")
    add_options(optim, COMMON_OPTIMISATION)
    run = p.add_argument_group("run")
    add_options(run, COMMON_RUN)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"))
    return p, model, optim, run
