"""The evaluation protocol pinned in docs/protocol.md: Chamfer-L1 and F-score to the other *surface*,
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
# Generation also reports the F-score at this tau: on the unit cube it is the tau = 0.1 on [-1, 1]
# of single-image-to-3D papers (a blob aligned by ICP already scores about 0.5 there).
F_SCORE_TAU_WIDE = 0.05
SURFACE_SAMPLES = 10_000
# ICP matches source samples against a denser target sampling, so that the nearest target sample
# stands in for the nearest surface point (sample-to-sample matching biases the fit).
ICP_SAMPLES = 5_000
ICP_TARGET_FACTOR = 10
# Every start is tried on this many source points; only the best start is refined on all of them.
ICP_COARSE_SAMPLES = 500
# Surface samples per generation in the match matrix (match_chamfer_matrix; ICP_TARGET_FACTOR times
# more per ground truth): enough to rank distinct shapes, ~0.1 s per pair on one core.
MATCH_SAMPLES = 512
NORMALIZE_MODES = ("reference", "each", "none")
# placement_hint: bounding boxes, in the frame two meshes are compared in, whose longest sides differ by
# more than this factor, or whose centres lie further apart than this share of the reference's longest side.
PLACEMENT_SIZE_FACTOR = 1.5
PLACEMENT_OFFSET = 0.25

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
    """Chamfer-L1 (sum of both directions' mean distances), F-score at `tau` and, from the same
    distances, f_score_005 at F_SCORE_TAU_WIDE.

    `samples` points on each surface are measured to the other mesh's surface exactly (not to
    its samples). precision: share of `other`'s samples within tau of `reference`; recall: share
    of `reference`'s samples within tau of `other`; f_score = 2PR / (P + R), 0 when both are 0.
    """
    rng = np.random.default_rng(seed)
    reference_points, _ = sample_surface(reference, samples, rng)
    other_points, _ = sample_surface(other, samples, rng)
    to_other = unsigned_distance(other, reference_points)
    to_reference = unsigned_distance(reference, other_points)
    precision, recall, f_score = _f_score(to_other, to_reference, tau)
    return {
        "chamfer": float(to_other.mean() + to_reference.mean()),
        "f_score": f_score,
        "precision": precision,
        "recall": recall,
        "f_score_005": _f_score(to_other, to_reference, F_SCORE_TAU_WIDE)[2],
    }


def _f_score(to_other: np.ndarray, to_reference: np.ndarray, tau: float) -> tuple[float, float, float]:
    """(precision, recall, F-score) at `tau` from both directions' distances."""
    precision = float(np.mean(to_reference < tau))
    recall = float(np.mean(to_other < tau))
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _rigid_fits(source_KS3: np.ndarray, target_KS3: np.ndarray) -> np.ndarray:
    """[K, 4, 4] rotations + translations minimising sum |R s + t - t'|^2 of each of K pairs of point
    sets (Kabsch, reflection excluded)."""
    source_mean_K3, target_mean_K3 = source_KS3.mean(axis=1), target_KS3.mean(axis=1)
    covariance_K33 = np.einsum("ksi,ksj->kij", source_KS3 - source_mean_K3[:, None],
                               target_KS3 - target_mean_K3[:, None])
    u, _, vt = np.linalg.svd(covariance_K33)
    v, ut = np.swapaxes(vt, 1, 2), np.swapaxes(u, 1, 2)
    diagonal_K3 = np.ones((len(source_KS3), 3))
    diagonal_K3[:, 2] = np.sign(np.linalg.det(v @ ut))
    rotation_K33 = (v * diagonal_K3[:, None, :]) @ ut
    matrices = np.tile(np.eye(4), (len(source_KS3), 1, 1))
    matrices[:, :3, :3] = rotation_K33
    matrices[:, :3, 3] = target_mean_K3 - np.einsum("kij,kj->ki", rotation_K33, source_mean_K3)
    return matrices


def _apply(matrix: np.ndarray, points_S3: np.ndarray) -> np.ndarray:
    """Points moved by a 4x4 ([S, 3]) or by each of K 4x4s ([K, S, 3])."""
    return points_S3 @ np.swapaxes(matrix[..., :3, :3], -1, -2) + matrix[..., None, :3, 3]


def _icp(
    source: np.ndarray,
    target: np.ndarray,
    tree: cKDTree,
    starts: np.ndarray,
    iterations: int,
    tolerance: float,
) -> np.ndarray:
    """Point-to-point ICP from each of the starts [K, 4, 4], each until its mean nearest distance
    stops falling; the 4x4s. The starts advance together (one tree query per iteration)."""
    matrices, previous = starts.copy(), np.full(len(starts), np.inf)
    running = np.arange(len(starts))
    for _ in range(iterations):
        if running.size == 0:
            break
        moved_KS3 = _apply(matrices[running], source)
        distance, index = tree.query(moved_KS3.reshape(-1, 3))
        cost_K = distance.reshape(len(running), -1).mean(axis=1)
        going = previous[running] - cost_K >= tolerance
        running, moved_KS3 = running[going], moved_KS3[going]
        previous[running] = cost_K[going]
        matches_KS3 = target[index.reshape(len(going), -1)[going]]
        matrices[running] = _rigid_fits(moved_KS3, matches_KS3) @ matrices[running]
    return matrices


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
    matrix = icp_points(source_points, target_points, iterations=iterations, tolerance=tolerance,
                        try_rotations=try_rotations)
    moved = source.copy()
    moved.apply_transform(matrix)
    return moved, matrix


