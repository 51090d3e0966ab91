"""Point sampling for training and evaluation: surface points with normals, and occupancy
queries (uniform in a cube plus near-surface) with signed distances and the paper's
semi-continuous occupancy label. All samplers take a seed and are reproducible."""

from __future__ import annotations

import numpy as np
import trimesh

from vat.geometry.inside import signed_distance

# The paper's band s = 1/128: occupancy is 1 deeper than s inside, 0 farther than s outside,
# and 0.5 - 0.5 * sdf / s in between.
SEMI_CONTINUOUS_BAND = 1.0 / 128.0
# Standard deviations of the Gaussian offsets of near-surface queries, used in equal shares.
NEAR_SURFACE_SIGMAS = (0.002, 0.01, 0.03)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sample_surface(
    mesh: trimesh.Trimesh, count: int, seed: int | np.random.Generator | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`count` points uniform by area on the surface and their face normals, both [count, 3] float32."""
    rng = _rng(seed)
    areas = np.asarray(mesh.area_faces, dtype=np.float64)
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise ValueError("cannot sample the surface of a mesh with zero area")
    face = rng.choice(len(areas), size=count, p=areas / areas.sum())
    # Uniform barycentric coordinates by the square-root trick.
    r1, r2 = rng.random((2, count))
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    triangles = np.asarray(mesh.triangles)[face]
    points = np.einsum("nk,nkd->nd", bary, triangles)
    normals = np.nan_to_num(np.asarray(mesh.face_normals)[face])
    return points.astype(np.float32), normals.astype(np.float32)


def uniform_points(
    count: int, bound: float = 0.5, seed: int | np.random.Generator | None = 0
) -> np.ndarray:
    """`count` points uniform in the cube [-bound, bound]^3, float32 [count, 3]."""
    return _rng(seed).uniform(-bound, bound, size=(count, 3)).astype(np.float32)


def near_surface_points(
    mesh: trimesh.Trimesh,
    count: int,
    sigmas: tuple[float, ...] = NEAR_SURFACE_SIGMAS,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Surface samples moved by isotropic Gaussian offsets, the sigmas used in equal shares."""
    rng = _rng(seed)
    points, _ = sample_surface(mesh, count, rng)
    sigma = np.asarray(sigmas, dtype=np.float64)[np.arange(count) % len(sigmas)]
    return (points + rng.normal(size=(count, 3)) * sigma[:, None]).astype(np.float32)


def band_points(
    mesh: trimesh.Trimesh,
    count: int,
    max_distance: float = 0.05,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Points within `max_distance` of the surface: a surface sample moved along a random
    direction by a uniform distance in [0, max_distance] (the protocol's Near-Acc queries)."""
    rng = _rng(seed)
    points, _ = sample_surface(mesh, count, rng)
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-12
    offset = rng.uniform(0.0, max_distance, size=(count, 1))
    return (points + direction * offset).astype(np.float32)


def semi_continuous_occupancy(sdf: np.ndarray, band: float = SEMI_CONTINUOUS_BAND) -> np.ndarray:
    """The paper's label: 1 for sdf <= -band, 0 for sdf >= band, 0.5 - 0.5 * sdf / band between."""
    return np.clip(0.5 - 0.5 * np.asarray(sdf) / band, 0.0, 1.0).astype(np.float32)


def occupancy_queries(
    mesh: trimesh.Trimesh,
    n_uniform: int = 20_000,
    n_near: int = 20_000,
    bound: float = 0.5,
    sigmas: tuple[float, ...] = NEAR_SURFACE_SIGMAS,
    band: float = SEMI_CONTINUOUS_BAND,
    seed: int | np.random.Generator | None = 0,
) -> dict[str, np.ndarray]:
    """Uniform queries in [-bound, bound]^3 followed by near-surface queries, with labels.

    Returns points [N, 3] float32, sdf [N] float32 (negative inside) and occupancy [N] float32
    (the semi-continuous label); N = n_uniform + n_near, uniform ones first.
    """
    rng = _rng(seed)
    points = np.concatenate(
        [uniform_points(n_uniform, bound, rng), near_surface_points(mesh, n_near, sigmas, rng)]
    )
    sdf = signed_distance(mesh, points).astype(np.float32)
    return {"points": points, "sdf": sdf, "occupancy": semi_continuous_occupancy(sdf, band)}
