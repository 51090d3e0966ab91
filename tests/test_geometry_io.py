"""Mesh loading, cleaning, normalisation and export, including the bad files users upload."""

import numpy as np
import pytest
import trimesh

from vat.errors import MeshError
from vat.geometry import EXPORT_FORMATS, export_mesh, load_mesh, normalize_mesh


@pytest.fixture
def box():
    return trimesh.creation.box(extents=(2.0, 1.0, 0.5), transform=trimesh.transformations.translation_matrix((3, -1, 7)))


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl", "glb", "off"])
def test_round_trip_every_format(tmp_path, box, fmt):
    path = tmp_path / f"box.{fmt}"
    box.export(path)
    loaded = load_mesh(path)
    assert len(loaded.faces) == 12
    np.testing.assert_allclose(loaded.bounds, box.bounds, atol=1e-5)


def test_gltf_with_external_buffer(tmp_path, box):
    files = box.export(file_type="gltf")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert len(load_mesh(tmp_path / "model.gltf").faces) == 12


def test_bytes_input_needs_type(box):
    data = box.export(file_type="stl")
    assert len(load_mesh(data, "stl").faces) == 12
    with pytest.raises(MeshError, match="file_type"):
        load_mesh(data)


def test_scene_is_flattened_with_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), transform=trimesh.transformations.translation_matrix((5, 0, 0)))
    scene.add_geometry(trimesh.creation.icosphere(1))
    path = tmp_path / "scene.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == 12 + 80
    assert mesh.bounds[1, 0] == pytest.approx(5.5)


def test_normalize_to_unit_cube(box):
    mesh, transform = normalize_mesh(box)
    np.testing.assert_allclose(mesh.bounds, [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]], atol=1e-9)
    np.testing.assert_allclose(trimesh.transform_points(box.vertices, transform), mesh.vertices)


def test_nan_and_degenerate_faces_are_dropped():
    good = trimesh.creation.box()
    vertices = np.vstack([good.vertices, [[np.nan, 0, 0], [0, 0, 0], [0, 0, 0]]])
    n = len(good.vertices)
    faces = np.vstack([good.faces, [[n, 0, 1], [n + 1, n + 2, 0]]])  # a NaN face, a zero-area face
    raw = trimesh.Trimesh(vertices, faces, process=False)
    from vat.geometry.io import clean_mesh

    cleaned = clean_mesh(raw)
    assert len(cleaned.faces) == 12
    assert np.isfinite(cleaned.vertices).all()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"hello", "not a mesh file"),
        ("empty.stl", b"", "empty"),
        ("garbage.glb", b"\x00\x01garbage" * 10, "could not read"),
        ("points.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n", "no triangle faces"),
        ("nan.obj", b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "finite|no triangle faces"),
        ("flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MeshError, match=message):
        load_mesh(path)


def test_missing_and_oversized_files(tmp_path, box):
    with pytest.raises(MeshError, match="does not exist"):
        load_mesh(tmp_path / "missing.obj")
    path = tmp_path / "box.stl"
    box.export(path)
    with pytest.raises(MeshError, match="limit"):
        load_mesh(path, max_bytes=100)
    with pytest.raises(MeshError, match="faces; the limit"):
        load_mesh(path, max_faces=5)


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_every_format(tmp_path, box, fmt):
    path = export_mesh(box, tmp_path / "sub" / f"out.{fmt}")
    assert len(load_mesh(path).faces) == 12


def test_export_rejects_unknown_format(tmp_path, box):
    with pytest.raises(MeshError, match="cannot export"):
        export_mesh(box, tmp_path / "out.fbx")
