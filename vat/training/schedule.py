"""What a step sees and how it updates: the chunk-aware batch order, AdamW groups, warm-up + cosine, bf16."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from vat.models.layers import fast_bf16


class ShardBatches(torch.utils.data.Sampler):
    """One rank's endless batches from `start_step` on. Each epoch visits the chunks in a shuffled
    order and their rows shuffled (shard datasets keep one chunk in memory), every rank taking every
    world-th item. Each element is (item index, seed of its random choices), all derived from
    (seed, epoch, step), so a resumed run sees what an uninterrupted one would.
    `shards.chunk_of_items()`: [items] the chunk each item lies in, items listed chunk by chunk.
    `repeats` ([items] whole numbers >= 1, see source_repeats): how often each item comes in an epoch."""

    def __init__(self, shards, batch_size: int, rank: int, world: int, seed: int, start_step: int,
                 repeats: np.ndarray | None = None):
        chunk_of_item = shards.chunk_of_items()
        items = np.arange(len(chunk_of_item))
        if repeats is not None:  # an item listed K times stays in its chunk, so chunk-by-chunk reading holds
            chunk_of_item, items = np.repeat(chunk_of_item, repeats), np.repeat(items, repeats)
        self.items_of_chunk = np.split(items, np.flatnonzero(np.diff(chunk_of_item)) + 1)
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


def source_repeats(records: list[dict], weights: dict[str, int]) -> np.ndarray:
    """[len(records)] how often each shape comes per pass: weights[its source], 1 for other sources.
    A weighted source that no record has is an error (a misspelt name would otherwise change nothing)."""
    sources = [r.get("source", "") for r in records]
    missing = sorted(set(weights) - set(sources))
    if missing:
        raise SystemExit(f"--source-weight names {', '.join(missing)}, which no training shape has "
                         f"(sources: {', '.join(sorted(set(sources)))})")
    return np.array([weights.get(s, 1) for s in sources], dtype=np.int64)


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
    return precision == "bf16" or (precision == "auto" and fast_bf16(device))


def lr_factor(step: int, config) -> float:
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio at the last step
    (config: warmup_steps, steps, min_lr_ratio)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
