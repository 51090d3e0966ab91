"""Stage-1 data: shards of train/prepare_data.py as the tokenizer's training draws, and a shape as scored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from vat import data
from vat.geometry.sampling import semi_continuous_occupancy


def stored_sample_config(directory: str | os.PathLike, key: str):
    """A field of the sampling config every shard manifest under `directory` agrees on: e.g. how many of
    each shape's queries are uniform (`uniform_queries`: they come first) and the cube they fill (`bound`)."""
    values = {json.loads(p.read_text())["sample_config"][key] for p in Path(directory).rglob("manifest-*.json")}
    if len(values) != 1:
        raise SystemExit(f"{directory}: expected manifests of train/prepare_data.py agreeing on {key}, "
                         f"found {sorted(values) or 'none'}")
    return values.pop()


def stored_uniform_queries(directory: str | os.PathLike) -> int:
    """How many of each shape's queries are uniform (they come first); from the shard manifests."""
    return stored_sample_config(directory, "uniform_queries")


class Augmentation:
    """Shape augmentation on the fly: a shape's stored samples scaled per axis and mirrored as
    vat.data.augmentation_draw draws (the offline augmented copies' distribution), then framed again
    as vat.geometry.io.normalize_mesh frames a mesh (bounding box centred, longest side as before).
    Occupancy does not change under the map; the semi-continuous labels are made again from the
    stored signed distances times the map's mean scale. The moved uniform queries fill only part of
    the cube [-bound, bound]^3: the rest of the cube gets fresh uniform queries, labelled empty (they
    lie outside the moved cube, which holds the whole shape), in proportion to its volume."""

    def __init__(self, bound: float):
        self.bound = bound

    def __call__(self, item: dict, surface: np.ndarray, uniform_pool: int, near: np.ndarray, uniform: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
        scale, mirror = data.augmentation_draw(rng)
        linear = scale * np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
        stored = item["surface_points"].astype(np.float64)
        lo, hi = stored.min(0), stored.max(0)
        factor = (hi - lo).max() / ((hi - lo) * scale).max()  # the longest side stays as long as it was
        gain = factor * linear
        shift = (lo + hi) / 2 * (1 - gain)  # and the bounding box's centre where it was
        sdf_gain = factor * float(np.prod(scale)) ** (1 / 3)  # distances grow by about the map's mean scale

        def move(points: np.ndarray) -> np.ndarray:
            return (points.astype(np.float64) * gain + shift).astype(np.float32)

        def labels(indices: np.ndarray) -> np.ndarray:
            return semi_continuous_occupancy(item["query_sdf"][indices].astype(np.float64) * sdf_gain)

        normals = item["surface_normals"][surface].astype(np.float64) / linear
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        keep, fresh = self._uniform(move(item["query_points"][:uniform_pool]), gain, shift, uniform, rng)
        return {
            "points": move(item["surface_points"][surface]),
            "normals": normals.astype(np.float32),
            "queries": np.concatenate([move(item["query_points"][keep]), fresh, move(item["query_points"][near])]),
            "occupancy": np.concatenate([labels(keep), np.zeros(len(fresh), np.float32), labels(near)]),
        }

    def _uniform(self, moved: np.ndarray, gain: np.ndarray, shift: np.ndarray, count: int, rng):
        """`count` queries uniform in the cube: the indices of moved stored ones inside it, and fresh
        points of the cube outside the moved cube (empty space), each in proportion to its volume."""
        b = self.bound
        lo, hi = shift - b * np.abs(gain), shift + b * np.abs(gain)  # the moved cube
        covered = float(np.prod(np.clip(np.minimum(hi, b) - np.maximum(lo, -b), 0, None)) / (2 * b) ** 3)
        inside = np.flatnonzero(np.all(np.abs(moved) <= b, axis=1))
        wanted = rng.binomial(count, min(covered, 1.0))
        fresh = np.empty((0, 3), np.float32)
        for _ in range(64):  # rejection sampling; should a thin outside region give too few, stored ones fill up
            if len(fresh) >= count - wanted:
                break
            draw = rng.uniform(-b, b, (2 * count, 3)).astype(np.float32)
            fresh = np.concatenate([fresh, draw[np.any((draw < lo) | (draw > hi), axis=1)]])
        fresh = fresh[: count - wanted]
        keep = rng.choice(inside, count - len(fresh), replace=len(inside) < count - len(fresh))
        return keep, fresh


class ShapeSamples(torch.utils.data.Dataset):
    """Shard items as tensors: a random subset of the surface points and of the uniform and
    near-surface queries, drawn with the seed that comes with the index (so runs reproduce).
    `limit` keeps the first N shapes; `reserve` keeps that share of each shape's uniform and of its
    near-surface queries (the last ones stored) out of the draws, for `fresh_queries`; `exclude` is a
    predicate on shape ids whose shapes are left out (vat.data.in_validation: the validation split);
    `augment` scales and mirrors every draw (Augmentation); scoring (`scoring_tensors`) never does."""

    def __init__(self, directory: str | os.PathLike, num_points: int, uniform_queries: int, near_queries: int,
                 limit: int = 0, reserve: float = 0.0, exclude=None, augment: bool = False):
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
        self.augment = Augmentation(stored_sample_config(directory, "bound")) if augment else None

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
        if self.augment is not None:
            near = self.stored_uniform + rng.choice(self.pool_near, self.near_queries, replace=False)
            arrays = self.augment(item, surface, self.pool_uniform, near, self.uniform_queries, rng)
            return {key: torch.from_numpy(value) for key, value in arrays.items()}
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
