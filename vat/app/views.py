"""The 3D viewer's files: a mesh as a GLB, lit as the project's renders are, inside the edges of the
decoding grid's box (so every mesh gets the same camera)."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import trimesh

from vat.geometry.extract import GRID_BOUND


@functools.cache
def grid_box() -> trimesh.path.Path3D:
    """The 12 edges of the decoding grid's box (the unit cube and its margin), light grey."""
    corners = np.array(list(itertools.product((-GRID_BOUND, GRID_BOUND), repeat=3)))
    # An edge joins two corners that differ along one axis (a triangulated box's edges_unique also has
    # the faces' diagonals, which cross every view out).
    edges = [(i, j) for i, j in itertools.combinations(range(8), 2) if (corners[i] != corners[j]).sum() == 1]
    path = trimesh.load_path(corners[edges])
    path.colors = [(190, 190, 190, 255)] * len(path.entities)
    return path


def lit(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` in the grey of the project's renders, shaded as vat.geometry.render shades it (Lambert and
    ambient under a light beside the camera) for the viewer's first view, from the front (+Z): the
    shade is baked into the vertex colours, and export_view marks the material unlit, because the
    viewer's own lighting washes a mesh out to a pale lilac. The light counts from either side of a
    surface, so the mesh turned round is lit as well."""
    from vat.geometry.render import AMBIENT, LIGHT_DIRECTION, NEUTRAL_GREY

    facing = np.abs(np.asarray(mesh.vertex_normals) @ LIGHT_DIRECTION)
    shade = NEUTRAL_GREY[0] * (AMBIENT + (1.0 - AMBIENT) * facing)  # the renders' value, written as sRGB
    linear = 255 * shade**2.2  # glTF vertex colours are linear: the viewer turns them back into sRGB
    colours = np.concatenate([np.repeat(linear[:, None], 3, axis=1), np.full((len(linear), 1), 255.0)], axis=1)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colours.round().astype(np.uint8), process=False)


def unlit(tree: dict) -> None:
    """glTF tree post-processor: every primitive is drawn in its vertex colours, without the viewer's lights
    (a primitive without a material gets a white one, which the colours multiply)."""
    materials = tree.setdefault("materials", [])
    for primitive in (p for mesh in tree.get("meshes", []) for p in mesh["primitives"]):
        if "material" not in primitive:
            primitive["material"] = len(materials)
            materials.append({"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}})
    for material in materials:
        material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
    tree["extensionsUsed"] = sorted(set(tree.get("extensionsUsed", [])) | {"KHR_materials_unlit"})


def export_view(mesh, path: Path) -> str:
    """`mesh` (in the unit cube) as a GLB for a 3D viewer, lit as the project's renders are (lit), inside
    the edges of the decoding grid's box. The viewer frames a model by its bounds: with the box, every
    mesh gets the same camera, so a coarse scale's larger or smaller shape shows as such."""
    scene = trimesh.Scene([lit(mesh), grid_box()])
    path.write_bytes(trimesh.exchange.gltf.export_glb(scene, tree_postprocessor=unlit))
    return str(path)
