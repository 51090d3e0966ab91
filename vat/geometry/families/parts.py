"""Building blocks of the object families: boxes, rounded boxes, rods, revolved (lathe) solids and
their boolean union, in metres, Y up (the floor is y = 0, the front faces +z)."""

from __future__ import annotations

import numpy as np
import trimesh

SECTIONS = 32  # segments around round parts: smooth at 256^3, a few hundred faces each


def box(extents, centre=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """An axis-aligned box of `extents` (x, y, z) centred at `centre`."""
    mesh = trimesh.creation.box(extents=np.asarray(extents, dtype=float))
    mesh.apply_translation(centre)
    return mesh


def on_floor(extents, x=0.0, y=0.0, z=0.0) -> trimesh.Trimesh:
    """A box whose bottom face is at height `y` (centred at x, z)."""
    return box(extents, (x, y + extents[1] / 2, z))


def rounded_box(extents, centre=(0.0, 0.0, 0.0), radius: float = 0.03) -> trimesh.Trimesh:
    """A box with edges and corners rounded by `radius` (the convex hull of eight corner spheres):
    cushions, mattresses, car bodies."""
    extents = np.asarray(extents, dtype=float)
    radius = float(min(radius, 0.49 * extents.min()))
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=radius).vertices
    inner = extents / 2 - radius
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * inner
    points = (corners[:, None, :] + sphere[None]).reshape(-1, 3) + np.asarray(centre, dtype=float)
    return trimesh.convex.convex_hull(points)


def hull(points) -> trimesh.Trimesh:
    """The convex hull of points [N, 3]: wedges, trapezoid cabins, tapered legs."""
    return trimesh.convex.convex_hull(np.asarray(points, dtype=float))


def rod(radius: float, start, end, sections: int = SECTIONS) -> trimesh.Trimesh:
    """A cylinder of `radius` from point `start` to point `end`."""
    return trimesh.creation.cylinder(radius=radius, segment=[start, end], sections=sections)


def disc(radius: float, height: float, y: float = 0.0, x: float = 0.0, z: float = 0.0) -> trimesh.Trimesh:
    """An upright cylinder whose bottom is at height `y`."""
    return rod(radius, (x, y, z), (x, y + height, z))


def wheel(radius: float, width: float, centre) -> trimesh.Trimesh:
    """A cylinder with its axis along z (a vehicle's wheel; vehicles drive along x)."""
    centre = np.asarray(centre, dtype=float)
    half = np.array([0.0, 0.0, width / 2])
    return rod(radius, centre - half, centre + half)


def lathe(profile, sections: int = SECTIONS * 2) -> trimesh.Trimesh:
    """The solid swept by the closed profile [(radius, height), ...] turned about the y axis.
    The profile should start and end on the axis (radius 0); its direction does not matter."""
    mesh = trimesh.creation.revolve(np.asarray(profile, dtype=float), sections=sections)
    if mesh.volume < 0:
        mesh.invert()
    # revolve turns about z; rotate z to y (a proper rotation keeps the faces outward).
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
    return mesh


def frustum(bottom_radius: float, top_radius: float, height: float, y: float = 0.0) -> trimesh.Trimesh:
    """A truncated cone standing at height `y` (a lamp shade, a tapered leg)."""
    return lathe([(0, y), (bottom_radius, y), (top_radius, y + height), (0, y + height)])


def union(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """One watertight solid from overlapping parts (manifold3d), so that no face lies buried inside
    another part: surface samples then lie on the visible surface, and a point near where two parts
    meet is labelled by its distance to that surface."""
    if len(parts) == 1:
        return parts[0]
    return trimesh.boolean.union(parts, engine="manifold")


def difference(solid: trimesh.Trimesh, cut: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.boolean.difference([solid, cut], engine="manifold")


def pick(rng: np.random.Generator, options, weights=None):
    """One of `options` (a plain Python value), with optional relative weights."""
    p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
    return options[int(rng.choice(len(options), p=p))]


def article(words: str) -> str:
    return ("an " if words[:1] in "aeiou" or words.startswith("L-") else "a ") + words


def join(phrases: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    phrases = [p for p in phrases if p]
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
