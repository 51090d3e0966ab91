"""Which collected meshes to keep: the size and flatness filters, an exact geometry hash (liveries:
same shape, other texture) and a coarse shape descriptor for near duplicates (LODs, animation
frames, open/closed doors); the descriptor also flags scattered pieces. All work on the mesh
normalised to the unit cube."""

from __future__ import annotations

import hashlib

import numpy as np
import trimesh
from scipy import ndimage

from vat.geometry.io import normalize_mesh

MIN_FACES = 100
MIN_THICKNESS = 0.02  # smallest bounding-box side over the largest: below it the mesh is a flat card
DESCRIPTOR_GRID = 16  # the descriptor is a 16^3 occupancy of surface samples
DESCRIPTOR_SAMPLES = 8192
MIN_CLUSTER_SHARE = 0.6  # below it the mesh is a scattered set of pieces (decor sets, debris)
NEAR_IOU = 0.9  # descriptor IoU from which two meshes count as one
NEAR_ASPECT = 0.1  # ... when their bounding-box sides also differ by less than 10% (|log ratio|)


def filter_reason(mesh: trimesh.Trimesh) -> str | None:
    """Why a mesh is not worth training on (None: keep it)."""
    if len(mesh.faces) < MIN_FACES:
        return f"fewer than {MIN_FACES} faces"
    extents = mesh.extents
    if extents.max() <= 0 or extents.min() / extents.max() < MIN_THICKNESS:
        return "flat"
    return None


def geometry_hash(mesh: trimesh.Trimesh) -> str:
    """A hash of the triangles in the unit cube, rounded to 1e-4 and sorted, so that vertex order,
    duplicated seam vertices, face order and winding do not change it."""
    unit, _ = normalize_mesh(mesh)
    corners = np.round(unit.triangles * 1e4).astype(np.int64)  # [F, 3, 3]
    order = np.lexsort(corners.transpose(2, 0, 1)[::-1], axis=-1)
    keys = np.take_along_axis(corners, order[..., None], axis=1).reshape(len(corners), 9)
    keys = keys[np.lexsort(keys.T[::-1])]
    return hashlib.sha256(keys.tobytes()).hexdigest()[:32]


def shape_descriptor(mesh: trimesh.Trimesh, seed: int = 0) -> tuple[str, list[float]]:
    """(occupancy, extents): the 16^3 cells of the unit cube that surface samples hit, packed as
    hex, and the normalised bounding-box sides (the largest is 1)."""
    unit, _ = normalize_mesh(mesh)
    points, _ = trimesh.sample.sample_surface(unit, DESCRIPTOR_SAMPLES, seed=seed)
    cells = np.clip(((points + 0.5) * DESCRIPTOR_GRID).astype(int), 0, DESCRIPTOR_GRID - 1)
    grid = np.zeros((DESCRIPTOR_GRID,) * 3, dtype=bool)
    grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    return np.packbits(grid.ravel()).tobytes().hex(), np.round(unit.extents, 4).tolist()


def largest_cluster_share(occupancy: str) -> float:
    """The share of the descriptor's occupied cells in its largest touching (26-connected) cluster:
    near 1 for one object, low for scattered pieces such as 0 A.D.'s decor sets or FlightGear's
    groups of crates, whose parts lie more than a sixteenth of the box apart."""
    grid = _unpack(occupancy).reshape((DESCRIPTOR_GRID,) * 3) > 0
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


def _unpack(hex_bits: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8)).astype(np.float32)


def find_duplicates(records: list[dict]) -> dict[str, str]:
    """{id: id of the record it duplicates} over records with "hash", "occupancy" and "extents",
    taken in the given order: the first of a group is kept. Exact: equal hashes. Near: occupancy
    IoU >= NEAR_IOU and bounding-box sides within NEAR_ASPECT (thin parts at 16^3 look alike: a
    door and a blind differ in thickness only)."""
    duplicate_of: dict[str, str] = {}
    first_with_hash: dict[str, str] = {}
    kept: list[int] = []
    for i, record in enumerate(records):
        original = first_with_hash.setdefault(record["hash"], record["id"])
        if original != record["id"]:
            duplicate_of[record["id"]] = original
        else:
            kept.append(i)
    if not kept:
        return duplicate_of
    grids = np.stack([_unpack(records[i]["occupancy"]) for i in kept])  # [K, 4096]
    extents = np.log(np.maximum([records[i]["extents"] for i in kept], 0.01)).astype(np.float32)  # [K, 3]
    close = _close_pairs(grids, extents)
    alive = np.ones(len(kept), dtype=bool)
    for a, b in close:  # sorted by a, then b: the earliest surviving record keeps its group
        if alive[a] and alive[b]:
            duplicate_of[records[kept[b]]["id"]] = records[kept[a]]["id"]
            alive[b] = False
    return duplicate_of


def _close_pairs(grids: np.ndarray, log_extents: np.ndarray, block: int = 512) -> np.ndarray:
    """[P, 2] index pairs a < b whose descriptors are near, sorted (in blocks: K^2 IoUs at once
    would not fit for tens of thousands of meshes)."""
    counts = grids.sum(1)
    pairs = []
    for start in range(0, len(grids), block):
        inter = grids[start:start + block] @ grids.T  # [B, K]
        union = counts[start:start + block, None] + counts[None] - inter
        iou = inter / np.maximum(union, 1)
        aspect = np.abs(log_extents[start:start + block, None] - log_extents[None]).max(-1)
        a, b = np.nonzero((iou >= NEAR_IOU) & (aspect < NEAR_ASPECT))
        a += start
        pairs.append(np.stack([a[a < b], b[a < b]], 1))
    pairs = np.concatenate(pairs)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
