"""Occupancy field -> triangle mesh: dense or coarse-to-fine grid evaluation (Hunyuan3D-2 style,
querying only cells near the surface), marching cubes, and post-processing for viewers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import product
from typing import Callable

import numpy as np
import trimesh
from scipy.ndimage import binary_dilation, generate_binary_structure
from skimage.measure import marching_cubes
from tqdm.auto import tqdm

from vat.errors import VatError

OccupancyFn = Callable[[np.ndarray], np.ndarray]  # points float32 [N, 3] -> [N], larger = inside

# Half-width of the extraction grid: a little beyond the unit cube, so the outermost grid points
# lie outside any normalised shape and shapes touching the cube's faces come out closed.
GRID_BOUND = 0.51
METHODS = ("dense", "coarse_to_fine")
# Coarse-to-fine refines the cells crossing the level and their face neighbours. Measured on the
# bench shape at 256^3: all 26 neighbours cost 11% more queries for the same mesh; no neighbours
# halved the queries but lost detail near the coarse grid's limit (a wavy box: 0.9% of its area
# against 0.2% with face neighbours).
FACE_NEIGHBOURS = generate_binary_structure(3, 1)
# Default for postprocess: drop connected components with less than this share of the largest
# component's volume (decoder floaters are small blobs and flat specks). On the six examples' generations
# (seed 0, search 8, 128^3, scales 6 and 10) the second parts held 20% and 30% of the main part's volume
# (a sofa's, a chair's) and every other part under 2%; by area, the old rule (1%) kept 6 of those.
FLOATER_FRACTION = 0.05


@dataclass
class ExtractionStats:
    resolution: int  # grid cells per axis
    method: str
    queries: int  # points at which the occupancy function was evaluated
    seconds: float


def grid_points(resolution: int, bound: float = GRID_BOUND) -> np.ndarray:
    """Coordinates [resolution + 1] of the grid points along each axis: `resolution` cells of
    size 2 * bound / resolution spanning [-bound, bound]. The 3-D grid is their product with
    indexing="ij": volume[i, j, k] is the value at (x[i], x[j], x[k])."""
    return np.linspace(-bound, bound, resolution + 1, dtype=np.float32)


class _Queries:
    """Evaluates the occupancy function at grid points in batches and counts every query."""

    def __init__(self, fn: OccupancyFn, batch_size: int):
        self.fn = fn
        self.batch_size = batch_size
        self.count = 0

    def __call__(
        self, axis: np.ndarray, flat_index: range | np.ndarray, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Values [len(flat_index)] at the grid points `flat_index` of a grid of `shape`."""
        values = np.empty(len(flat_index), dtype=np.float32)
        for start in range(0, len(flat_index), self.batch_size):
            ijk = np.unravel_index(np.asarray(flat_index[start : start + self.batch_size]), shape)
            points_N3 = np.stack([axis[i] for i in ijk], axis=1)
            out = np.asarray(self.fn(points_N3), dtype=np.float32).reshape(-1)
            if len(out) != len(points_N3):
                raise VatError(
                    f"the occupancy function returned {len(out)} values for {len(points_N3)} points"
                )
            if not np.isfinite(out).all():
                raise VatError("the occupancy function returned NaN or infinite values")
            values[start : start + len(out)] = out
        self.count += len(values)
        return values


def _dense(query: _Queries, resolution: int, bound: float) -> np.ndarray:
    shape = (resolution + 1,) * 3
    # A range, not an array, so 17M flat indices at 256^3 are never materialised at once.
    return query(grid_points(resolution, bound), range(int(np.prod(shape))), shape).reshape(shape)


def _upsample(volume: np.ndarray) -> np.ndarray:
    """Trilinear 2x upsampling with aligned corners, [n+1]^3 -> [2n+1]^3: the old values land on
    the even indices and each new point gets the average of its two neighbours along one axis."""
    out = np.empty((2 * volume.shape[0] - 1,) * 3, dtype=volume.dtype)
    out[::2, ::2, ::2] = volume
    # Last axis first, on only the planes filled so far, so the largest pass (axis 0, half of the
    # output) writes whole contiguous planes: 20x faster than interpolating along moved axes.
    for axis in (2, 1, 0):
        v = np.moveaxis(out[(slice(None, None, 2),) * axis], axis, 0)
        np.add(v[:-1:2], v[2::2], out=v[1::2])
        v[1::2] *= 0.5
    return out


