"""Draco and voxel baselines: they fit the byte budget, decode from their bytes, and improve with
more bytes."""

import numpy as np
import pytest
import trimesh

from vat.baselines import (
    draco_at_budget,
    draco_decode,
    draco_encode,
    voxel_at_budget,
    voxel_decode,
    voxel_encode,
    voxel_occupancy,
    voxel_unpack,
)
from vat.geometry.io import normalize_mesh
from vat.metrics import chamfer_fscore

# Budgets in bytes; the large one stays modest because each voxel step is an r^3 inside test.
SMALL, LARGE = 300, 1000


@pytest.fixture(scope="module")
def torus():
    mesh = trimesh.creation.torus(0.35, 0.12, major_sections=96, minor_sections=32)
    return normalize_mesh(mesh)[0]


@pytest.mark.parametrize("at_budget", [draco_at_budget, voxel_at_budget])
def test_fits_budget_and_improves_with_bytes(torus, at_budget):
    small, large = at_budget(torus, SMALL), at_budget(torus, LARGE)
    for result, budget in ((small, SMALL), (large, LARGE)):
        assert result is not None
        assert 0 < result.bytes <= budget
        assert len(result.mesh.faces) > 0 and result.mesh.area > 0
    assert large.bytes > small.bytes
    assert large.detail["f_score"] >= small.detail["f_score"]
    assert large.detail["chamfer"] < small.detail["chamfer"]
    assert large.detail["f_score"] > 0.95


def test_too_small_budget_gives_none(torus):
    assert draco_at_budget(torus, 10) is None
    assert voxel_at_budget(torus, 5) is None


def test_draco_round_trip_and_reported_score(torus):
    decoded = draco_decode(draco_encode(torus, 14))
    assert len(decoded.faces) == len(torus.faces)
    # 14 bits over a unit box: every vertex within half a quantisation step (plus float32).
    assert np.abs(np.sort(decoded.vertices, axis=0) - np.sort(torus.vertices, axis=0)).max() < 1e-4
    result = draco_at_budget(torus, 1000)
    assert chamfer_fscore(torus, result.mesh)["f_score"] == result.detail["f_score"]
    assert result.detail["faces"] == len(result.mesh.faces)


def test_voxel_round_trip_is_exact(torus):
    for resolution in (7, 16, 33):
        grid = voxel_occupancy(torus, resolution)
        assert grid.any() and not grid.all()
        data = voxel_encode(torus, resolution)
        assert data[0] == resolution
        assert np.array_equal(voxel_unpack(data), grid)


def test_voxel_mesh_sits_on_the_grid_and_faces_outward():
    # A box covering voxels 2..5 of an 8^3 grid along every axis: the decoded surface is the
    # iso-0.5 level halfway between occupied and empty voxel centres, i.e. at the box's faces.
    box = trimesh.creation.box([0.5, 0.5, 0.5])
    mesh = voxel_decode(voxel_encode(box, 8))
    assert np.allclose(mesh.bounds, [[-0.25] * 3, [0.25] * 3])
    assert mesh.is_watertight
    assert mesh.volume > 0


def test_voxel_works_on_open_meshes(torus):
    # A band of faces cut away across the ring leaves an open tube: the winding number still
    # tells inside from outside away from the cut.
    open_torus = torus.copy()
    open_torus.update_faces(open_torus.triangles_center[:, 0] < 0.45)
    assert not open_torus.is_watertight
    result = voxel_at_budget(open_torus, 500, reference=torus)
    assert result is not None and result.detail["f_score"] > 0.9
