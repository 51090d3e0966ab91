"""Stage-1 data: shards of train/prepare_data.py as the tokenizer's training draws, and a shape as scored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from vat import data


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
    near-surface queries (the last ones stored) out of the draws, for `fresh_queries`; `exclude` is a
    predicate on shape ids whose shapes are left out (vat.data.in_validation: the validation split)."""

    def __init__(self, directory: str | os.PathLike, num_points: int, uniform_queries: int, near_queries: int,
                 limit: int = 0, reserve: float = 0.0, exclude=None):
        self.shards = data.ShardDataset(directory, exclude)
        if len(self.shards) == 0:
            raise SystemExit(f"{directory} holds no prepared shapes"
                             + (" outside the validation split" if exclude is not None else ""))
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

    @property
    def records(self) -> list[dict]:
        """Each shape's metadata (id, source, caption, ...), in item order."""
        return self.shards.records[: self.length]

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
