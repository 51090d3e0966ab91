"""Mesh files in and out: load any common format into one clean triangle mesh, normalise it to
the unit cube of the evaluation protocol, export GLB/OBJ/STL/PLY. Bad input raises MeshError."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import trimesh

from vat.errors import MeshError
from vat.geometry.formats import FORMATS as GAME_FORMATS
from vat.geometry.formats import read_mesh_bytes

# trimesh reads the first six; vat's own readers in formats.py read the game formats.
LOAD_FORMATS = ("obj", "ply", "stl", "glb", "gltf", "off") + GAME_FORMATS
EXPORT_FORMATS = ("glb", "obj", "stl", "ply")

# Limits that stop a hostile or broken upload before it eats the machine.
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_FACES = 10_000_000


def _file_type(name: str) -> str:
    ext = Path(name).suffix.lower().lstrip(".")
    if ext not in LOAD_FORMATS:
        raise MeshError(
            f"{Path(name).name!r} is not a mesh file vat reads: expected one of "
            f"{', '.join('.' + f for f in LOAD_FORMATS)}"
        )
    return ext


def find_mesh_files(directory: str | os.PathLike) -> list[Path]:
    """Files under `directory` (recursively, sorted) with a suffix load_mesh reads."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MeshError(f"{directory} is not a folder of meshes")
    return sorted(p for p in directory.rglob("*") if p.suffix.lower().lstrip(".") in LOAD_FORMATS and p.is_file())


