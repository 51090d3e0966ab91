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


def project_outlines(points_N3: np.ndarray, cell: float, azimuths=GRID_AZIMUTHS, elevations=GRID_ELEVATIONS,
                     side: int = SILHOUETTE_SIDE, fill: float = FILL) -> np.ndarray:
    """Framed outlines [V, side, side] (bool) of a solid given as the centres of its occupied cubes
    of edge `cell` (in the unit cube), from every (azimuth, elevation) pair of the grid.

    Each cube is drawn as its centre and the eight points halfway to its corners, which leaves no
    gaps between neighbours at these sizes; only the cubes with an empty neighbour matter for the
    outline, so the caller may pass just those."""
    points = np.asarray(points_N3, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise VatError("the occupancy is empty: it has no outline")
    offsets = np.array([[0, 0, 0]] + [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * cell / 4
    dense = (points[:, None, :] + offsets[None]).reshape(-1, 3).astype(np.float32)
    grid_a, grid_e = np.meshgrid(np.ravel(azimuths), np.ravel(elevations), indexing="ij")
    grid_a, grid_e = grid_a.ravel(), grid_e.ravel()
    distance = fit_distance(points, grid_a, grid_e, FOV_DEGREES)
    axes_V3 = [axis.astype(np.float32) for axis in camera_axes(grid_a, grid_e)]
    outlines = np.zeros((len(grid_a), side, side), dtype=bool)
    for v, (right, up, back) in enumerate(zip(*axes_V3)):
        depth = distance - dense @ back
        u, w = (dense @ right) / depth, -(dense @ up) / depth  # image plane, w down
        lo_u, hi_u, lo_w, hi_w = u.min(), u.max(), w.min(), w.max()
        scale = fill * side / max(hi_u - lo_u, hi_w - lo_w, 1e-9)
        cols = np.clip(((u - (lo_u + hi_u) / 2) * scale + side / 2).astype(np.int64), 0, side - 1)
        rows = np.clip(((w - (lo_w + hi_w) / 2) * scale + side / 2).astype(np.int64), 0, side - 1)
        outlines[v, rows, cols] = True
    return outlines


def best_overlap(target_HW: np.ndarray, outlines_VHW: np.ndarray) -> tuple[float, int]:
    """(IoU, view index) of the outline that overlaps the framed target mask the most."""
    inter = np.logical_and(outlines_VHW, target_HW[None]).sum(axis=(1, 2))
    union = np.logical_or(outlines_VHW, target_HW[None]).sum(axis=(1, 2))
    iou_V = inter / np.maximum(union, 1)
    best = int(np.argmax(iou_V))
    return float(iou_V[best]), best


def outline_scores(volumes: list[np.ndarray], mask_HW: np.ndarray, azimuths=GRID_AZIMUTHS,
                   elevations=GRID_ELEVATIONS, side: int = SILHOUETTE_SIDE) -> np.ndarray:
    """For each occupancy volume (bool [R + 1]^3 at the points of vat.geometry.extract.grid_points(R)), the
    IoU of its outline (each occupied point standing for a cube of one cell, seen from the best view of the
    azimuth x elevation grid) with the framed foreground mask; -1 for a volume with no occupied point."""
    target = frame_mask(mask_HW, side=side)
    scores = np.full(len(volumes), -1.0)
    for k, volume in enumerate(volumes):
        cells, grid = shell_cells(volume), len(volume) - 1
        if len(cells):
            outlines = project_outlines(grid_points(grid)[cells], 2 * GRID_BOUND / grid, azimuths, elevations, side)
            scores[k] = best_overlap(target, outlines)[0]
    return scores


def shell_cells(occupied_RRR: np.ndarray) -> np.ndarray:
    """Indices [N, 3] of the occupied cells with an empty face neighbour (outside the grid counts as
    empty): the cells an outline can come from."""
    padded = np.pad(occupied_RRR, 1, constant_values=False)
    interior = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(occupied_RRR & ~interior)
