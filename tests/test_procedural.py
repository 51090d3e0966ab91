"""Procedural CSG shapes: reproducible, varied, watertight, in the unit cube, captioned."""

import numpy as np
import pytest

from vat.geometry.procedural import (
    OPERATIONS,
    PART_COUNTS,
    PRIMITIVES,
    Part,
    Recipe,
    caption,
    part_mesh,
    random_recipe,
    random_shape,
)


def test_same_seed_same_shape():
    a, b = random_shape(7), random_shape(7)
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    np.testing.assert_array_equal(a.mesh.faces, b.mesh.faces)
    assert a.caption == b.caption and a.seed == 7


def test_different_seeds_differ():
    shapes = [random_shape(seed) for seed in range(6)]
    signatures = {(len(s.mesh.faces), round(float(s.mesh.volume), 6)) for s in shapes}
    assert len(signatures) == len(shapes)


@pytest.mark.parametrize("seed", range(8))
def test_watertight_in_unit_cube_and_captioned(seed):
    shape = random_shape(seed)
    assert shape.mesh.is_watertight and shape.mesh.volume > 0
    lo, hi = shape.mesh.bounds
    assert (hi - lo).max() == pytest.approx(1.0)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert 0 < len(shape.mesh.faces) < 20_000
    assert shape.caption.strip()


def test_every_primitive_operation_and_size_is_drawn():
    recipes = [random_recipe(seed) for seed in range(60)]
    assert {p.kind for r in recipes for p in r.parts} == set(PRIMITIVES)
    assert {op for r in recipes for op in r.operations} == set(OPERATIONS)
    assert {len(r.parts) for r in recipes} == set(PART_COUNTS)
    assert all(len(r.operations) == len(r.parts) - 1 for r in recipes)


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_each_primitive_is_watertight(kind):
    part = random_recipe(0).parts[0]
    sizes = {"box": (1.0, 0.5, 0.3), "sphere": (0.5, 0.4, 0.3), "torus": (0.4, 0.1)}
    mesh = part_mesh(Part(kind, sizes.get(kind, (0.3, 0.8)), part.transform, kind))
    assert mesh.is_watertight and mesh.volume > 0


def test_captions_read_as_plain_words():
    eye = np.eye(4)
    box, cylinder = Part("box", (1, 1, 0.5), eye, "box"), Part("cylinder", (0.2, 3), eye, "cylinder")
    sphere, torus = Part("sphere", (0.5,) * 3, eye, "sphere"), Part("torus", (0.4, 0.1), eye, "torus")
    assert caption(Recipe((box, cylinder), ("difference",))) == "a box with a cylindrical hole"
    assert caption(Recipe((sphere, torus), ("union",))) == "a sphere joined to a torus"
    assert caption(Recipe((cylinder, box), ("intersection",))) == "the intersection of a cylinder and a box"
    assert caption(Recipe((box, sphere, cylinder), ("union", "difference"))) == (
        "a box joined to a sphere, with a cylindrical hole"
    )
