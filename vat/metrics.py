"""The evaluation protocol pinned in DESIGN.md: Chamfer-L1 and F-score to the other *surface*,
ICP alignment for generation, Acc / IoU / Near-Acc query sets and CS-IoU."""

from __future__ import annotations

import itertools

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from vat.geometry.inside import contains, unsigned_distance
from vat.geometry.io import normalize_mesh
from vat.geometry.sampling import band_points, near_surface_points, sample_surface, uniform_points

F_SCORE_TAU = 0.01
SURFACE_SAMPLES = 10_000
# ICP matches source samples against a denser target sampling, so that the nearest target sample
# stands in for the nearest surface point (sample-to-sample matching biases the fit).
ICP_SAMPLES = 5_000
ICP_TARGET_FACTOR = 10
# Every start is tried on this many source points; only the best start is refined on all of them.
ICP_COARSE_SAMPLES = 500
NORMALIZE_MODES = ("reference", "each", "none")

# The 24 proper rotations of the cube (signed permutation matrices with determinant +1): starts
# for ICP when the identity lands in a wrong local minimum, e.g. a shape turned by 90 degrees.
CUBE_ROTATIONS = [
    m
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1.0, -1.0), repeat=3)
    if np.linalg.det(m := np.eye(3)[list(perm)] * np.array(signs)[:, None]) > 0
]


def chamfer_fscore(
    reference: trimesh.Trimesh,
    other: trimesh.Trimesh,
    samples: int = SURFACE_SAMPLES,
    tau: float = F_SCORE_TAU,
    seed: int = 0,
) -> dict[str, float]:
    """Chamfer-L1 (sum of both directions' mean distances) and F-score at `tau`.

    `samples` points on each surface are measured to the other mesh's surface exactly (not to
    its samples). precision: share of `other`'s samples within tau of `reference`; recall: share
    of `reference`'s samples within tau of `other`; f_score = 2PR / (P + R), 0 when both are 0.
    """
    rng = np.random.default_rng(seed)
    reference_points, _ = sample_surface(reference, samples, rng)
    other_points, _ = sample_surface(other, samples, rng)
    to_other = unsigned_distance(other, reference_points)
    to_reference = unsigned_distance(reference, other_points)
    precision = float(np.mean(to_reference < tau))
    recall = float(np.mean(to_other < tau))
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "chamfer": float(to_other.mean() + to_reference.mean()),
        "f_score": f_score,
        "precision": precision,
        "recall": recall,
    }


def _rigid_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """4x4 rotation + translation minimising sum |R s + t - t'|^2 (Kabsch, reflection excluded)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - source_mean).T @ (target - target_mean))
    flip = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, flip]) @ u.T
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = target_mean - rotation @ source_mean
    return matrix


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _icp(
    source: np.ndarray,
    target: np.ndarray,
    tree: cKDTree,
    start: np.ndarray,
    iterations: int,
    tolerance: float,
) -> np.ndarray:
    """Point-to-point ICP from `start` until the mean nearest distance stops falling; the 4x4."""
    matrix, previous = start, np.inf
    for _ in range(iterations):
        moved = _apply(matrix, source)
        distance, index = tree.query(moved)
        cost = float(distance.mean())
        if previous - cost < tolerance:
            break
        previous = cost
        matrix = _rigid_fit(moved, target[index]) @ matrix
    return matrix


def icp_align(
    source: trimesh.Trimesh,
    target: trimesh.Trimesh,
    samples: int = ICP_SAMPLES,
    seed: int = 0,
    iterations: int = 50,
    tolerance: float = 1e-7,
    try_rotations: bool = True,
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Rigidly move `source` onto `target` (rotation + translation, no scale, no reflection).

    Starts: the identity (generated meshes are in canonical pose) and, with `try_rotations`, the
    24 cube rotations about the centroids. Each start runs on a subset of the source samples;
    the one ending closest (mean of both directions' nearest distances) is refined on all of
    them. Returns the moved copy of `source` and the 4x4 matrix that was applied.
    """
    rng = np.random.default_rng(seed)
    source_points = sample_surface(source, samples, rng)[0].astype(np.float64)
    target_points = sample_surface(target, samples * ICP_TARGET_FACTOR, rng)[0].astype(np.float64)
    tree = cKDTree(target_points)

    starts = [np.eye(4)]
    if try_rotations:
        source_centre, target_centre = source_points.mean(axis=0), target_points.mean(axis=0)
        for rotation in CUBE_ROTATIONS:
            start = np.eye(4)
            start[:3, :3] = rotation
            start[:3, 3] = target_centre - rotation @ source_centre
            starts.append(start)

    # The coarse stage keeps the same source:target density ratio on fewer points.
    coarse_source = source_points[:ICP_COARSE_SAMPLES]
    coarse_target = target_points[: ICP_COARSE_SAMPLES * ICP_TARGET_FACTOR]
    coarse_tree = cKDTree(coarse_target)

    def symmetric_cost(matrix: np.ndarray) -> float:
        moved = _apply(matrix, coarse_source)
        back = cKDTree(moved).query(coarse_target[:ICP_COARSE_SAMPLES])[0]
        return float(coarse_tree.query(moved)[0].mean() + back.mean())

    best = min(
        (
            _icp(coarse_source, coarse_target, coarse_tree, start, iterations, tolerance)
            for start in starts
        ),
        key=symmetric_cost,
    )
    matrix = _icp(source_points, target_points, tree, best, iterations, tolerance)
    moved = source.copy()
    moved.apply_transform(matrix)
    return moved, matrix