def load_scene(
    source: str | os.PathLike | bytes,
    file_type: str | None = None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_faces: int = MAX_FACES,
) -> tuple[trimesh.Scene, list[trimesh.Trimesh]]:
    """Read a mesh file (a path, or bytes with `file_type`) as a trimesh scene, keeping materials,
    textures and colours (OBJ textures are found next to the file), and its triangle meshes with
    faces, node transforms applied. The size and face limits and every MeshError message of
    load_mesh live here."""
    if isinstance(source, (bytes, bytearray)):
        if file_type is None:
            raise MeshError("file_type is required when a mesh is given as bytes")
        ext = _file_type("x." + file_type)
        name, size = f"<{ext} bytes>", len(source)
        opener = dict(file_obj=io.BytesIO(bytes(source)), file_type=ext)
    else:
        path = Path(source)
        name = path.name
        ext = _file_type(file_type and "x." + file_type or path.name)
        if not path.is_file():
            raise MeshError(f"{path} does not exist or is not a file")
        size = path.stat().st_size
        if size == 0:
            raise MeshError(f"{name} is empty (0 bytes)")
        opener = dict(file_obj=str(path), file_type=ext)
    if size > max_bytes:
        raise MeshError(f"{name} is {size / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")

    try:
        if ext in GAME_FORMATS:  # vat's own readers, which raise MeshError on a bad file
            data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
            scene = trimesh.Scene(read_mesh_bytes(data, ext))
        else:
            scene = trimesh.load_scene(**opener)
        meshes = [g for g in scene.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    except MeshError as exc:
        if ext not in GAME_FORMATS:
            raise
        raise MeshError(f"{name}: {exc}") from exc
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshError(f"could not read {name} as a .{ext} mesh: {exc}") from exc

    meshes = [m for m in meshes if len(m.faces) > 0]
    if not meshes:
        raise MeshError(f"{name} {_why_no_faces(opener)}")
    total_faces = sum(len(m.faces) for m in meshes)
    if total_faces > max_faces:
        raise MeshError(f"{name} has {total_faces:,} faces; the limit is {max_faces:,}")
    return scene, meshes


def _why_no_faces(opener: dict) -> str:
    """Why a file that trimesh read has no faces. Its loaders drop faces on NaN or inf vertices, so
    the file is read again unprocessed to tell those apart from a file without triangles."""
    if hasattr(opener["file_obj"], "seek"):
        opener["file_obj"].seek(0)
    raw = trimesh.load_scene(**opener, process=False).dump(concatenate=False)
    if any(isinstance(m, trimesh.Trimesh) and len(m.faces) and not np.isfinite(m.vertices).all() for m in raw):
        return "has no face with finite vertices (its vertices are NaN or inf)"
    return "contains no triangle faces"


def load_mesh(
    source: str | os.PathLike | bytes,
    file_type: str | None = None,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_faces: int = MAX_FACES,
) -> trimesh.Trimesh:
    """Read a mesh file (a path, or bytes with `file_type`) into one triangle mesh.

    Scenes are flattened with their node transforms applied; points, lines and other
    non-triangle geometry are dropped; faces touching NaN/inf vertices and zero-area faces are
    removed. Raises MeshError when the file is not a readable mesh or nothing usable is left.
    The mesh is *not* normalised: call normalize_mesh for the protocol's unit cube.
    """
    _, meshes = load_scene(source, file_type, max_bytes=max_bytes, max_faces=max_faces)
    name = Path(source).name if not isinstance(source, (bytes, bytearray)) else f"<{file_type} bytes>"
    mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
    return clean_mesh(mesh, name=name)


def clean_mesh(mesh: trimesh.Trimesh, name: str = "mesh") -> trimesh.Trimesh:
    """Drop faces with non-finite vertices and zero-area faces; raise MeshError if none are left."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise MeshError(f"{name} contains no triangle faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{name} has faces that index missing vertices")
    finite = np.isfinite(vertices).all(axis=1)
    keep = finite[faces].all(axis=1)
    if not keep.any():
        raise MeshError(f"{name} has no face with finite (non-NaN, non-inf) vertices")
    mesh = mesh.copy()
    if not keep.all():
        mesh.update_faces(keep)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(single_sided_faces(mesh))
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise MeshError(f"{name} has only degenerate (zero-area) faces")
    return mesh


def single_sided_faces(mesh: trimesh.Trimesh) -> np.ndarray:
    """Boolean mask over faces that keeps one face of every double-sided pair (the same triangle
    twice, by vertex positions, in either winding). Artist models often draw thin parts that way;
    the pair's winding numbers cancel, which would make their inside read as outside."""
    corners = np.round(np.asarray(mesh.triangles), 7).reshape(len(mesh.faces), 3, 3)
    # A triangle's key is its corners in sorted order, so both windings share a key.
    order = np.lexsort(corners.transpose(2, 0, 1)[::-1], axis=-1)
    keys = np.take_along_axis(corners, order[..., None], axis=1).reshape(len(mesh.faces), 9)
    _, first = np.unique(keys, axis=0, return_index=True)
    keep = np.zeros(len(mesh.faces), dtype=bool)
    keep[first] = True
    return keep


def normalization_transform(mesh: trimesh.Trimesh) -> np.ndarray:
    """4x4 matrix that centres the bounding box at the origin and scales its longest side to 1."""
    lo, hi = mesh.bounds
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 1e-12:
        raise MeshError("the mesh has a degenerate (zero-size) bounding box")
    transform = np.eye(4)
    transform[:3, :3] /= extent
    transform[:3, 3] = -(lo + hi) / 2 / extent
    return transform


def normalize_mesh(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A copy of `mesh` in the unit cube [-0.5, 0.5]^3, and the 4x4 transform that was applied."""
    transform = normalization_transform(mesh)
    out = mesh.copy()
    out.apply_transform(transform)
    return out, transform


def export_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write `mesh` to `path`; the suffix picks the format (.glb, .obj, .stl, .ply)."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in EXPORT_FORMATS:
        raise MeshError(
            f"cannot export to {path.name!r}: expected one of {', '.join('.' + f for f in EXPORT_FORMATS)}"
        )
    if len(mesh.faces) == 0:
        raise MeshError("refusing to export a mesh with no faces")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    mesh.export(tmp, file_type=ext)
    os.replace(tmp, path)
    return path