def _crossing_cells(volume: np.ndarray, level: float) -> np.ndarray:
    """Boolean [n]^3 over the cells of a [n+1]^3 volume: do its 8 corners lie on both sides of `level`."""
    inside = volume > level
    n = volume.shape[0] - 1
    any_inside = np.zeros((n,) * 3, dtype=bool)
    all_inside = np.ones((n,) * 3, dtype=bool)
    for i, j, k in product((0, 1), repeat=3):
        corner = inside[i : i + n, j : j + n, k : k + n]
        any_inside |= corner
        all_inside &= corner
    return any_inside & ~all_inside


def _points_of_cells(cells: np.ndarray) -> np.ndarray:
    """Boolean [2n+1]^3: the points of the 2x finer grid that lie in (or on) the marked cells [n]^3."""
    n = cells.shape[0]
    points = np.zeros((2 * n + 1,) * 3, dtype=bool)
    for i, j, k in product(range(3), repeat=3):
        points[i : i + 2 * n : 2, j : j + 2 * n : 2, k : k + 2 * n : 2] |= cells
    return points


def _coarse_levels(resolution: int, coarse_resolution: int) -> int:
    """How many times to halve `resolution` to reach the smallest grid >= `coarse_resolution`."""
    levels = 0
    while resolution % 2 ** (levels + 1) == 0 and resolution >> (levels + 1) >= coarse_resolution:
        levels += 1
    return levels


def _coarse_to_fine(
    query: _Queries, resolution: int, coarse_resolution: int, level: float, bound: float, on_grid=None
) -> np.ndarray:
    """Evaluate a coarse grid, then double it until `resolution`, querying only the new points in
    cells whose corners straddle `level` and in their 6 face neighbours (surfaces can bulge across
    a face without changing the sign at any corner); every other point keeps its trilinearly
    interpolated value, which is all marching cubes needs away from the surface. `on_grid(n)`, if
    given, is called as each grid of n cells per side is done."""
    on_grid = on_grid or (lambda n: None)
    levels = _coarse_levels(resolution, coarse_resolution)
    volume = _dense(query, resolution >> levels, bound)
    on_grid(resolution >> levels)
    known = np.ones(volume.shape, dtype=bool)
    for _ in range(levels):
        refine = binary_dilation(_crossing_cells(volume, level), structure=FACE_NEIGHBOURS)
        volume = _upsample(volume)
        known_fine = np.zeros(volume.shape, dtype=bool)
        known_fine[::2, ::2, ::2] = known
        known = known_fine
        targets = np.flatnonzero(_points_of_cells(refine) & ~known)
        n = volume.shape[0] - 1
        volume.reshape(-1)[targets] = query(grid_points(n, bound), targets, volume.shape)
        known.reshape(-1)[targets] = True
        on_grid(n)
    return volume


def _marching_cubes(volume: np.ndarray, level: float, bound: float) -> trimesh.Trimesh:
    inside = volume > level
    if inside.all() or not inside.any():
        raise VatError(
            f"the occupancy field has no surface at level {level}: its values on the grid range "
            f"over [{volume.min():.4g}, {volume.max():.4g}]"
        )
    resolution = volume.shape[0] - 1
    spacing = 2 * bound / resolution
    vertices, faces, _, _ = marching_cubes(volume, level, spacing=(spacing,) * 3)
    vertices -= bound
    # skimage's winding follows a left-hand rule (inward for an ij volume that is larger inside);
    # orient by the sign of the enclosed volume (times 6, cheaper than trimesh's mass properties).
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    if np.einsum("ij,ij->", v0, np.cross(v1, v2)) < 0:
        faces = faces[:, ::-1]
    return trimesh.Trimesh(vertices, faces, process=False)


