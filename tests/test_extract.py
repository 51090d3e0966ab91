"""Occupancy field -> mesh: world coordinates, orientation, coarse-to-fine against dense, errors,
post-processing, all checked on analytic signed distance functions."""

import numpy as np
import trimesh
import pytest

from vat.errors import VatError
from vat.geometry.analytic import bench_shape_sdf, box_sdf, sphere_sdf, union
from vat.geometry.extract import (FLOATER_FRACTION, GRID_BOUND, _upsample, drop_floaters, evaluate_grid,
                                  extract_mesh, grid_points, postprocess)
from vat.metrics import chamfer_fscore


def occupancy(sdf):
    return lambda points: -sdf(points)


@pytest.mark.parametrize("bound", [GRID_BOUND, 0.7])
def test_dense_sphere_has_the_analytic_radius_volume_and_outward_faces(bound):
    center, radius, resolution = np.array([0.05, -0.03, 0.02]), 0.3, 64
    mesh, stats = extract_mesh(occupancy(sphere_sdf(center, radius)), resolution, method="dense", bound=bound)
    cell = 2 * bound / resolution
    radii = np.linalg.norm(mesh.vertices - center, axis=1)
    assert np.abs(radii - radius).max() < cell
    assert mesh.is_watertight
    assert mesh.volume > 0
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.02)
    assert stats.queries == (resolution + 1) ** 3


def test_grid_is_ij_indexed_so_a_box_long_in_x_comes_out_long_in_x():
    half = np.array([0.4, 0.2, 0.1])
    for method in ("dense", "coarse_to_fine"):
        mesh, _ = extract_mesh(occupancy(box_sdf((0, 0, 0), half)), 64, method=method, coarse_resolution=16)
        np.testing.assert_allclose(mesh.extents, 2 * half, atol=2 * GRID_BOUND / 64)


def test_coarse_to_fine_gives_the_dense_mesh_with_fewer_queries():
    fn = occupancy(bench_shape_sdf())
    dense_mesh, dense = extract_mesh(fn, 128, method="dense")
    c2f_mesh, c2f = extract_mesh(fn, 128, method="coarse_to_fine", coarse_resolution=32)
    assert chamfer_fscore(dense_mesh, c2f_mesh, samples=5_000)["chamfer"] < 1e-4
    assert len(c2f_mesh.faces) == len(dense_mesh.faces)
    assert c2f.queries < dense.queries / 5


def test_evaluate_grid_gives_the_field_at_the_grid_points():
    """What the outline search reads: dense is the function at every ij-indexed grid point; coarse to
    fine has the same sign everywhere on a smooth shape, from fewer queries."""
    fn = occupancy(bench_shape_sdf())
    axis = grid_points(48)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    dense, dense_stats = evaluate_grid(fn, 48, method="dense")
    np.testing.assert_allclose(dense.reshape(-1), fn(points), rtol=1e-6, atol=1e-7)
    c2f, c2f_stats = evaluate_grid(fn, 48, coarse_resolution=24)
    assert np.array_equal(c2f > 0, dense > 0)
    assert c2f_stats.queries < dense_stats.queries / 2 and dense_stats.queries == 49 ** 3


def test_coarse_to_fine_query_savings_grow_with_resolution():
    fn = occupancy(bench_shape_sdf())
    ratios = []
    for resolution in (32, 64, 128):
        _, c2f = extract_mesh(fn, resolution, coarse_resolution=32)
        ratios.append((resolution + 1) ** 3 / c2f.queries)
    assert ratios[0] == 1  # the coarse grid is the whole grid: nothing to save
    assert ratios[0] < ratios[1] < ratios[2]


def test_coarse_to_fine_accepts_probabilities_at_level_one_half():
    sigmoid = lambda points: 1 / (1 + np.exp(sphere_sdf((0, 0, 0), 0.35)(points) / 0.01))  # noqa: E731
    mesh, _ = extract_mesh(sigmoid, 64, level=0.5, coarse_resolution=16)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.35).max() < 2 * GRID_BOUND / 64
    assert mesh.volume > 0


def test_upsampling_is_exact_for_trilinear_fields():
    coarse, fine = grid_points(8), grid_points(16)
    field = lambda x, y, z: 0.3 * x - 2 * y + z + 4 * x * y * z + 0.1  # noqa: E731
    upsampled = _upsample(field(*np.meshgrid(coarse, coarse, coarse, indexing="ij")))
    np.testing.assert_allclose(upsampled, field(*np.meshgrid(fine, fine, fine, indexing="ij")), atol=1e-6)


