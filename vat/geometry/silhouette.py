"""Silhouette consistency: how well a 3D occupancy explains an object's 2D outline from some view.

Used to pick among generated candidates (Pipeline.generate(search=K)): the candidate whose outline,
seen from its best-fitting view of a grid of cameras, overlaps the input image's foreground mask
the most. Both outlines are framed the same way (bounding box centred, longer side a fixed share of
a small square) so neither the object's size in the photo nor the camera distance matters; only the
shape of the outline does. Cameras are the render protocol's (perspective, FOV_DEGREES, looking at
the origin), so a render of a mesh from a grid view gives back its own outline.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

from vat.errors import VatError
from vat.geometry.cameras import FOV_DEGREES, camera_axes, fit_distance
from vat.geometry.extract import GRID_BOUND, grid_points

SILHOUETTE_SIDE = 64  # pixels of the square both outlines are compared on
FILL = 0.9  # the framed bounding box's longer side, as a share of SILHOUETTE_SIDE
# The view grid searched: every 15 degrees of azimuth at three elevations of the protocol's band.
GRID_AZIMUTHS = np.arange(0.0, 360.0, 15.0)
GRID_ELEVATIONS = np.array([0.0, 15.0, 30.0])


def frame_mask(mask_HW: np.ndarray, side: int = SILHOUETTE_SIDE, fill: float = FILL) -> np.ndarray:
    """A foreground mask (bool, or float in [0, 1] thresholded at 0.5) framed like the projected
    outlines: its bounding box centred, its longer side `fill` of a `side` x `side` bool square."""
    mask_HW = np.asarray(mask_HW)
    foreground = mask_HW >= 0.5 if mask_HW.dtype != bool else mask_HW
    if foreground.ndim != 2 or not foreground.any():
        raise VatError("the foreground mask is empty: there is no outline to compare with")
    rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
    crop = foreground[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    scale = fill * side / max(crop.shape)
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    resized = np.asarray(Image.fromarray(crop * 255).convert("L").resize((width, height), Image.Resampling.BOX))
    out = np.zeros((side, side), dtype=bool)
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = resized >= 128
    return out


def _cube_points(points_N3: np.ndarray, cell: float, lattice: int | None = None) -> np.ndarray:
    """Each cube of edge `cell` centred at a point, as points [N * M, 3] (float32): its centre and the eight
    points halfway to its corners (the outlines' drawing), or with `lattice` n an n x n x n lattice filling it."""
    if lattice is None:
        offsets = np.array([[0, 0, 0]] + [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * cell / 4
    else:
        ticks = (np.arange(lattice) + 0.5) / lattice - 0.5
        offsets = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3) * cell
    return (points_N3[:, None, :] + offsets[None]).reshape(-1, 3).astype(np.float32)


def _framed(dense_N3: np.ndarray, axes, distance: float, side: int, fill: float):
    """Rows, columns and depths of points seen from a camera (right, up, back) at `distance`, framed: their
    bounding box in the image centred, its longer side `fill` of a `side` square; and that framing's scale
    (pixels per unit of the image plane)."""
    right, up, back = axes
    depth = distance - dense_N3 @ back
    u, w = (dense_N3 @ right) / depth, -(dense_N3 @ up) / depth  # image plane, w down
    lo_u, hi_u, lo_w, hi_w = u.min(), u.max(), w.min(), w.max()
    scale = fill * side / max(hi_u - lo_u, hi_w - lo_w, 1e-9)
    cols = np.clip(((u - (lo_u + hi_u) / 2) * scale + side / 2).astype(np.int64), 0, side - 1)
    rows = np.clip(((w - (lo_w + hi_w) / 2) * scale + side / 2).astype(np.int64), 0, side - 1)
    return rows, cols, depth, scale


def project_outlines(points_N3: np.ndarray, cell: float, azimuths=GRID_AZIMUTHS, elevations=GRID_ELEVATIONS,
                     side: int = SILHOUETTE_SIDE, fill: float = FILL) -> np.ndarray:
    """Framed outlines [V, side, side] (bool) of a solid given as the centres of its occupied cubes
    of edge `cell` (in the unit cube), from every (azimuth, elevation) pair of the grid (view v is
    azimuth v // len(elevations), elevation v % len(elevations): grid_view).

    Each cube is drawn as its centre and the eight points halfway to its corners, which leaves no
    gaps between neighbours at these sizes; only the cubes with an empty neighbour matter for the
    outline, so the caller may pass just those."""
    points = np.asarray(points_N3, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise VatError("the occupancy is empty: it has no outline")
    dense = _cube_points(points, cell)
    grid_a, grid_e = np.meshgrid(np.ravel(azimuths), np.ravel(elevations), indexing="ij")
    grid_a, grid_e = grid_a.ravel(), grid_e.ravel()
    distance = fit_distance(points, grid_a, grid_e, FOV_DEGREES)
    axes_V3 = [axis.astype(np.float32) for axis in camera_axes(grid_a, grid_e)]
    outlines = np.zeros((len(grid_a), side, side), dtype=bool)
    for v, axes in enumerate(zip(*axes_V3)):
        rows, cols, _, _ = _framed(dense, axes, distance, side, fill)
        outlines[v, rows, cols] = True
    return outlines


def grid_view(index: int, azimuths=GRID_AZIMUTHS, elevations=GRID_ELEVATIONS) -> tuple[float, float]:
    """(azimuth, elevation) in degrees of view `index` of project_outlines' grid."""
    count = len(np.ravel(elevations))
    return float(np.ravel(azimuths)[index // count]), float(np.ravel(elevations)[index % count])


def best_overlap(target_HW: np.ndarray, outlines_VHW: np.ndarray) -> tuple[float, int]:
    """(IoU, view index) of the outline that overlaps the framed target mask the most."""
    inter = np.logical_and(outlines_VHW, target_HW[None]).sum(axis=(1, 2))
    union = np.logical_or(outlines_VHW, target_HW[None]).sum(axis=(1, 2))
    iou_V = inter / np.maximum(union, 1)
    best = int(np.argmax(iou_V))
    return float(iou_V[best]), best


def outline_fits(volumes: list[np.ndarray], mask_HW: np.ndarray, azimuths=GRID_AZIMUTHS,
                 elevations=GRID_ELEVATIONS, side: int = SILHOUETTE_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """For each occupancy volume (bool [R + 1]^3 at the points of vat.geometry.extract.grid_points(R)), the
    IoU of its outline (each occupied point standing for a cube of one cell, seen from the best view of the
    azimuth x elevation grid) with the framed foreground mask, and that view's (azimuth, elevation) in
    degrees: arrays [K] and [K, 2]; -1 and (nan, nan) for a volume with no occupied point."""
    target = frame_mask(mask_HW, side=side)
    scores, views = np.full(len(volumes), -1.0), np.full((len(volumes), 2), np.nan)
    for k, volume in enumerate(volumes):
        cells, grid = shell_cells(volume), len(volume) - 1
        if len(cells):
            outlines = project_outlines(grid_points(grid)[cells], 2 * GRID_BOUND / grid, azimuths, elevations, side)
            scores[k], best = best_overlap(target, outlines)
            views[k] = grid_view(best, azimuths, elevations)
    return scores, views


def outline_scores(volumes: list[np.ndarray], mask_HW: np.ndarray, azimuths=GRID_AZIMUTHS,
                   elevations=GRID_ELEVATIONS, side: int = SILHOUETTE_SIDE) -> np.ndarray:
    """outline_fits' scores alone."""
    return outline_fits(volumes, mask_HW, azimuths, elevations, side)[0]


def shaded_view(occupied_RRR: np.ndarray, azimuth: float, elevation: float, size: int = 96,
                fill: float = FILL) -> np.ndarray:
    """A small grey picture (uint8 [size, size, 3], on white) of an occupancy volume (as outline_fits takes)
    seen from one camera of the outline search, framed as its outlines are: the shell cells drawn as dense
    points, the nearest kept per pixel, lit by the normals of that depth map. A preview of a search's
    samples that needs no OpenGL; an empty volume gives a white picture."""
    picture = np.full((size, size, 3), 255, dtype=np.uint8)
    cells, grid = shell_cells(occupied_RRR), len(occupied_RRR) - 1
    if len(cells) == 0:
        return picture
    points = grid_points(grid)[cells].astype(np.float64)
    axes = [axis[0].astype(np.float32) for axis in camera_axes(azimuth, elevation)]
    distance = fit_distance(points, azimuth, elevation, FOV_DEGREES)
    rows, cols, depth, scale = _framed(_cube_points(points, 2 * GRID_BOUND / grid, lattice=4), axes, distance,
                                       size, fill)
    depth_HW = np.full(size * size, np.inf, dtype=np.float32)
    np.minimum.at(depth_HW, rows * size + cols, depth)
    depth_HW = depth_HW.reshape(size, size)
    seen = np.isfinite(depth_HW)
    # The depth map smoothed over seen pixels (3 x 3), so the points' layers inside each cell do not stripe it;
    # then its slopes per unit of width (a pixel spans about the median depth / scale) where neighbours are seen.
    filled = np.where(seen, depth_HW, 0.0)
    share_seen = uniform_filter(seen.astype(np.float64), 3, mode="constant")
    filled = np.where(seen, uniform_filter(filled, 3, mode="constant") / np.maximum(share_seen, 1e-9), 0.0)
    slopes = []
    for axis in (1, 0):
        ahead, behind = np.roll(filled, -1, axis), np.roll(filled, 1, axis)
        ok_a, ok_b = np.roll(seen, -1, axis) & seen, np.roll(seen, 1, axis) & seen
        one_sided = np.where(ok_a, ahead - filled, np.where(ok_b, filled - behind, 0.0))
        diff = np.where(ok_a & ok_b, (ahead - behind) / 2, one_sided)
        slopes.append(diff * scale / float(np.median(depth)))
    # Normals towards the camera (x right, y up, z to the camera), from depth growing away from it.
    normal = np.stack([slopes[0], -slopes[1], np.ones_like(filled)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = np.array([-0.4, 0.5, 0.77])
    shade = 0.3 + 0.7 * np.clip(normal @ (light / np.linalg.norm(light)), 0.0, 1.0)
    grey = (np.array([200.0, 205.0, 215.0]) * shade[..., None]).astype(np.uint8)
    picture[seen] = grey[seen]
    return picture


def shell_cells(occupied_RRR: np.ndarray) -> np.ndarray:
    """Indices [N, 3] of the occupied cells with an empty face neighbour (outside the grid counts as
    empty): the cells an outline can come from."""
    padded = np.pad(occupied_RRR, 1, constant_values=False)
    interior = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(occupied_RRR & ~interior)
