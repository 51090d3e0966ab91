"""Load a source Candidate into Y-up triangle meshes: trimesh for OBJ/STL/GLB/PLY/OFF, vat's small
readers for MD2/PMD/SPM/G3D, and the assimp command line (Debian assimp-utils) for the rest."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import trimesh

from vat.errors import MeshError
from vat.geometry.io import LOAD_FORMATS, clean_mesh, load_scene
from vat.sources.common import Candidate

SMALL_READER_FORMATS = ("md2", "pmd", "spm", "g3d")
ASSIMP_TIMEOUT = 120.0  # seconds per file


@functools.lru_cache(maxsize=4)
def _archive(path: str) -> zipfile.ZipFile:
    # Kept open: reading the directory of a 3 GB archive (0 A.D.'s public.zip) per member is slow.
    return zipfile.ZipFile(path)


def candidate_bytes(candidate: Candidate) -> bytes:
    """The file's bytes (from inside the zip archive when `member` is set)."""
    if candidate.member is None:
        return Path(candidate.path).read_bytes()
    return _archive(candidate.path).read(candidate.member)


def assimp_scene(source: str | Path, suffix: str) -> trimesh.Scene:
    """Convert a file to GLB with `assimp export` and read the GLB as a trimesh scene."""
    if shutil.which("assimp") is None:
        raise MeshError("the assimp command is missing: install Debian assimp-utils")
    with tempfile.TemporaryDirectory(prefix="vat-assimp-") as tmp:
        out = Path(tmp) / "out.glb"
        try:
            run = subprocess.run(["assimp", "export", str(source), str(out)], capture_output=True,
                                 text=True, timeout=ASSIMP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise MeshError(f"assimp took over {ASSIMP_TIMEOUT:g} s on this .{suffix} file") from exc
        if run.returncode != 0 or not out.is_file():
            lines = [line for line in (run.stderr + run.stdout).splitlines() if "error" in line.lower()]
            raise MeshError(f"assimp could not convert this .{suffix} file: {(lines or ['no output'])[-1].strip()}")
        scene, _ = load_scene(out)
        return scene


def candidate_scene(candidate: Candidate) -> trimesh.Scene:
    """The candidate as a trimesh scene (node transforms kept, not yet rotated Y-up)."""
    fmt = candidate.fmt
    if fmt in SMALL_READER_FORMATS:
        from vat.geometry.formats import read_mesh_bytes

        return trimesh.Scene(read_mesh_bytes(candidate_bytes(candidate), fmt))
    if fmt in LOAD_FORMATS:
        try:
            # From a path, so an OBJ finds its materials; from bytes for archive members.
            source = candidate.path if candidate.member is None else candidate_bytes(candidate)
            scene, _ = load_scene(source, fmt)
            return scene
        except MeshError:
            if fmt != "obj":
                raise  # OBJ files trimesh rejects are retried with assimp below
    if candidate.member is None:
        return assimp_scene(candidate.path, fmt)
    with tempfile.TemporaryDirectory(prefix="vat-member-") as tmp:
        path = Path(tmp) / f"mesh.{fmt}"
        path.write_bytes(candidate_bytes(candidate))
        return assimp_scene(path, fmt)


def _top_object(graph, node: str) -> str:
    """The ancestor of `node` just below the scene's root: the object a Blender file named
    (assimp adds synthetic roots such as "<BlenderRoot>", which are skipped)."""
    chain = [node]
    while graph.transforms.parents.get(chain[-1]) is not None:
        chain.append(graph.transforms.parents[chain[-1]])
    named = [n for n in chain if n != graph.base_frame and not str(n).startswith("<")]
    return named[-1] if named else node


def scene_parts(scene: trimesh.Scene, split_nodes: bool) -> list[tuple[str | None, trimesh.Trimesh]]:
    """The scene as one mesh (name None), or one mesh per top-level object (name = the object's)."""
    groups: dict[str | None, list[trimesh.Trimesh]] = {}
    for node in scene.graph.nodes_geometry:
        transform, geometry = scene.graph[node]
        mesh = scene.geometry.get(geometry)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        mesh.apply_transform(transform)
        groups.setdefault(_top_object(scene.graph, node) if split_nodes else None, []).append(mesh)
    if not groups:
        raise MeshError("the file holds no triangle faces")
    return [(name, clean_mesh(trimesh.util.concatenate(meshes), name=name or "mesh"))
            for name, meshes in sorted(groups.items(), key=lambda kv: kv[0] or "")]


def load_parts(candidate: Candidate) -> list[tuple[str | None, trimesh.Trimesh]]:
    """The candidate's meshes, Y-up, each with its object name (None when the file is one mesh)."""
    parts = scene_parts(candidate_scene(candidate), candidate.split_nodes)
    if candidate.rotation is not None:
        matrix = np.eye(4)
        matrix[:3, :3] = np.reshape(candidate.rotation, (3, 3))
        for _, mesh in parts:
            mesh.apply_transform(matrix)
    return parts
