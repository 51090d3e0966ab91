"""The evaluation protocol against analytic answers on spheres and boxes."""

import numpy as np
import pytest
import trimesh

from vat.geometry.inside import contains
from vat.geometry.io import normalize_mesh
from vat.geometry.sampling import sample_surface
from vat.metrics import (
    F_SCORE_TAU,
    ICP_TARGET_FACTOR,
    MATCH_SAMPLES,
    SURFACE_SAMPLES,
    accuracy,
    chamfer_fscore,
    compare_meshes,
    cs_iou,
    icp_align,
    iou,
    match_chamfer_matrix,
    match_ranks,
    near_queries,
    protocol_queries,
)

RADIUS = 0.5
SHIFT = 0.02
# Binomial standard error of a share near 0.5 measured on the protocol's 10k samples.
SHARE_STD = np.sqrt(0.25 / SURFACE_SAMPLES)


@pytest.fixture(scope="module")
def sphere():
    # Subdivision 5: the facets stay within 1e-4 of the true sphere, far below tau.
    return trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)


def shifted(mesh, offset):
    out = mesh.copy()
    out.apply_translation(offset)
    return out


def test_mesh_against_itself_is_perfect(sphere):
    scores = chamfer_fscore(sphere, sphere)
    assert scores["f_score"] == 1.0
    assert scores["chamfer"] < 1e-6


def test_offset_surface_is_outside_tau_everywhere(sphere):
    grown = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS + SHIFT)
    scores = chamfer_fscore(sphere, grown)
    assert scores["f_score"] == 0.0
    assert scores["f_score_005"] == 1.0  # SHIFT = 0.02 is within the wide tau everywhere
    # Every point is SHIFT from the other surface, in both directions.
    assert scores["chamfer"] == pytest.approx(2 * SHIFT, abs=1e-3)


def test_translated_sphere_matches_analytic_share(sphere):
    # A point at polar angle theta (from the shift axis) is |r - |p - c|| from the shifted
    # sphere; solving for distance tau gives cos(theta) in [(d^2 - 2 r tau - tau^2) / (2 r d),
    # (d^2 + 2 r tau - tau^2) / (2 r d)], an interval of length 2 tau / d = 1. cos(theta) is
    # uniform on [-1, 1] for uniform surface points, so precision = recall = 0.5 exactly; and
    # the mean distance is d * E|cos| = d / 2 per direction.
    scores = chamfer_fscore(sphere, shifted(sphere, [SHIFT, 0, 0]))
    assert 2 * F_SCORE_TAU / SHIFT == pytest.approx(1.0)
    for key in ("precision", "recall", "f_score"):
        assert scores[key] == pytest.approx(0.5, abs=5 * SHARE_STD)
    assert scores["chamfer"] == pytest.approx(SHIFT, rel=0.05)


def test_icp_undoes_translation(sphere):
    scores = compare_meshes(sphere, shifted(sphere, [SHIFT, 0, 0]), icp=True, normalize="none")
    assert scores["f_score"] > 0.999
    assert scores["chamfer"] < 1e-3


def test_icp_undoes_a_turn_that_traps_identity_start():
    # A bar with a knob at one end, turned by 170 degrees: ICP from the identity settles with
    # the knob at the wrong end; the cube-rotation starts find the true pose.
    body = trimesh.creation.box([0.8, 0.3, 0.2])
    knob = trimesh.creation.icosphere(subdivisions=3, radius=0.12)
    knob.apply_translation([0.35, 0.1, 0.1])
    shape = trimesh.util.concatenate([body, knob])
    transform = trimesh.transformations.rotation_matrix(np.radians(170), [0, 0.1, 1])
    transform[:3, 3] = [0.05, -0.05, 0.0]
    moved = shape.copy()
    moved.apply_transform(transform)
    trapped, _ = icp_align(moved, shape, try_rotations=False)
    assert chamfer_fscore(shape, trapped)["f_score"] < 0.9
    aligned, matrix = icp_align(moved, shape)
    assert np.allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.det(matrix[:3, :3]) == pytest.approx(1.0)
    assert np.allclose(matrix, np.linalg.inv(transform), atol=0.02)
    assert chamfer_fscore(shape, aligned)["f_score"] > 0.999


def test_normalize_modes_on_scaled_shifted_sphere(sphere):
    big = sphere.copy()
    big.apply_scale(10.0)
    # Shifted by 0.2 at scale 10 (diameter 10): 0.02 once in the unit cube.
    moved = shifted(big, [10 * SHIFT, 0, 0])
    kept = compare_meshes(big, moved, normalize="reference")
    assert kept["f_score"] == pytest.approx(0.5, abs=5 * SHARE_STD)
    assert kept["chamfer"] == pytest.approx(SHIFT, rel=0.05)
    removed = compare_meshes(big, moved, normalize="each")
    assert removed["f_score"] == 1.0
    assert removed["chamfer"] < 1e-6
    # Unnormalised, the same offset is 10x larger than tau: nothing matches.
    assert compare_meshes(big, moved, normalize="none")["f_score"] < 0.2
    with pytest.raises(ValueError):
        compare_meshes(big, moved, normalize="bogus")


