"""Classical codecs at a byte budget, the protocol's baselines next to .vat files: Draco after
quadric decimation, and a zlib-compressed occupancy voxel grid. Meshes are in the unit cube."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import DracoPy
import numpy as np
import trimesh
from skimage.measure import marching_cubes

from vat.geometry.inside import contains
from vat.metrics import chamfer_fscore

DRACO_QUANTIZATION_BITS = tuple(range(6, 13))
DRACO_COMPRESSION_LEVEL = 10
# Fewer faces than a tetrahedron is no longer a solid.
DRACO_MIN_FACES = 4
# The voxel header is one byte holding r, so r is at most 255.
VOXEL_MIN_RESOLUTION = 2
VOXEL_MAX_RESOLUTION = 255


@dataclass
class BaselineResult:
    """A baseline's decoded mesh, the size of the bytes it came from, and how it was made."""

    name: str
    mesh: trimesh.Trimesh
    bytes: int
    detail: dict = field(default_factory=dict)


def _largest_fitting(lo: int, hi: int, size, budget: int) -> int | None:
    """Largest n in [lo, hi] with size(n) <= budget, by bisection (sizes grow with n, if not
    strictly); None if even size(lo) is over budget."""
    if size(lo) > budget:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def draco_encode(mesh: trimesh.Trimesh, quantization_bits: int) -> bytes:
    """Draco bytes of `mesh` (positions quantised to `quantization_bits` over its bounding box)."""
    return DracoPy.encode(
        np.asarray(mesh.vertices, dtype=np.float32),
        np.asarray(mesh.faces, dtype=np.uint32),
        quantization_bits=quantization_bits,
        compression_level=DRACO_COMPRESSION_LEVEL,
    )


def draco_decode(data: bytes) -> trimesh.Trimesh:
    """The mesh that Draco bytes represent."""
    decoded = DracoPy.decode(data)
    return trimesh.Trimesh(vertices=decoded.points, faces=decoded.faces, process=False)


def draco_at_budget(
    mesh: trimesh.Trimesh,
    budget_bytes: int,
    reference: trimesh.Trimesh | None = None,
    seed: int = 0,
) -> BaselineResult | None:
    """The best Draco mesh within `budget_bytes`: for each quantisation depth, the most faces
    (quadric decimation) whose encoding fits; of those, the best F-score against `reference`
    (default `mesh`). None when even a tetrahedron-sized mesh at the coarsest depth is too big."""
    reference = mesh if reference is None else reference
    decimated: dict[int, trimesh.Trimesh] = {}

    def decimate(faces: int) -> trimesh.Trimesh:
        if faces not in decimated:
            decimated[faces] = (
                mesh if faces >= len(mesh.faces) else mesh.simplify_quadric_decimation(face_count=faces)
            )
        return decimated[faces]

    best = None
    for bits in DRACO_QUANTIZATION_BITS:
        faces = _largest_fitting(
            DRACO_MIN_FACES,
            len(mesh.faces),
            lambda n: len(draco_encode(decimate(n), bits)),
            budget_bytes,
        )
        if faces is None:
            continue
        data = draco_encode(decimate(faces), bits)
        decoded = draco_decode(data)
        # Coarse quantisation can collapse every triangle; such a mesh has no surface to score.
        if decoded.area <= 0:
            continue
        scores = chamfer_fscore(reference, decoded, seed=seed)
        if best is None or scores["f_score"] > best.detail["f_score"]:
            detail = {"quantization_bits": bits, "faces": len(decoded.faces), **scores}
            best = BaselineResult("draco", decoded, len(data), detail)
    return best


def voxel_occupancy(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """Bool [r, r, r], indexed [x, y, z]: is each voxel centre of the unit cube's r^3 grid inside."""
    centres = (np.arange(resolution) + 0.5) / resolution - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1)
    return contains(mesh, grid.reshape(-1, 3)).reshape((resolution,) * 3)


def voxel_encode(mesh: trimesh.Trimesh, resolution: int) -> bytes:
    """One byte r, then the occupancy bits, zlib-compressed at level 9: each z-row of the [x, y, z]
    grid packed into whole bytes, so rows align alike at every r and sizes grow smoothly with r."""
    if not VOXEL_MIN_RESOLUTION <= resolution <= VOXEL_MAX_RESOLUTION:
        raise ValueError(
            f"voxel resolution must be in [{VOXEL_MIN_RESOLUTION}, {VOXEL_MAX_RESOLUTION}], got {resolution}"
        )
    bits = np.packbits(voxel_occupancy(mesh, resolution), axis=-1)
    return bytes([resolution]) + zlib.compress(bits.tobytes(), 9)


def voxel_unpack(data: bytes) -> np.ndarray:
    """The occupancy grid, bool [r, r, r], that voxel bytes hold."""
    resolution = data[0]
    rows = np.frombuffer(zlib.decompress(data[1:]), dtype=np.uint8).reshape(resolution, resolution, -1)
    return np.unpackbits(rows, axis=-1, count=resolution).astype(bool)


def voxel_decode(data: bytes) -> trimesh.Trimesh:
    """Marching cubes of the decoded grid, in the unit cube with outward faces; an empty mesh
    when no voxel is occupied."""
    grid = voxel_unpack(data)
    if not grid.any():
        return trimesh.Trimesh()
    resolution = len(grid)
    # A border of empty voxels closes the surface where the shape touches the cube's faces.
    padded = np.pad(grid, 1).astype(np.float32)
    # Occupancy rises inward, so "ascent" winds the faces outward (positive volume).
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, gradient_direction="ascent")
    # Padded index j is voxel j - 1, whose centre is (j - 1 + 0.5) / r - 0.5.
    vertices = (vertices - 0.5) / resolution - 0.5
    return trimesh.Trimesh(vertices=vertices, faces=faces)


def voxel_at_budget(
    mesh: trimesh.Trimesh, budget_bytes: int, reference: trimesh.Trimesh | None = None
) -> BaselineResult | None:
    """The finest voxel grid whose bytes fit `budget_bytes` (an r that fits while r + 1 does not;
    sizes are not strictly monotone in r), decoded from those bytes, with its F-score against
    `reference` (default `mesh`) in detail. None when even r = 2 does not fit or the grid holds
    no occupied voxel (a shape thinner than the voxels). Cost: a few inside tests of ~r^3 points."""
    reference = mesh if reference is None else reference
    encodings: dict[int, bytes] = {}

    def size(resolution: int) -> int:
        if resolution not in encodings:
            encodings[resolution] = voxel_encode(mesh, resolution)
        return len(encodings[resolution])

    # The bytes grow about as r^2 (zlib spends them on the surface's voxels), so each step goes
    # to the r that r^2 predicts for the budget, kept strictly between the finest r known to fit
    # and the coarsest known not to: a few fine grids instead of a bisection's many.
    fit, over = VOXEL_MIN_RESOLUTION - 1, VOXEL_MAX_RESOLUTION + 1
    resolution = VOXEL_MIN_RESOLUTION
    while True:
        if size(resolution) <= budget_bytes:
            fit = resolution
        else:
            over = resolution
        if fit + 1 >= over:
            break
        guess = int(resolution * np.sqrt(budget_bytes / size(resolution)))
        resolution = min(max(guess, fit + 1), over - 1)
    if fit < VOXEL_MIN_RESOLUTION:
        return None
    resolution = fit
    data = encodings[resolution]
    decoded = voxel_decode(data)
    if len(decoded.faces) == 0:
        return None
    detail = {"resolution": resolution, **chamfer_fscore(reference, decoded)}
    return BaselineResult("voxel", decoded, len(data), detail)
