"""Meshes as the arrays the renderer draws (vat.geometry.render): one Part per material, in
normalised coordinates, with crease-aware shading normals, vertex colours, UVs and a base colour."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import trimesh

from vat.errors import MeshError
from vat.geometry.io import normalization_transform

NEUTRAL_GREY = (0.7, 0.7, 0.7, 1.0)
# Edges bent more than this stay sharp in the shading (as Blender's auto smooth does).
CREASE_DEGREES = 40.0


@dataclass
class Part:
    """One drawable piece of a mesh (one material), in normalised coordinates."""

    positions_V3: np.ndarray  # float64 as read, float32 once normalised
    normals_V3: np.ndarray  # float32, smooth but sharp at creases (zero where undefined)
    faces_F3: np.ndarray  # uint32
    colors_V4: np.ndarray | None  # uint8 vertex colours
    uv_V2: np.ndarray | None  # float32, v up (OBJ/trimesh convention)
    image: object | None  # PIL image of the base colour
    base_color: tuple  # RGBA in [0, 1], multiplies colours and texture


def color01(value, default=NEUTRAL_GREY) -> tuple:
    if value is None:
        return default
    rgba = trimesh.visual.color.to_rgba(np.asarray(value).reshape(1, -1))[0]
    return tuple(float(c) / 255.0 for c in rgba)


def shading_normals(vertices_V3: np.ndarray, faces_F3: np.ndarray, crease_degrees: float = CREASE_DEGREES):
    """Smooth normals that stay sharp at creases: (corner_group_3F, normals_G3).

    The corners of faces that meet at a vertex over an edge bent less than `crease_degrees` share
    one group and one normal (area-weighted sum of their faces' normals); a box gets flat faces, a
    sphere smooth ones. Adjacency is found on welded positions, so UV seams (split vertices) do not
    show. Faces wound against their neighbour are not joined: their normals would cancel."""
    num_faces = len(faces_F3)
    corners = vertices_V3[faces_F3]
    face_normals_F3 = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(face_normals_F3, axis=1, keepdims=True)
    unit_F3 = np.divide(face_normals_F3, length, out=np.zeros_like(face_normals_F3), where=length > 0)
    # Exact duplicates by their bytes (+ 0.0 turns -0.0 into 0.0): much faster than unique(axis=0).
    keys = np.ascontiguousarray(vertices_V3 + 0.0).view(np.dtype((np.void, 3 * vertices_V3.itemsize))).ravel()
    _, weld = np.unique(keys, return_inverse=True)
    welded_F3 = weld.reshape(-1)[faces_F3]
    edges_E2 = np.sort(welded_F3[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    edge_face_E = np.repeat(np.arange(num_faces), 3)
    order = np.lexsort((edges_E2[:, 1], edges_E2[:, 0]))
    edges_E2, edge_face_E = edges_E2[order], edge_face_E[order]
    # Faces sharing an edge sit next to each other once edges are sorted (a chain where non-manifold).
    pair = np.nonzero((edges_E2[1:] == edges_E2[:-1]).all(axis=1))[0]
    face_a, face_b, shared_P2 = edge_face_E[pair], edge_face_E[pair + 1], edges_E2[pair]
    smooth = (unit_F3[face_a] * unit_F3[face_b]).sum(axis=1) > math.cos(math.radians(crease_degrees))
    face_a, face_b, shared_P2 = face_a[smooth], face_b[smooth], shared_P2[smooth]
    rows, cols = [], []
    for end in (0, 1):  # join the two faces' corners at both ends of the shared edge
        vertex = shared_P2[:, end, None]
        rows.append(3 * face_a + (welded_F3[face_a] == vertex).argmax(axis=1))
        cols.append(3 * face_b + (welded_F3[face_b] == vertex).argmax(axis=1))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(3 * num_faces,) * 2)
    _, group_3F = scipy.sparse.csgraph.connected_components(graph, directed=False)
    corner_face = np.repeat(np.arange(num_faces), 3)
    normals_G3 = np.stack([np.bincount(group_3F, face_normals_F3[corner_face, k]) for k in range(3)], axis=1)
    length = np.linalg.norm(normals_G3, axis=1, keepdims=True)
    return group_3F, np.divide(normals_G3, length, out=np.zeros_like(normals_G3), where=length > 0)


def material_of(visual) -> tuple[object | None, tuple]:
    """(base-colour image, base-colour factor) of a TextureVisuals' material.

    glTF (PBRMaterial): the factor multiplies the texture, as the spec says. OBJ/MTL
    (SimpleMaterial): map_Kd replaces Kd, as Blender's importer does."""
    material = getattr(visual, "material", None)
    if material is None:
        return None, NEUTRAL_GREY
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        return material.baseColorTexture, color01(material.baseColorFactor, (1.0, 1.0, 1.0, 1.0))
    image = getattr(material, "image", None)
    if image is not None:
        return image, (1.0, 1.0, 1.0, 1.0)
    return None, color01(getattr(material, "diffuse", None))


def part_of(mesh: trimesh.Trimesh) -> Part | None:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        return None
    keep = np.isfinite(vertices).all(axis=1)[faces].all(axis=1)
    faces = faces[keep]
    if len(faces) == 0:
        return None
    vertices = np.nan_to_num(vertices)
    group_3F, normals_G3 = shading_normals(vertices, faces)

    vertex_colors = face_colors = uv = image = None
    base_color = NEUTRAL_GREY
    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        vertex_colors, base_color = np.asarray(visual.vertex_colors, dtype=np.uint8), (1.0, 1.0, 1.0, 1.0)
    elif kind == "face":
        face_colors, base_color = np.asarray(visual.face_colors, dtype=np.uint8)[keep], (1.0, 1.0, 1.0, 1.0)
    elif kind == "texture":
        image, base_color = material_of(visual)
        uv_visual = getattr(visual, "uv", None)
        if image is not None and uv_visual is not None and len(uv_visual) == len(vertices):
            uv = np.nan_to_num(np.asarray(uv_visual, dtype=np.float32).reshape(-1, 2))
        else:
            image = None

    # One GPU vertex per (normal group, source of the other attributes): the file's vertex, or the
    # face where colours are per face.
    corner_vertex = faces.reshape(-1)
    source, num_sources = (np.arange(3 * len(faces)) // 3, len(faces)) if face_colors is not None \
        else (corner_vertex, len(vertices))
    _, first, inverse = np.unique(group_3F.astype(np.int64) * num_sources + source,
                                  return_index=True, return_inverse=True)
    return Part(
        positions_V3=vertices[corner_vertex[first]],
        normals_V3=normals_G3[group_3F[first]].astype(np.float32),
        faces_F3=inverse.reshape(-1, 3).astype(np.uint32),
        colors_V4=vertex_colors[corner_vertex[first]] if vertex_colors is not None
        else face_colors[first // 3] if face_colors is not None else None,
        uv_V2=uv[corner_vertex[first]] if uv is not None else None,
        image=image,
        base_color=base_color,
    )


def parts_of(mesh) -> list[Part]:
    """Drawable parts of a Trimesh or Scene (node transforms applied), moved into the protocol's
    unit cube: the bounding box of all parts centred at the origin, its longest side 1."""
    if isinstance(mesh, trimesh.Scene):
        try:
            geometry = [g for g in mesh.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
        except Exception as exc:  # a scene graph trimesh cannot flatten
            raise MeshError(f"could not flatten the scene to render it: {exc}") from exc
    elif isinstance(mesh, trimesh.Trimesh):
        geometry = [mesh]
    else:
        raise MeshError(f"cannot render a {type(mesh).__name__}: expected a trimesh.Trimesh or trimesh.Scene")
    parts = [p for p in (part_of(g) for g in geometry) if p is not None]
    if not parts:
        raise MeshError("nothing to render: the mesh has no triangle faces with finite vertices")
    transform = normalization_transform(trimesh.PointCloud(np.concatenate([p.positions_V3 for p in parts])))
    scale, offset = transform[0, 0], transform[:3, 3]
    for p in parts:
        p.positions_V3 = (p.positions_V3 * scale + offset).astype(np.float32)
    return parts
