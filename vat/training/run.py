"""One training run, the same for both stages: the run folder and logging, resuming from OUT/checkpoint.pt
(refused when the saved model configs differ), the EMA, AdamW and the schedule, the step loop with its
progress bar, log lines, TensorBoard scalars, validation and atomic checkpoints, and the export of the
EMA model. The stage supplies its model, its data and what one step does (see Run.train)."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vat import data
from vat.models.checkpoint import part_files
from vat.training.distributed import replica_digests, setup_distributed, step_seed
from vat.training.schedule import ShardBatches, lr_factor, make_optimizer, source_repeats

CHECKPOINT = "checkpoint.pt"
FINAL = "final"
SNAPSHOTS = "snapshots"

# What a step hands back: a function that gives its TensorBoard scalars and progress-bar fields (called
# only when the step is logged: reading values back syncs the device), and whether to log it anyway.
StepLog = tuple[Callable[[], tuple[dict[str, float], dict[str, str]]], bool]


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


def init_weights(model: nn.Module, directory: str | os.PathLike, name: str) -> None:
    """Start a new run from the weights of an earlier one (DIR/NAME.safetensors, e.g. a run's final/):
    tensors of the same name and shape are copied; the rest (new modules, changed sizes) keep their
    initialisation. Nothing shared is an error: the folder is not a checkpoint of this model."""
    from safetensors.torch import load_file

    path = Path(directory) / part_files(name)[1]
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


def report(log: logging.Logger, writer, step: int, scalars: dict, what: str, prefix: str = "") -> None:
    """One log line and the TensorBoard scalars (under `prefix`) of a step."""
    log.info("step %d%s: %s", step, what, ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    if writer is not None:
        for key, value in scalars.items():
            writer.add_scalar(prefix + key, value, step)


def _same_json(value) -> object:
    return json.loads(json.dumps(value))  # tuples become lists, as in a file


class Run:
    """A run of config (a TrainConfig: out, device, seed, steps, batch_size, workers, ema_decay, the
    optimisation options, log_every, val_every, save_every). Use in this order: check_saved, start,
    loader, train, export, finish. `count_seconds` keeps the seconds of training (steps only, summed
    over resumes) in the checkpoint as `train_seconds`."""

    def __init__(self, config, log: logging.Logger, count_seconds: bool = False):
        self.config, self.log = config, log
        self.rank, self.world, self.device = setup_distributed(config.device)
        logging.basicConfig(level=logging.INFO if self.rank == 0 else logging.WARNING,
                            format=f"%(asctime)s %(levelname)s rank{self.rank} %(name)s: %(message)s")
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CHECKPOINT
        self.resume = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
        self.train_seconds = None
        if count_seconds:
            self.train_seconds = float(self.resume.get("train_seconds", 0.0)) if self.resume is not None else 0.0
        self.saved: dict[str, dict] = {}
        self.start_step, self.writer = 0, None
        self.model = self.ema = self.optimizer = self.scheduler = None

    @property
    def resuming(self) -> bool:
        return self.resume is not None

    def check_saved(self, configs: dict[str, dict], upgrade: dict[str, Callable[[dict], dict]] | None = None) -> None:
        """Keep `configs` ({"NAME_config": dict}) for the checkpoints, refuse a checkpoint saved with others
        (`upgrade[key]` first brings a saved one to this version, e.g. fields added since take their
        defaults; a TypeError or ValueError there means it cannot), and write OUT/train_config.json ({"train": ..., "NAME": ...})."""
        self.saved = configs
        where = self.out / CHECKPOINT
        for key, now in configs.items() if self.resume is not None else ():
            try:
                saved = (upgrade or {}).get(key, lambda c: c)(self.resume[key])
            except (TypeError, ValueError) as exc:  # a field this version does not know, or a bad value
                raise SystemExit(f"{where} holds a {key.split('_')[0]} config this version cannot read ({exc}); "
                                 "use another --out or the version that wrote it") from exc
            saved, now = _same_json(saved), _same_json(now)
            if saved != now:
                changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise SystemExit(f"{where} was trained with other {key.split('_')[0]} settings ({', '.join(changed)}); "
                                 "use another --out or the same settings")
        if self.rank == 0:
            text = json.dumps({"train": asdict(self.config), **{k.removesuffix("_config"): v for k, v in configs.items()}},
                              indent=2) + "\n"
            data.write_atomic(self.out / "train_config.json", lambda f: f.write(text.encode()))

    def start(self, model: nn.Module) -> int:
        """The EMA of `model`, AdamW over its trainable parameters and the schedule, all restored from
        the checkpoint when resuming; returns the step to go on from (0 without a checkpoint)."""
        config = self.config
        self.model = model
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        self.optimizer = make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        if self.resume is not None:
            for name in ("model", "ema", "optimizer", "scheduler"):
                getattr(self, name).load_state_dict(self.resume[name])
            self.start_step = self.resume["step"]
            logging.getLogger(__name__).info("resumed from %s at step %d", self.out / CHECKPOINT, self.start_step)
        self.resume = None
        return self.start_step

    def loader(self, shapes) -> torch.utils.data.DataLoader:
        """This rank's endless batches of `shapes` from the start step on (ShardBatches), the shapes of
        config.source_weights' sources repeated (`shapes.records`: each shape's metadata)."""
        config = self.config
        repeats = None
        if config.source_weights:
            repeats = source_repeats(shapes.records, config.source_weights)
            weighted = {source: int(sum(r.get("source") == source for r in shapes.records))
                        for source in config.source_weights}
            self.log.info("source weights %s: %s shapes of those sources, %d draws per pass over %d shapes",
                          config.source_weights, weighted, int(repeats.sum()), len(repeats))
        sampler = ShardBatches(shapes, config.batch_size, self.rank, self.world, config.seed, self.start_step, repeats)
        return torch.utils.data.DataLoader(shapes, batch_sampler=sampler, num_workers=config.workers,
                                           pin_memory=self.device.type == "cuda", persistent_workers=config.workers > 0)

    def report(self, step: int, scalars: dict, what: str, prefix: str = "") -> None:
        report(self.log, self.writer, step, scalars, what, prefix)

    def checkpoint(self, step: int) -> list[str]:
        """Check that the replicas agree; rank 0 writes OUT/checkpoint.pt (atomically). The digests."""
        digests = replica_digests(step, self.model, self.ema)
        if self.rank == 0:
            state = {"step": step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     **self.saved, "train_config": asdict(self.config), "replica_digests": digests}
            if self.train_seconds is not None:
                state["train_seconds"] = self.train_seconds
            save_atomic(state, self.out / CHECKPOINT)
        return digests

    def train(self, loader, step: Callable[[int, dict], StepLog], validate: Callable[[int], dict] | None = None,
              snapshot_every: int = 0) -> tuple[dict, list[str]]:
        """Steps from the start step to config.steps: each seeded by (seed, rank, step), so a resumed
        run replays the same noise, its batch moved to the device and handed to step(step, batch).
        Logs every log_every steps (or when the step asks), validates (with `validate`) every val_every
        and at the end, checkpoints every save_every and at the end, keeps the EMA model in
        OUT/snapshots every snapshot_every. With nothing left to train it still checkpoints (checking
        the replicas) and validates. Returns the last validation and the replica digests."""
        config = self.config
        self.writer = self._tensorboard_writer()
        val_result, digests = {}, []
        batches = iter(loader)
        interval_seconds, interval_steps = 0.0, 0
        with tqdm(total=config.steps, initial=self.start_step, disable=self.rank != 0, unit="step", mininterval=2) \
                as bar, logging_redirect_tqdm():
            for index in range(self.start_step, config.steps):
                step_start = time.perf_counter()
                torch.manual_seed(step_seed(config.seed, self.rank, index))  # resuming replays the same noise
                batch = {k: v.to(self.device, non_blocking=True) for k, v in next(batches).items()}
                logged, log_anyway = step(index, batch)
                bar.update()
                seconds = time.perf_counter() - step_start
                if self.train_seconds is not None:
                    self.train_seconds += seconds
                interval_seconds, interval_steps = interval_seconds + seconds, interval_steps + 1
                done = index + 1
                if self.writer is not None and (done % config.log_every == 0 or log_anyway):  # rank 0's batch
                    scalars, postfix = logged()
                    self.report(done, {**scalars, "time/step_seconds": interval_seconds / interval_steps}, "")
                    bar.set_postfix(**postfix)
                    interval_seconds, interval_steps = 0.0, 0
                if validate is not None and (done % config.val_every == 0 or done == config.steps):
                    val_result = validate(done)
                if done % config.save_every == 0 or done == config.steps:
                    digests = self.checkpoint(done)
                if self.rank == 0 and snapshot_every and done % snapshot_every == 0:
                    export(self.out / SNAPSHOTS / f"step-{done:07d}", self.ema.module)
        if self.start_step >= config.steps:
            digests = self.checkpoint(self.start_step)  # nothing left to train: still check and report
            if validate is not None:
                val_result = validate(self.start_step)
        return val_result, digests

    def _tensorboard_writer(self):
        """Rank 0's TensorBoard writer in OUT/tb (events after the start step from an earlier run dropped)."""
        if self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(self.out / "tb", purge_step=self.start_step)

    def export(self, what: str, *models: nn.Module) -> None:
        """Rank 0 writes the models' save_pretrained into OUT/final."""
        if self.rank == 0:
            export(self.out / FINAL, *models)
            self.log.info("wrote %s to %s", what, self.out / FINAL)

    def finish(self) -> None:
        """Close the writer; under torchrun wait for every rank and take the process group down. The
        caller drops its DDP wrapper and loader first: the wrapper's reducer holds the process group,
        and gloo's threads can abort the process at exit ("terminate called without an active exception")."""
        if self.writer is not None:
            self.writer.close()
        if dist.is_initialized():
            dist.barrier()
            gc.collect()
            dist.destroy_process_group()