def extract_mesh(
    fn: OccupancyFn,
    resolution: int = 256,
    level: float = 0.0,
    method: str = "coarse_to_fine",
    bound: float = GRID_BOUND,
    batch_size: int = 262_144,
    coarse_resolution: int = 32,
    progress: bool = False,
) -> tuple[trimesh.Trimesh, ExtractionStats]:
    """Marching-cubes mesh of {p : fn(p) > level} on a grid of `resolution` cells per axis over
    [-bound, bound]^3, faces oriented outward, and how many queries and seconds it took.

    `level` is 0.0 for logits or -sdf, 0.5 for occupancy probabilities. "dense" evaluates all
    (resolution + 1)^3 grid points; "coarse_to_fine" starts from the smallest grid resolution / 2^k
    that is at least `coarse_resolution` and refines only near the surface, so parts thinner than
    that coarse grid's cells can be missed. Raises VatError when the field has no surface.
    """
    start = time.perf_counter()
    volume, stats = evaluate_grid(fn, resolution, level, method, bound, batch_size, coarse_resolution, progress)
    mesh = _marching_cubes(volume, level, bound)
    stats.seconds = time.perf_counter() - start
    return mesh, stats


def evaluate_grid(
    fn: OccupancyFn,
    resolution: int,
    level: float = 0.0,
    method: str = "coarse_to_fine",
    bound: float = GRID_BOUND,
    batch_size: int = 262_144,
    coarse_resolution: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, ExtractionStats]:
    """The field's values [resolution + 1]^3 at the grid points (grid_points(resolution, bound), indexing
    "ij"), as extract_mesh evaluates them: "dense" queries every point; "coarse_to_fine" queries the
    points near the `level` surface and interpolates the rest (exact in sign away from the surface,
    except for parts thinner than the coarse grid's cells)."""
    if method not in METHODS:
        raise VatError(f"unknown extraction method {method!r}: expected one of {', '.join(METHODS)}")
    if resolution < 2 or coarse_resolution < 2:
        raise VatError(
            f"resolution and coarse_resolution must be at least 2, got {resolution} and {coarse_resolution}"
        )
    start = time.perf_counter()
    query = _Queries(fn, batch_size)
    grids = 1 if method == "dense" else _coarse_levels(resolution, coarse_resolution) + 1
    # One bar that counts the grids, coarse to fine (each finer one costs about 4x the last).
    with tqdm(total=grids, desc=f"Decoding the mesh on a {resolution}³ grid", disable=not progress,
              bar_format="{desc}: {n}/{total} grids |{bar}| {elapsed}{postfix}") as bar:

        def on_grid(side: int) -> None:
            bar.set_postfix_str(f"{side}³ done, {query.count:,} field queries", refresh=False)
            bar.update()

        if method == "dense":
            volume = _dense(query, resolution, bound)
            on_grid(resolution)
        else:
            volume = _coarse_to_fine(query, resolution, coarse_resolution, level, bound, on_grid)
    return volume, ExtractionStats(resolution, method, query.count, time.perf_counter() - start)


def component_volumes(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """The connected component of each face (labels [F]) and each component's enclosed volume (the size of
    its signed volume, by the divergence theorem: exact for the closed surfaces marching cubes makes; a
    flat or open speck encloses about none, however many faces or how much area it has)."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    triangles = mesh.triangles
    signed = np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])) / 6.0
    return labels, np.abs(np.bincount(labels, weights=signed))


def drop_floaters(occupied: np.ndarray, fraction: float = FLOATER_FRACTION) -> np.ndarray:
    """An occupancy grid (bool, any shape in 3D) without its floaters, as postprocess drops them from a mesh:
    the connected components (cells sharing a face) with fewer than `fraction` of the largest one's cells."""
    from scipy.ndimage import label

    labels, count = label(occupied)
    if count <= 1:
        return occupied.copy()
    cells = np.bincount(labels.ravel())
    cells[0] = 0  # the empty space
    return cells[labels] >= max(1, fraction * cells.max())


def postprocess(
    mesh: trimesh.Trimesh, remove_floaters: bool | float = True, target_faces: int | None = None
) -> trimesh.Trimesh:
    """A cleaned copy for viewers and export: close vertices merged, degenerate faces dropped,
    components with less than `remove_floaters` (True: FLOATER_FRACTION) of the largest
    component's volume removed (component_volumes), quadric decimation to about `target_faces`, and
    consistent, outward winding per connected body."""
    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    if remove_floaters and len(mesh.faces):
        fraction = FLOATER_FRACTION if remove_floaters is True else float(remove_floaters)
        labels, volume = component_volumes(mesh)
        mesh.update_faces(volume[labels] >= fraction * volume.max())
    mesh.remove_unreferenced_vertices()
    if target_faces is not None and len(mesh.faces) > target_faces:
        mesh = mesh.simplify_quadric_decimation(face_count=target_faces)
    mesh.fix_normals(multibody=True)
    return mesh
