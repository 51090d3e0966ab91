"""Analytic signed distance functions (negative inside) for tests and benchmarks: primitives,
min/max combinations, and the bench shape used to measure mesh extraction."""

from __future__ import annotations

from typing import Callable

import numpy as np

SDF = Callable[[np.ndarray], np.ndarray]  # points [N, 3] -> signed distance [N], negative inside


def sphere_sdf(center=(0.0, 0.0, 0.0), radius: float = 0.4) -> SDF:
    center = np.asarray(center, dtype=np.float32)
    return lambda points: np.linalg.norm(points - center, axis=1) - radius


def box_sdf(center=(0.0, 0.0, 0.0), half_extents=(0.3, 0.3, 0.3)) -> SDF:
    center = np.asarray(center, dtype=np.float32)
    half = np.asarray(half_extents, dtype=np.float32)

    def sdf(points: np.ndarray) -> np.ndarray:
        q = np.abs(points - center) - half
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return outside + inside

    return sdf


def torus_sdf(center=(0.0, 0.0, 0.0), major_radius: float = 0.3, minor_radius: float = 0.1) -> SDF:
    """A torus around the z axis through `center`."""
    center = np.asarray(center, dtype=np.float32)

    def sdf(points: np.ndarray) -> np.ndarray:
        p = points - center
        ring = np.hypot(p[:, 0], p[:, 1]) - major_radius
        return np.hypot(ring, p[:, 2]) - minor_radius

    return sdf


def union(*sdfs: SDF) -> SDF:
    return lambda points: np.minimum.reduce([sdf(points) for sdf in sdfs])


def subtract(sdf: SDF, cutter: SDF) -> SDF:
    return lambda points: np.maximum(sdf(points), -cutter(points))


def bench_shape_sdf() -> SDF:
    """A torus above a thin plate (0.04 thick, about 10 cells at 256^3 and just over one cell at
    32^3) with a round hole cut through the plate: curved, flat, sharp-edged and thin parts."""
    torus = torus_sdf(center=(0.0, 0.0, 0.1), major_radius=0.3, minor_radius=0.06)
    plate = box_sdf(center=(0.0, 0.0, -0.2), half_extents=(0.45, 0.4, 0.02))
    hole = sphere_sdf(center=(0.2, 0.15, -0.2), radius=0.12)
    return subtract(union(torus, plate), hole)
