"""Inside/outside (winding number) against exact tests, distances, and the samplers' labels."""

import numpy as np
import pytest
import trimesh

from vat.geometry import (
    near_surface_points,
    occupancy_queries,
    sample_surface,
    semi_continuous_occupancy,
    signed_distance,
    uniform_points,
    unsigned_distance,
    winding_number,
)
from vat.geometry.inside import contains
from vat.geometry.sampling import band_points


def convex_contains(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Exact inside test for a convex mesh: behind every face plane."""
    offsets = np.einsum("fd,fd->f", mesh.face_normals, mesh.triangles[:, 0])
    return (points @ mesh.face_normals.T - offsets <= 0).all(axis=1)


@pytest.mark.parametrize("shape", ["sphere", "box", "cylinder"])
def test_winding_number_agrees_with_exact_test_on_watertight(shape):
    mesh = {
        "sphere": trimesh.creation.icosphere(3, radius=0.4),
        "box": trimesh.creation.box((0.7, 0.3, 0.5)),
        "cylinder": trimesh.creation.cylinder(0.3, 0.8, sections=24),
    }[shape]
    assert mesh.is_watertight
    points = uniform_points(20_000, seed=1)
    np.testing.assert_array_equal(contains(mesh, points), convex_contains(mesh, points))


def test_winding_number_survives_a_hole():
    mesh = trimesh.creation.icosphere(3, radius=0.4)
    mesh.update_faces(np.arange(len(mesh.faces)) != 0)  # punch a hole: no longer watertight
    assert not mesh.is_watertight
    points = uniform_points(20_000, seed=2)
    exact = np.linalg.norm(points, axis=1) < 0.38  # stay clear of the facets
    far = np.abs(np.linalg.norm(points, axis=1) - 0.39) > 0.03
    np.testing.assert_array_equal(contains(mesh, points)[far], exact[far])
    assert winding_number(mesh, np.zeros((1, 3)))[0] == pytest.approx(1.0, abs=0.05)


def test_distances_to_a_box():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    points = np.array([[0.0, 0.0, 0.0], [0.8, 0.0, 0.0], [0.2, 0.1, 0.0], [1.5, 1.5, 0.5]])
    np.testing.assert_allclose(unsigned_distance(box, points), [0.5, 0.3, 0.3, np.sqrt(2)], atol=1e-9)
    np.testing.assert_allclose(signed_distance(box, points), [-0.5, 0.3, -0.3, np.sqrt(2)], atol=1e-9)


def test_surface_samples_lie_on_surface_with_outward_normals():
    mesh = trimesh.creation.icosphere(4, radius=0.5)
    points, normals = sample_surface(mesh, 5_000, seed=3)
    assert points.shape == normals.shape == (5_000, 3)
    assert unsigned_distance(mesh, points).max() < 1e-5
    assert (np.einsum("nd,nd->n", points, normals) > 0).all()
    again, _ = sample_surface(mesh, 5_000, seed=3)
    np.testing.assert_array_equal(points, again)


def test_surface_samples_are_uniform_by_area():
    # A 2x1 box side has twice the area of a 1x1 side: faces get samples in proportion.
    mesh = trimesh.creation.box((2.0, 1.0, 1.0))
    points, normals = sample_surface(mesh, 60_000, seed=4)
    on_x_faces = np.abs(normals[:, 0]) > 0.5
    assert on_x_faces.mean() == pytest.approx(2 / 10, abs=0.01)


def test_semi_continuous_label():
    band = 1 / 128
    sdf = np.array([-1.0, -band, -band / 2, 0.0, band / 2, band, 1.0])
    np.testing.assert_allclose(semi_continuous_occupancy(sdf), [1, 1, 0.75, 0.5, 0.25, 0, 0])


def test_occupancy_queries_labels_match_geometry():
    mesh = trimesh.creation.icosphere(4, radius=0.4)
    queries = occupancy_queries(mesh, n_uniform=4_000, n_near=4_000, seed=5)
    points, sdf, occupancy = queries["points"], queries["sdf"], queries["occupancy"]
    assert points.shape == (8_000, 3)
    assert np.abs(points[:4_000]).max() <= 0.5
    radius = np.linalg.norm(points, axis=1)
    # The mesh is a polyhedron inscribed in the sphere: its sdf is within the facets' sag.
    np.testing.assert_allclose(sdf, radius - 0.4, atol=2e-3)
    assert ((occupancy > 0.5) == (sdf < 0)).all()
    near = np.abs(sdf[4_000:])
    assert np.median(near) < 0.02 < np.median(np.abs(sdf[:4_000]))


def test_near_and_band_points_stay_near_the_surface():
    mesh = trimesh.creation.box((0.8, 0.8, 0.8))
    near = near_surface_points(mesh, 3_000, sigmas=(0.01,), seed=6)
    assert np.std(unsigned_distance(mesh, near)) < 0.02
    band = band_points(mesh, 3_000, max_distance=0.05, seed=6)
    assert unsigned_distance(mesh, band).max() <= 0.05 + 1e-6


def test_double_sided_and_inverted_parts_still_have_an_inside():
    from vat.geometry.io import clean_mesh

    box = trimesh.creation.box()
    doubled = trimesh.Trimesh(np.vstack([box.vertices, box.vertices]),
                              np.vstack([box.faces, box.faces[:, ::-1] + 8]), process=False)
    centre = np.zeros((1, 3))
    assert not contains(doubled, centre)  # the two windings cancel ...
    cleaned = clean_mesh(doubled)
    assert len(cleaned.faces) == 12 and contains(cleaned, centre)  # ... until one side is dropped
    inverted = box.copy()
    inverted.invert()
    assert contains(inverted, centre)
