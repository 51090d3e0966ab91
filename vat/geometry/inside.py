"""Inside/outside and distances for any triangle mesh, watertight or not.

Inside means |generalised winding number| > 0.5 (libigl's fast winding number, Barill et al.
2018): exact for watertight meshes, and robust to holes, self-intersections, triangle soups and
inside-out parts, which is what real artist meshes are (double-sided faces, whose windings cancel,
are dropped on loading by io.clean_mesh). Distances are exact point-to-triangle distances (libigl AABB tree).
"""

from __future__ import annotations

import igl
import numpy as np
import trimesh

INSIDE_WINDING = 0.5


def _vf(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(mesh.vertices, dtype=np.float64),
        np.ascontiguousarray(mesh.faces, dtype=np.int64),
    )


def _q(points: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3))


def winding_number(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of `mesh` at each point [N, 3] -> [N] (about 1 inside, 0 outside)."""
    vertices, faces = _vf(mesh)
    return igl.fast_winding_number(vertices, faces, _q(points))


def contains(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Boolean [N]: is each point inside the mesh (|winding number| > 0.5; the absolute value
    makes a part whose faces all point inward count as solid, not as a hole)."""
    return np.abs(winding_number(mesh, points)) > INSIDE_WINDING


def unsigned_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Exact distance [N] from each point [N, 3] to the mesh surface."""
    vertices, faces = _vf(mesh)
    squared, _, _ = igl.point_mesh_squared_distance(_q(points), vertices, faces)
    return np.sqrt(np.maximum(squared, 0.0))


def signed_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Signed distance [N]: negative inside (see `contains`), positive outside."""
    distance = unsigned_distance(mesh, points)
    return np.where(contains(mesh, points), -distance, distance)