def compare_meshes(
    reference: trimesh.Trimesh,
    other: trimesh.Trimesh,
    icp: bool = False,
    normalize: str = "reference",
    samples: int = SURFACE_SAMPLES,
    tau: float = F_SCORE_TAU,
    seed: int = 0,
) -> dict[str, float]:
    """The protocol's Chamfer-L1 and F-score of `other` against `reference`.

    normalize: "reference" puts the reference in the unit cube and applies the same transform to
    `other` (so its offset and scale errors count); "each" normalises both independently;
    "none" compares them as given. With `icp`, `other` is then rigidly aligned to the reference
    (generation is scored after ICP, reconstruction without).
    """
    if normalize == "reference":
        reference, transform = normalize_mesh(reference)
        other = other.copy()
        other.apply_transform(transform)
    elif normalize == "each":
        reference, _ = normalize_mesh(reference)
        other, _ = normalize_mesh(other)
    elif normalize != "none":
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if icp:
        other, _ = icp_align(other, reference, seed=seed)
    return chamfer_fscore(reference, other, samples=samples, tau=tau, seed=seed)


def protocol_queries(
    mesh: trimesh.Trimesh, n_uniform: int = 40_000, n_near: int = 40_000, seed: int = 0
) -> dict[str, np.ndarray]:
    """The Acc / IoU query set of a normalised mesh: uniform points in the unit cube, then
    near-surface points; points [N, 3] float32 and the ground truth inside [N] bool."""
    rng = np.random.default_rng(seed)
    points = np.concatenate(
        [uniform_points(n_uniform, seed=rng), near_surface_points(mesh, n_near, seed=rng)]
    )
    return {"points": points, "inside": contains(mesh, points)}


def near_queries(
    mesh: trimesh.Trimesh, count: int = 10_000, max_distance: float = 0.05, seed: int = 0
) -> dict[str, np.ndarray]:
    """The Near-Acc query set: points within `max_distance` of the surface and their inside flags."""
    points = band_points(mesh, count, max_distance, seed=seed)
    return {"points": points, "inside": contains(mesh, points)}


def accuracy(pred_inside: np.ndarray, gt_inside: np.ndarray) -> float:
    """Share of queries whose predicted inside/outside matches the ground truth."""
    return float(np.mean(np.asarray(pred_inside, bool) == np.asarray(gt_inside, bool)))


def iou(pred_inside: np.ndarray, gt_inside: np.ndarray) -> float:
    """|pred AND gt| / |pred OR gt| over the queries; 1.0 when both are empty (nothing to miss)."""
    pred, gt = np.asarray(pred_inside, bool), np.asarray(gt_inside, bool)
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 1.0


def cs_iou(ious_per_scale) -> float:
    """CS-IoU: the mean of the IoUs decoded from the first s scales, over all s."""
    return float(np.mean(ious_per_scale))
