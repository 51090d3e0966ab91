"""Procedural training shapes: seeded constructive solid geometry of a few primitives (manifold3d
booleans), each watertight, normalised to the unit cube and captioned in plain words."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from vat.geometry.io import normalize_mesh

log = logging.getLogger(__name__)

PRIMITIVES = ("box", "sphere", "cylinder", "cone", "torus", "capsule")
OPERATIONS = ("union", "difference", "intersection")

# How many primitives a shape has (1..4), and how often.
PART_COUNTS = (1, 2, 3, 4)
PART_COUNT_WEIGHTS = (0.15, 0.4, 0.3, 0.15)
MAX_ATTEMPTS = 32
SECTIONS = 48  # segments around round primitives: smooth enough at 256^3, a few thousand faces

# What a subtracted primitive leaves behind, for captions ("a box with a cylindrical hole").
_CUT_WORDS = {
    "box": "square hole",
    "cylinder": "cylindrical hole",
    "capsule": "rounded slot",
    "sphere": "spherical dent",
    "cone": "conical notch",
    "torus": "ring-shaped groove",
}
# Subtracted primitives stretched long enough to pass right through the shape.
_THROUGH = ("box", "cylinder", "capsule")


@dataclass(frozen=True)
class Part:
    """One primitive: `kind` from PRIMITIVES, its kind-specific `size` parameters before
    `transform` (4x4) is applied, and the `noun` a caption uses for it ("cube", "disc", ...)."""

    kind: str
    size: tuple[float, ...]
    transform: np.ndarray = field(repr=False)
    noun: str


@dataclass(frozen=True)
class Recipe:
    """parts[0], then operations[i] applied to the result so far and parts[i + 1]."""

    parts: tuple[Part, ...]
    operations: tuple[str, ...]


@dataclass
class ProceduralShape:
    mesh: trimesh.Trimesh  # watertight, in the unit cube [-0.5, 0.5]^3
    caption: str
    seed: int
    recipe: Recipe


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _rotation(rng: np.random.Generator) -> np.ndarray:
    # Half the parts stay axis-aligned, as man-made objects mostly are.
    if rng.random() < 0.5:
        axis = rng.integers(3)
        return np.roll(np.eye(3), axis, axis=0) if axis else np.eye(3)
    return Rotation.random(random_state=rng).as_matrix()


def _transform(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def _draw_part(kind: str, scale: float, rng: np.random.Generator, through: bool = False) -> Part:
    """A primitive of about `scale` across; `through` makes a long thin one that pierces a shape."""
    if through:
        width = scale * rng.uniform(0.15, 0.45)
        size = {
            "box": (width, width * rng.uniform(0.6, 1.0), 3.0),
            "cylinder": (width / 2, 3.0),
            "capsule": (width / 2, 3.0),
        }[kind]
        return Part(kind, size, np.eye(4), kind)
    if kind == "box":
        extents = rng.uniform(0.3, 1.0, 3)
        extents /= extents.max()
        ratio = extents.min()
        noun = "cube" if ratio > 0.87 else "plate" if ratio < 0.35 else "box"
        return Part(kind, tuple(scale * extents), np.eye(4), noun)
    if kind == "sphere":
        radii = rng.uniform(0.5, 1.0, 3) if rng.random() < 0.4 else np.ones(3)
        radii /= radii.max()
        noun = "ellipsoid" if radii.min() < 0.9 else "sphere"
        return Part(kind, tuple(scale / 2 * radii), np.eye(4), noun)
    if kind == "cylinder":
        radius, height = scale / 2 * rng.uniform(0.3, 1.0), scale * rng.uniform(0.15, 1.0)
        noun = "disc" if height < 0.5 * radius else "rod" if height > 5 * radius else "cylinder"
        return Part(kind, (radius, height), np.eye(4), noun)
    if kind == "cone":
        return Part(kind, (scale / 2 * rng.uniform(0.4, 1.0), scale * rng.uniform(0.5, 1.0)), np.eye(4), "cone")
    if kind == "torus":
        major = scale / 2 * rng.uniform(0.6, 0.8)
        return Part(kind, (major, major * rng.uniform(0.15, 0.45)), np.eye(4), "torus")
    radius = scale / 2 * rng.uniform(0.2, 0.5)
    return Part(kind, (radius, scale * rng.uniform(0.2, 0.8)), np.eye(4), "capsule")


def random_recipe(seed: int, attempt: int = 0) -> Recipe:
    """The primitives, placements and operations of a shape; cheap (no geometry is built)."""
    rng = np.random.default_rng([seed, attempt])
    count = int(rng.choice(PART_COUNTS, p=PART_COUNT_WEIGHTS))
    base = _draw_part(str(rng.choice(PRIMITIVES)), 1.0, rng)
    parts = [Part(base.kind, base.size, _transform(_rotation(rng), (0, 0, 0)), base.noun)]
    operations = []
    for _ in range(count - 1):
        op = str(rng.choice(OPERATIONS))
        kind = str(rng.choice(PRIMITIVES))
        through = op == "difference" and kind in _THROUGH
        if op == "union":
            # Overlaps the shape but sticks out of it.
            part, offset = _draw_part(kind, rng.uniform(0.4, 0.9), rng), rng.uniform(0.25, 0.55)
        elif op == "difference":
            part = _draw_part(kind, rng.uniform(0.3, 0.7), rng, through=through)
            offset = rng.uniform(0.0, 0.2) if through else rng.uniform(0.3, 0.55)
        else:
            part, offset = _draw_part(kind, rng.uniform(0.8, 1.3), rng), rng.uniform(0.0, 0.3)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        transform = _transform(_rotation(rng), direction * offset)
        parts.append(Part(part.kind, part.size, transform, part.noun))
        operations.append(op)
    return Recipe(tuple(parts), tuple(operations))


def part_mesh(part: Part) -> trimesh.Trimesh:
    """The watertight mesh of one primitive, centred, then moved by its transform."""
    if part.kind == "box":
        mesh = trimesh.creation.box(extents=part.size)
    elif part.kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=3)
        mesh.apply_scale(part.size)
    elif part.kind == "cylinder":
        mesh = trimesh.creation.cylinder(part.size[0], part.size[1], sections=SECTIONS)
    elif part.kind == "cone":
        mesh = trimesh.creation.cone(part.size[0], part.size[1], sections=SECTIONS)
        mesh.apply_translation((0, 0, -part.size[1] / 2))  # trimesh puts the base at z = 0
    elif part.kind == "torus":
        mesh = trimesh.creation.torus(part.size[0], part.size[1], SECTIONS, SECTIONS // 2)
    elif part.kind == "capsule":
        mesh = trimesh.creation.capsule(height=part.size[1], radius=part.size[0], count=[SECTIONS // 2] * 2)
    else:
        raise ValueError(f"unknown primitive {part.kind!r}; expected one of {PRIMITIVES}")
    mesh.apply_transform(part.transform)
    return mesh


def _combine(shape: trimesh.Trimesh, part: trimesh.Trimesh, op: str) -> trimesh.Trimesh | None:
    """The boolean, or None when it is degenerate: empty, in pieces, or no visible effect."""
    result = getattr(trimesh.boolean, op)([shape, part], engine="manifold")
    if len(result.faces) == 0 or result.volume <= 1e-6 or result.body_count != 1:
        return None
    before = min(shape.volume, part.volume) if op == "intersection" else shape.volume
    if op != "union" and not 0.03 * before < result.volume < 0.97 * before:
        return None
    return result


def build(recipe: Recipe) -> trimesh.Trimesh | None:
    """The recipe's solid (not normalised), or None if any boolean step is degenerate."""
    shape = part_mesh(recipe.parts[0])
    for op, part in zip(recipe.operations, recipe.parts[1:]):
        shape = _combine(shape, part_mesh(part), op)
        if shape is None:
            return None
    return shape


