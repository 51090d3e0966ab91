"""Cameras of the render protocol (section 6.1 of the paper, after SV3D), shared by the renderer
(vat.geometry.render) and the outline search (vat.geometry.silhouette): the orbit's angles, camera axes
looking at the origin, the distance that keeps an object whole in every view, and the OpenGL matrices.

Conventions (see vat.geometry.render): +Y up, azimuth 0 looks from +Z, azimuth grows counter-clockwise
seen from above, elevation lifts the camera above the XZ plane; camera_to_world is OpenGL's (the
camera looks along -Z); intrinsics map OpenCV camera coordinates to pixels.
"""

from __future__ import annotations

import math

import numpy as np

from vat.errors import VatError

FOV_DEGREES = 33.8
ELEVATION_RANGE = (-5.0, 30.0)
# Fraction of the half-image kept free around the object in its tightest view, so antialiased
# edges never touch the border.
MARGIN = 0.05
# The protocol's orbit the camera distance is fitted over: every render of a mesh, whatever its
# view, uses the same distance, so scale is consistent across views (as the paper asks).
_FIT_AZIMUTHS = np.arange(0.0, 360.0, 10.0)
_FIT_ELEVATIONS = np.arange(ELEVATION_RANGE[0], ELEVATION_RANGE[1] + 1e-9, 5.0)


def orbit_angles(views: int = 24, seed: int = 0, elevations=None) -> tuple[np.ndarray, np.ndarray]:
    """(azimuths, elevations) in degrees of the protocol's orbit: `views` azimuths evenly spaced
    over 360 degrees from a seed-dependent start, and elevations drawn uniformly in [-5, 30] with
    the same seed unless given (one number for all views, or one per view)."""
    if int(views) != views or views < 1:
        raise VatError(f"views must be a positive whole number, got {views}")
    views = int(views)
    rng = np.random.default_rng(seed)
    azimuths = (rng.uniform(0.0, 360.0) + np.arange(views) * 360.0 / views) % 360.0
    if elevations is None:
        return azimuths, rng.uniform(*ELEVATION_RANGE, size=views)
    elevation_V = np.asarray(elevations, dtype=np.float64).ravel()
    if len(elevation_V) == 1:
        elevation_V = np.repeat(elevation_V, views)
    if len(elevation_V) != views:
        raise VatError(f"elevations must be one number or {views} numbers (one per view), got {len(elevation_V)}")
    return azimuths, elevation_V


def camera_axes(azimuth_deg, elevation_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (right, up, back) [N, 3] of cameras looking at the origin; back points from
    the origin to the camera."""
    a, e = np.radians(np.asarray(azimuth_deg, float)), np.radians(np.asarray(elevation_deg, float))
    back = np.stack([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)], axis=-1).reshape(-1, 3)
    right = np.stack([np.cos(a), np.zeros_like(a), -np.sin(a)], axis=-1).reshape(-1, 3)
    return right, np.cross(back, right), back


def fit_distance(points_N3: np.ndarray, azimuths, elevations, fov_deg: float) -> float:
    """Smallest camera distance at which every point lies inside the frame (less MARGIN) in every
    view of the protocol's orbit (a 10 x 5 degree grid over all azimuths and elevations [-5, 30];
    a view between grid points is at most ~0.5% tighter, well inside the margin) and in the given
    views outside that band. So the distance depends only on the mesh, whatever views are asked for.

    A point p is inside when |p.right| and |p.up| are at most tan(fov/2) times its depth d - p.back,
    i.e. d >= max(|p.r|, |p.u|)/t + p.b: four linear functions of p, so each view's worst point is
    a support point in one of four directions, all found with one matrix product."""
    azimuths, elevations = np.ravel(azimuths), np.ravel(elevations)
    outside = (elevations < ELEVATION_RANGE[0]) | (elevations > ELEVATION_RANGE[1])
    t = math.tan(math.radians(fov_deg) / 2) * (1 - MARGIN)
    grid_a, grid_e = np.meshgrid(_FIT_AZIMUTHS, _FIT_ELEVATIONS, indexing="ij")
    right, up, back = camera_axes(np.concatenate([grid_a.ravel(), azimuths[outside]]),
                                   np.concatenate([grid_e.ravel(), elevations[outside]]))
    directions_3D = np.concatenate([back + s * axis / t for axis in (right, up) for s in (1, -1)]).T
    points = points_N3.astype(np.float32)
    support_D = np.full(directions_3D.shape[1], -np.inf, dtype=np.float32)
    for start in range(0, len(points), 8192):  # bounded memory for millions of vertices
        support_D = np.maximum(support_D, (points[start:start + 8192] @ directions_3D.astype(np.float32)).max(0))
    return float(support_D.max())


def look_at(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    right, up, back = (v[0] for v in camera_axes(azimuth_deg, elevation_deg))
    camera_to_world = np.eye(4)
    camera_to_world[:3, 0], camera_to_world[:3, 1], camera_to_world[:3, 2] = right, up, back
    camera_to_world[:3, 3] = back * distance
    return camera_to_world


def intrinsics(size: int, fov_deg: float) -> np.ndarray:
    focal = size / 2 / math.tan(math.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])


def projection(fov_deg: float, near: float, far: float) -> np.ndarray:
    f = 1 / math.tan(math.radians(fov_deg) / 2)
    return np.array([
        [f, 0, 0, 0],
        [0, f, 0, 0],
        [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
        [0, 0, -1, 0],
    ])