def _four_shapes():
    """A box, a sphere, a bar with a knob and a flat disc, each normalised, in random poses."""
    bar = trimesh.util.concatenate([trimesh.creation.box([0.8, 0.3, 0.2]),
                                    trimesh.creation.icosphere(3, radius=0.12).apply_translation([0.35, 0.1, 0.1])])
    shapes = [trimesh.creation.box([0.6, 0.4, 0.3]), trimesh.creation.icosphere(3, radius=0.5), bar,
              trimesh.creation.cylinder(radius=0.5, height=0.1)]
    return [normalize_mesh(shape)[0] for shape in shapes]


def test_match_matrix_finds_each_shape_in_any_pose():
    """Generations that are the shapes themselves, turned and moved (other samples), are nearest
    to their own shape: rank 1 everywhere; shifted by one, none is."""
    shapes = _four_shapes()
    rng = np.random.default_rng(0)
    moved = []
    for k, shape in enumerate(shapes):
        turned = shape.copy()
        transform = trimesh.transformations.rotation_matrix(np.radians(90 * k + 10), [0, 0.2, 1])
        transform[:3, 3] = [0.05 * k, -0.03, 0.02]
        moved.append(turned.apply_transform(transform))
    generated = [sample_surface(mesh, MATCH_SAMPLES, rng)[0] for mesh in moved]
    references = [sample_surface(mesh, MATCH_SAMPLES * ICP_TARGET_FACTOR, rng)[0] for mesh in shapes]
    chamfer = match_chamfer_matrix(generated, references)
    assert chamfer.shape == (4, 4) and (chamfer > 0).all()
    assert list(match_ranks(chamfer)) == [1, 1, 1, 1]
    assert np.diagonal(chamfer).max() < 0.08 < np.min(chamfer + np.eye(4))  # own shape: about the sample spacing
    assert (match_ranks(match_chamfer_matrix(generated[1:] + generated[:1], references)) > 1).all()


def test_match_ranks_count_strictly_nearer_references():
    chamfer = np.array([[0.1, 0.2, 0.05], [0.3, 0.3, 0.3], [0.2, 0.1, 0.4]])
    assert list(match_ranks(chamfer)) == [2, 1, 3]  # a tie does not push a generation down
    # Rows need not be the diagonal: generation g's own reference is own[g].
    assert list(match_ranks(chamfer[[0, 2]], own=[0, 2])) == [2, 3]


def box_at(extents, centre):
    box = trimesh.creation.box(extents)
    box.apply_translation(centre)
    return box


def test_iou_of_overlapping_boxes_on_uniform_queries():
    # Two 0.5^3 boxes overlapping in 0.25 x 0.5 x 0.5: IoU = 1/3 of the cube volume shares.
    a = box_at([0.5, 0.5, 0.5], [-0.125, 0, 0])
    b = box_at([0.5, 0.5, 0.5], [0.125, 0, 0])
    n = 40_000
    queries = protocol_queries(a, n_uniform=n, n_near=0)
    assert queries["points"].shape == (n, 3)
    assert np.abs(queries["points"]).max() <= 0.5
    value = iou(contains(b, queries["points"]), queries["inside"])
    # Queries in the union are a binomial draw of ~n * 0.1875; overlap share 1/3 among them.
    in_union = n * 0.1875
    assert value == pytest.approx(1 / 3, abs=5 * np.sqrt(1 / 3 * 2 / 3 / in_union))


def test_protocol_query_set_layout():
    box = box_at([0.6, 0.6, 0.6], [0, 0, 0])
    queries = protocol_queries(box, n_uniform=1000, n_near=500, seed=3)
    assert queries["points"].shape == (1500, 3)
    assert queries["inside"].dtype == bool
    # Uniform share of a 0.6^3 box in the unit cube.
    assert queries["inside"][:1000].mean() == pytest.approx(0.216, abs=0.07)
    # Near-surface queries straddle the surface roughly evenly.
    assert 0.3 < queries["inside"][1000:].mean() < 0.7
    again = protocol_queries(box, n_uniform=1000, n_near=500, seed=3)
    assert np.array_equal(again["points"], queries["points"])


def test_near_queries_lie_within_the_band(sphere):
    queries = near_queries(sphere, count=2000, max_distance=0.05)
    radius = np.linalg.norm(queries["points"], axis=1)
    assert np.abs(radius - RADIUS).max() <= 0.05 + 1e-3
    # The facets sit up to ~1e-4 inside the true sphere: judge only points clear of them.
    clear = np.abs(radius - RADIUS) > 1e-3
    assert np.array_equal(queries["inside"][clear], (radius < RADIUS)[clear])


def test_accuracy_iou_and_cs_iou():
    rng = np.random.default_rng(0)
    gt = rng.random(1000) < 0.3
    assert accuracy(gt, gt) == 1.0
    assert iou(gt, gt) == 1.0
    assert accuracy(~gt, gt) == 0.0
    assert iou(~gt, gt) == 0.0
    empty = np.zeros(10, bool)
    assert iou(empty, empty) == 1.0
    assert iou(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(1 / 3)
    assert cs_iou([0.2, 0.4, 0.9]) == pytest.approx(0.5)