@pytest.mark.parametrize("method", ["dense", "coarse_to_fine"])
def test_a_field_without_surface_raises(method):
    with pytest.raises(VatError, match="no surface at level 0.5"):
        extract_mesh(lambda points: np.zeros(len(points)), 32, level=0.5, method=method, coarse_resolution=8)


def test_bad_functions_and_arguments_raise():
    with pytest.raises(VatError, match="NaN"):
        extract_mesh(lambda points: np.full(len(points), np.nan), 16, method="dense")
    with pytest.raises(VatError, match="values for"):
        extract_mesh(lambda points: np.zeros(3), 16, method="dense")
    with pytest.raises(VatError, match="unknown extraction method"):
        extract_mesh(occupancy(sphere_sdf()), 16, method="octree")


def test_postprocess_removes_a_floater_and_decimates_to_the_target():
    big, small = sphere_sdf((-0.1, 0, 0), 0.3), sphere_sdf((0.38, 0.38, 0.38), 0.03)
    mesh, _ = extract_mesh(occupancy(union(big, small)), 64, method="dense")
    assert len(mesh.split(only_watertight=False)) == 2

    cleaned = postprocess(mesh)
    assert len(cleaned.split(only_watertight=False)) == 1
    assert np.linalg.norm(cleaned.vertices - [-0.1, 0, 0], axis=1).max() < 0.31
    assert cleaned.is_watertight and cleaned.volume > 0

    decimated = postprocess(mesh, target_faces=2_000)
    assert len(decimated.faces) == pytest.approx(2_000, rel=0.05)
    assert decimated.volume == pytest.approx(cleaned.volume, rel=0.03)
    assert postprocess(mesh, remove_floaters=False).area == pytest.approx(mesh.area)


def test_floater_removal_keeps_the_largest_part_by_volume_not_by_faces_or_area():
    """A coarse box (12 faces) beside a finely tessellated small ball (more faces) and a wide thin sheet (more
    area): the box is the main part; the sheet (3.9% of its volume) and the ball (3.4%) are floaters."""
    box = trimesh.creation.box((0.5, 0.5, 0.5)).apply_translation((-0.2, 0, 0))
    ball = trimesh.creation.icosphere(5, radius=0.1).apply_translation((0.35, 0.3, 0.3))
    sheet = trimesh.creation.box((0.9, 0.9, 0.006)).apply_translation((0.1, 0, -0.45))
    assert len(ball.faces) > len(box.faces) and sheet.area > box.area
    assert 0.03 < ball.volume / box.volume < 0.05 and 0.03 < sheet.volume / box.volume < 0.05
    cleaned = postprocess(trimesh.util.concatenate([ball, sheet, box]))
    assert len(cleaned.split(only_watertight=False)) == 1
    assert np.allclose(cleaned.bounds, box.bounds) and cleaned.volume == pytest.approx(box.volume)
    # A part with a sensible share of the volume stays: a second box of a quarter of the first's volume.
    second = trimesh.creation.box((0.5, 0.5, 0.125)).apply_translation((0.3, 0, 0.3))
    assert len(postprocess(trimesh.util.concatenate([box, second, ball])).split(only_watertight=False)) == 2


def test_a_grids_floaters_go_as_a_meshs_do():
    grid = np.zeros((20, 20, 20), dtype=bool)
    grid[2:12, 2:12, 2:12] = True  # the body: 1,000 cells
    grid[15:19, 15:19, 15:19] = True  # 64 cells: 6.4% of the body, kept
    grid[15:18, 2:5, 15:18] = True  # 27 cells: 2.7%, a floater
    grid[14, 14, 14] = True  # meets the 64-cell block only at a corner: its own component, a floater
    cleaned = drop_floaters(grid)
    assert cleaned.sum() == 1000 + 64 and cleaned[2:12, 2:12, 2:12].all() and cleaned[15:19, 15:19, 15:19].all()
    assert not cleaned[15:18, 2:5, 15:18].any() and not cleaned[14, 14, 14]
    assert drop_floaters(grid, fraction=0.07).sum() == 1000 and FLOATER_FRACTION == 0.05
    assert (drop_floaters(grid[:13, :13, :13]) == grid[:13, :13, :13]).all()  # one component: as it was
    assert not drop_floaters(np.zeros((4, 4, 4), bool)).any()