def icp_points(
    source_points: np.ndarray,
    target_points: np.ndarray,
    coarse_samples: int = ICP_COARSE_SAMPLES,
    iterations: int = 50,
    tolerance: float = 1e-7,
    try_rotations: bool = True,
) -> np.ndarray:
    """The 4x4 of icp_align for surface samples in random order: source [S, 3], target [S *
    ICP_TARGET_FACTOR, 3]; the starts are tried on the first `coarse_samples` source points."""
    tree = cKDTree(target_points)

    starts = [np.eye(4)]
    if try_rotations:
        source_centre, target_centre = source_points.mean(axis=0), target_points.mean(axis=0)
        for rotation in CUBE_ROTATIONS:
            start = np.eye(4)
            start[:3, :3] = rotation
            start[:3, 3] = target_centre - rotation @ source_centre
            starts.append(start)
    starts = np.stack(starts)

    # The coarse stage keeps the same source:target density ratio on fewer points.
    coarse_source = source_points[:coarse_samples]
    coarse_target = target_points[: coarse_samples * ICP_TARGET_FACTOR]
    coarse_tree = cKDTree(coarse_target)

    def symmetric_cost(matrix: np.ndarray) -> float:
        moved = _apply(matrix, coarse_source)
        back = cKDTree(moved).query(coarse_target[:coarse_samples])[0]
        return float(coarse_tree.query(moved)[0].mean() + back.mean())

    ends = _icp(coarse_source, coarse_target, coarse_tree, starts, iterations, tolerance)
    best = ends[int(np.argmin([symmetric_cost(end) for end in ends]))]
    return _icp(source_points, target_points, tree, best[None], iterations, tolerance)[0]


def match_chamfer_matrix(generated_points: list[np.ndarray], reference_points: list[np.ndarray],
                         progress: bool = False) -> np.ndarray:
    """[G, R] Chamfer after ICP of every generation against every reference, cheaply, for ranking
    (the match rate), not for reporting: G x R ICPs at the protocol's cost would take hours.

    Inputs are surface samples in random order (sample_surface) of normalised meshes: S points of
    each generation (MATCH_SAMPLES), S * ICP_TARGET_FACTOR of each reference. Each generation is
    aligned by icp_points (the same 25 starts, tried on S / 4 points) to each reference; the entry
    is the mean distance from the moved points to the reference points plus the mean distance from
    S of the reference points to the moved ones. Sample-to-sample distances overestimate the
    surface distances by about the sample spacing, alike for every pair. `progress`: a progress bar
    over the generations (90 x 90 takes minutes)."""
    references = [np.asarray(points, np.float64) for points in reference_points]
    trees = [cKDTree(points) for points in references]
    matrix = np.zeros((len(generated_points), len(references)))
    from tqdm import tqdm

    for g, source in enumerate(tqdm(generated_points, desc="match (G x R ICP)", unit="generation",
                                    disable=not progress)):
        source = np.asarray(source, np.float64)
        for r, (target, tree) in enumerate(zip(references, trees)):
            moved = _apply(icp_points(source, target, coarse_samples=max(1, len(source) // 4)), source)
            back = cKDTree(moved).query(target[:len(source)])[0]
            matrix[g, r] = tree.query(moved)[0].mean() + back.mean()
    return matrix


def match_ranks(chamfer_GR: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:
    """[G] rank of each generation's own reference among all references by Chamfer: 1 + how many are
    strictly nearer. Generation g's own reference is `own[g]` (default: reference g, the diagonal).
    The match rate is the share of rank 1."""
    rows = np.arange(len(chamfer_GR))
    own = rows if own is None else np.asarray(own)
    return 1 + np.sum(chamfer_GR < chamfer_GR[rows, own][:, None], axis=1)


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


def placement_hint(reference: trimesh.Trimesh, other: trimesh.Trimesh, normalize: str = "reference") -> str | None:
    """Why a comparison may score a shape against a misplaced copy of itself: a sentence when the two
    bounding boxes, placed as compare_meshes(normalize=...) places them, differ wildly in size or
    position (PLACEMENT_SIZE_FACTOR, PLACEMENT_OFFSET); None when they agree (and always with "each")."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if normalize == "each":
        return None
    (ref_lo, ref_hi), (lo, hi) = reference.bounds, other.bounds
    size = float((ref_hi - ref_lo).max())  # the transform of "reference" is uniform: ratios are the same
    if not size > 0:
        return None
    factor = float((hi - lo).max()) / size
    offset = float(np.linalg.norm((lo + hi) / 2 - (ref_lo + ref_hi) / 2)) / size
    if 1 / PLACEMENT_SIZE_FACTOR <= factor <= PLACEMENT_SIZE_FACTOR and offset <= PLACEMENT_OFFSET:
        return None
    return (f"the two meshes' bounding boxes differ a lot: the scored mesh is {factor:.2f}x the reference's size "
            f"and its centre is {offset:.2f} reference sizes from the reference's centre")


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
