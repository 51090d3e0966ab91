"""Procedural object families: everyday objects (chairs, tables, sofas and beds, shelves and cabinets,
lamps, lathe-turned vessels, vehicles) built from parts with widely sampled parameters, captioned
from those parameters. Meshes are watertight solids in metres, Y up, standing on the floor y = 0,
front towards +z; the same (family, seed) always gives the same mesh and caption."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import trimesh

from vat.errors import VatError
from vat.geometry.families import furniture, furnishings, objects
from vat.geometry.families.parts import union

_GENERATORS = {
    "chair": furniture.chair,  # chairs, armchairs and stools
    "table": furniture.table,  # dining and coffee tables, desks, side tables
    "sofa_bed": furnishings.sofa_bed,
    "shelf_cabinet": furnishings.shelf_cabinet,  # bookcases, cabinets, chests of drawers, wardrobes
    "lamp": objects.lamp,  # floor, table and desk lamps
    "vessel": objects.vessel,  # lathe objects: vases, bottles, cups, mugs, bowls
    "vehicle": objects.vehicle,  # cars, vans, trucks, buses
}
FAMILIES = tuple(_GENERATORS)


@dataclass
class FamilyShape:
    mesh: trimesh.Trimesh  # watertight, in metres, Y up, on the floor y = 0
    caption: str
    family: str
    seed: int
    params: dict  # what was sampled (sizes in metres), for captions and tests


def family_shape(family: str, seed: int) -> FamilyShape:
    """A reproducible object of `family` (one of FAMILIES): the same seed gives the same mesh and caption."""
    if family not in _GENERATORS:
        raise VatError(f"unknown object family {family!r}; expected one of {', '.join(FAMILIES)}")
    # Each family has its own stream, so seed 3 of chairs and seed 3 of lamps are unrelated draws.
    rng = np.random.default_rng([zlib.crc32(family.encode()), seed])
    parts, caption, params = _GENERATORS[family](rng)
    mesh = union(parts) if isinstance(parts, list) else parts
    mesh.apply_translation((0, -mesh.bounds[0, 1], 0))  # stand on the floor
    return FamilyShape(mesh=mesh, caption=caption, family=family, seed=seed, params=params)