def caption(recipe: Recipe) -> str:
    """Plain words for a recipe: "a box with a cylindrical hole", "a sphere joined to a torus"."""
    named = [recipe.parts[0].noun]

    def name(noun: str) -> str:
        text = f"another {noun}" if noun in named else _article(noun)
        named.append(noun)
        return text

    text = _article(recipe.parts[0].noun)
    previous = None
    for op, part in zip(recipe.operations, recipe.parts[1:]):
        comma = "" if previous is None else ","
        if op == "union":
            text += f"{comma} joined to {name(part.noun)}"
        elif op == "difference":
            cut = name(_CUT_WORDS[part.kind])
            text += f" and {cut}" if previous == "difference" else f"{comma} with {cut}"
        elif previous is None:
            text = f"the intersection of {text} and {name(part.noun)}"
        else:
            text += f", intersected with {name(part.noun)}"
        previous = op
    return text


def random_shape(seed: int) -> ProceduralShape:
    """A reproducible random shape: the same seed gives the same mesh and caption.

    Recipes whose booleans come out degenerate are redrawn (attempt 1, 2, ... of the same seed);
    if all fail, the first recipe's base primitive alone is used.
    """
    for attempt in range(MAX_ATTEMPTS):
        recipe = random_recipe(seed, attempt)
        mesh = build(recipe)
        if mesh is not None:
            break
    else:
        log.warning("procedural seed %d: every recipe was degenerate; using one primitive", seed)
        recipe = random_recipe(seed, 0)
        recipe = Recipe(recipe.parts[:1], ())
        mesh = part_mesh(recipe.parts[0])
    mesh, _ = normalize_mesh(mesh)
    return ProceduralShape(mesh=mesh, caption=caption(recipe), seed=seed, recipe=recipe)
