"""Procedural object families: valid solids of real-world size and proportions, reproducible,
captioned from their parameters, and labelled right inside/outside where parts overlap."""

import numpy as np
import pytest

from vat.errors import VatError
from vat.geometry.families import FAMILIES, family_shape
from vat.geometry.families.parts import box, union
from vat.geometry.inside import contains, signed_distance
from vat.geometry.io import normalize_mesh
from vat.geometry.sampling import occupancy_queries, semi_continuous_occupancy

SEEDS = range(5)


def _check_proportions(shape):
    """What each generator promises about its size (metres) and aspect."""
    p, (width, height, depth) = shape.params, shape.mesh.extents
    if shape.family == "chair":
        assert 0.45 <= height <= 1.4 and max(width, depth) < 0.9
        if p["back"] == "none":  # a stool's top is its seat (splayed round legs may dip a few mm below it)
            assert height == pytest.approx(p["seat_height"], abs=0.005)
        else:
            assert height > p["seat_height"] + 0.25
    elif shape.family == "table":
        assert height == pytest.approx(p["height"], abs=1e-6)
        assert max(width, depth) == pytest.approx(max(p["length"], p["width"]), abs=0.05)
        if p["kind"] != "side table":
            assert max(width, depth) > height
    elif shape.family == "sofa_bed":
        assert max(width, depth) > height if p["kind"] == "bed" or p["seats"] > 1 else height < 1.0
    elif shape.family == "shelf_cabinet":
        assert height == pytest.approx(p["height"], abs=1e-6)
        assert width == pytest.approx(p["width"], abs=0.02) and p["depth"] - 1e-6 <= depth < p["depth"] + 0.06
    elif shape.family == "lamp":
        assert height > max(width, depth) or p["kind"] == "desk lamp"
        if p["kind"] != "desk lamp":
            assert height == pytest.approx(p["height"], abs=1e-6)
    elif shape.family == "vessel":
        assert height == pytest.approx(p["height"], abs=0.03)
        assert max(width, depth) >= 2 * p["radius"] - 1e-6
    elif shape.family == "vehicle":
        assert width == max(width, height, depth) and width == pytest.approx(p["length"], abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_a_watertight_solid_of_plausible_size(family):
    for seed in SEEDS:
        shape = family_shape(family, seed)
        mesh = shape.mesh
        assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        assert mesh.is_watertight and mesh.volume > 0 and mesh.body_count == 1
        assert mesh.bounds[0, 1] == pytest.approx(0.0)  # standing on the floor, y up
        assert (shape.family, shape.seed) == (family, seed)
        _check_proportions(shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_object_and_captions_follow_the_parameters(family):
    a, b = family_shape(family, 3), family_shape(family, 3)
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    assert a.caption == b.caption and a.params == b.params
    shapes = [family_shape(family, seed) for seed in range(12)]
    assert len({s.caption for s in shapes}) >= 4  # the parameters show in the words
    assert len({round(float(s.mesh.volume), 9) for s in shapes}) == len(shapes)
    for s in shapes:
        text, p = s.caption, s.params
        assert text[:2] in ("a ", "an") and text == text.strip()
        if family == "chair":
            assert ("stool" in text) == (p["back"] == "none")
            assert ("armchair" in text) == p["arms"]
        elif family in ("table", "shelf_cabinet", "vessel", "lamp"):
            assert p["kind"] in text
        elif family == "sofa_bed":
            assert ("bed" in text) == (p["kind"] == "bed")


def test_hollow_vessels_are_open_and_bottles_are_solid():
    seen = set()
    for seed in range(20):
        shape = family_shape("vessel", seed)
        middle = np.array([[0.0, 0.6 * shape.params["height"], 0.0]])
        assert contains(shape.mesh, middle)[0] == (shape.params["kind"] == "bottle"), shape.caption
        seen.add(shape.params["kind"])
    assert seen == {"vase", "bottle", "cup", "mug", "bowl"}


def test_overlapping_parts_are_labelled_as_one_solid():
    """Two overlapping boxes: a point in the overlap, beside where one box's face would lie buried,
    is deep inside (the union leaves no buried face to be near), and a point outside is outside."""
    a, b = box((0.6, 0.2, 0.2)), box((0.2, 0.6, 0.2))
    solid = union([a, b])
    assert solid.is_watertight and solid.volume == pytest.approx(a.volume + b.volume - 0.2 ** 3)
    mesh, _ = normalize_mesh(solid)  # sampling works in the unit cube: the boxes become 1 x 1 x 1/3
    inside, outside = np.array([[0.0, 1 / 6, 0.0]]), np.array([[0.4, 0.4, 0.0]])
    sdf = signed_distance(mesh, np.concatenate([inside, outside]))
    assert sdf[0] == pytest.approx(-1 / 6, abs=1e-6) and sdf[1] > 0.1
    np.testing.assert_array_equal(semi_continuous_occupancy(sdf), [1.0, 0.0])
    queries = occupancy_queries(mesh, 2000, 2000, seed=0)  # the labels the training data gets
    deep = np.abs(queries["points"]).max(axis=1) < 1 / 6 - 0.02  # well inside the overlap
    assert deep.any() and (queries["occupancy"][deep] == 1.0).all()


def test_a_chair_leg_inside_its_seat_is_deep_inside():
    """Where a leg's top overlaps the seat, the nearest surface is the seat's (half its thickness
    away, or the seat's edge): no buried face of the leg is left to make the label uncertain."""
    shape = next(s for s in (family_shape("chair", seed) for seed in range(50))
                 if s.params["base"] == "four legs" and s.params["seat_shape"] == "square")
    p = shape.params
    corner = (p["seat_width"] / 2 - p["leg"], p["seat_height"] - p["seat_thickness"] / 2,
              p["seat_depth"] / 2 - p["leg"])
    outside = (0.0, p["seat_height"] / 2, 0.0)  # under the seat, between the legs
    sdf = signed_distance(shape.mesh, np.array([corner, outside]))
    assert sdf[0] == pytest.approx(-min(p["seat_thickness"] / 2, p["leg"]), abs=1e-6)
    assert sdf[1] > 0


def test_unknown_family_is_a_clear_error():
    with pytest.raises(VatError, match="unknown object family 'piano'"):
        family_shape("piano", 0)
