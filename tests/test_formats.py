"""The game mesh readers on tiny files built here with struct.pack: exact vertices and faces (the
up-axis and winding conversions included), and a clean MeshError on truncated or garbage bytes."""

import struct

import numpy as np
import pytest
import trimesh

from vat.errors import MeshError, VatError
from vat.geometry.formats import (
    FORMATS,
    read_g3d,
    read_md2,
    read_mesh_bytes,
    read_pmd,
    read_spm,
)
from vat.geometry.io import find_mesh_files, load_mesh

# A tetrahedron with counter-clockwise (outward) faces in a Y-up frame, as vat expects.
TETRA_Y_UP = np.array([[0, 0, 0], [1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
# The same points in a Z-up frame: (x, y, z)_Y-up = (x, z, -y)_Z-up.
TETRA_Z_UP = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)


def _tetra_outward(mesh):
    return mesh.volume > 0 and mesh.is_winding_consistent


def _md2(vertices_z_up, faces_cw, scale=(0.5, 0.5, 0.5), translate=(-1.0, 2.0, 3.0)):
    """An MD2 file with one frame: vertices are stored as bytes (v - translate) / scale."""
    scale, translate = np.array(scale), np.array(translate)
    packed = np.round((np.asarray(vertices_z_up) - translate) / scale).astype(int)
    assert (packed >= 0).all() and (packed < 256).all()
    n_v, n_t = len(packed), len(faces_cw)
    frame_size = 40 + 4 * n_v
    ofs_tris = 68
    ofs_frames = ofs_tris + 12 * n_t
    ofs_end = ofs_frames + frame_size
    header = struct.pack("<4s16i", b"IDP2", 8, 64, 64, frame_size, 0, n_v, 0, n_t, 0, 1,
                         68, 68, ofs_tris, ofs_frames, ofs_end, ofs_end)
    tris = b"".join(struct.pack("<6h", *f, 0, 0, 0) for f in faces_cw)
    frame = struct.pack("<6f16s", *scale, *translate, b"frame0")
    frame += b"".join(struct.pack("<4B", *v, 0) for v in packed)
    return header + tris + frame


def test_unknown_format_is_a_clear_error():
    with pytest.raises(MeshError, match="not a game mesh format"):
        read_mesh_bytes(b"", "xyz")


def _tetra_md2():
    return _md2(TETRA_Z_UP + np.array([-1.0, 2.0, 3.0]), TETRA_FACES[:, ::-1])  # MD2 winds clockwise


def test_md2_frame0_z_up_to_y_up_and_clockwise_to_ccw():
    data = _tetra_md2()
    mesh = read_md2(data)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    expected = TETRA_Y_UP + np.array([-1.0, 3.0, -2.0])  # the translation turned to Y-up too
    np.testing.assert_allclose(mesh.vertices, expected)
    np.testing.assert_array_equal(mesh.faces, TETRA_FACES)
    assert _tetra_outward(mesh)
    np.testing.assert_allclose(read_mesh_bytes(data, ".MD2").vertices, expected)


@pytest.mark.parametrize("cut", [10, 68, 80, -1])
def test_md2_truncated_is_a_clear_error(cut):
    data = _tetra_md2()
    with pytest.raises(VatError, match="md2"):
        read_md2(data[:cut])


def test_md2_garbage_and_bad_indices_are_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(VatError, match="IDP2"):
        read_md2(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(VatError):
        read_md2(b"IDP2" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(VatError, match="uses vertex 9"):
        read_md2(_md2(TETRA_Z_UP + np.array([-1.0, 2.0, 3.0]), [[0, 1, 9]]))


def _pmd(vertices, faces, version=4, n_uvs=2, bones=(), vertex_bones=None, props=1):
    """A PMD file; `bones` are (translation xyz, rotation xyzw) rest states."""
    vertex_bones = vertex_bones or [0xFF] * len(vertices)
    body = struct.pack("<I", len(vertices)) + (struct.pack("<I", n_uvs) if version >= 4 else b"")
    uvs = n_uvs if version >= 4 else 1
    for v, b in zip(vertices, vertex_bones):
        body += struct.pack("<6f", *v, 0, 1, 0) + struct.pack(f"<{2 * uvs}f", *[0.5] * (2 * uvs))
        body += struct.pack("<4B4f", b, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0)
    body += struct.pack("<I", len(faces)) + b"".join(struct.pack("<3H", *f) for f in faces)
    body += struct.pack("<I", len(bones)) + b"".join(struct.pack("<7f", *t, *q) for t, q in bones)
    if version >= 2:
        prop = struct.pack("<I4s", 4, b"root") + struct.pack("<7fB", *[0] * 7, 0xFF)
        body += struct.pack("<I", props) + props * prop
    return b"PSMD" + struct.pack("<II", version, len(body)) + body


MIRROR_Z = np.array([1.0, 1.0, -1.0])


@pytest.mark.parametrize("version", [1, 3, 4])
def test_pmd_positions_left_handed_to_right_handed(version):
    # 0 A.D. stores a left-handed Y-up world: the reader negates Z, keeping the face indices
    mesh = read_pmd(_pmd(TETRA_Y_UP * MIRROR_Z, TETRA_FACES, version=version))
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    np.testing.assert_allclose(mesh.vertices, TETRA_Y_UP)
    np.testing.assert_array_equal(mesh.faces, TETRA_FACES)
    assert _tetra_outward(mesh)
    np.testing.assert_allclose(read_mesh_bytes(_pmd(TETRA_Y_UP, TETRA_FACES), "pmd").vertices, TETRA_Y_UP * MIRROR_Z)


def test_pmd_version2_vertices_move_by_their_bone_rest_state():
    half = np.sqrt(0.5)
    bone = ((1.0, 2.0, 3.0), (0.0, half, 0.0, half))  # 90 degrees about +Y, then a translation
    stored = [[1, 0, 0], [0, 0, 1], [5, 5, 5]]
    data = _pmd(stored, [[0, 1, 2]], version=2, bones=[bone], vertex_bones=[0, 0, 0xFF])
    # rotating +X by 90 degrees about +Y gives -Z, +Z gives +X; the third vertex has no bone
    world = np.array([[1, 2, 2], [2, 2, 3], [5, 5, 5]], dtype=float)
    np.testing.assert_allclose(read_pmd(data).vertices, world * MIRROR_Z, atol=1e-6)


@pytest.mark.parametrize("cut", [4, 12, 30, 100, -3])
def test_pmd_truncated_is_a_clear_error(cut):
    data = _pmd(TETRA_Y_UP, TETRA_FACES)
    with pytest.raises(VatError, match="pmd"):
        read_pmd(data[:cut])


def test_pmd_garbage_and_bad_indices_are_clear_errors():
    rng = np.random.default_rng(1)
    with pytest.raises(VatError, match="PSMD"):
        read_pmd(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
    with pytest.raises(VatError, match="out of range|truncated"):
        read_pmd(b"PSMD" + struct.pack("<III", 4, 0, 4_000_000_000) + bytes(64))
    with pytest.raises(VatError, match="uses vertex 7"):
        read_pmd(_pmd(TETRA_Y_UP, [[0, 1, 7]]))


def _spm_buffer(vertices, faces, material, uvs, normal=True, colour=True, tangent=True, skinned=False):
    """One SPM buffer: (vertex count, index count, material), vertices, then u8 or u16 indices."""
    out = struct.pack("<IIH", len(vertices), 3 * len(faces), material)
    for i, v in enumerate(vertices):
        out += struct.pack("<3f", *v) + (b"\x00\x00\xf0\x1f" if normal else b"")
        if colour:  # 128 means white; anything else is followed by r, g, b
            out += b"\x80" if i % 2 else b"\x10\xff\x00\x00"
        if uvs:
            out += b"\x00\x3c" * 2 * uvs + (b"\x00" * 4 if tangent else b"")
        out += b"\x00" * 16 if skinned else b""
    index = "<H" if len(vertices) > 255 else "<B"
    return out + b"".join(struct.pack(index, i) for f in faces for i in f)


def _spm(buffers, skinned=False, flags=0b111, trailer=b""):
    out = b"SP" + bytes([(1 << 3) | (1 if skinned else 2), flags]) + struct.pack("<6f", *[0.0] * 6)
    # material 0: no texture (no uvs); material 1: one texture; material 2: two textures
    out += struct.pack("<H", 3) + b"\x00\x00" + b"\x05a.png\x00" + b"\x05a.png\x05b.png"
    return out + struct.pack("<HH", 1, len(buffers)) + b"".join(buffers) + trailer


@pytest.mark.parametrize("skinned", [False, True])
@pytest.mark.parametrize("flags", [0b000, 0b111])
def test_spm_buffers_left_handed_to_right_handed(skinned, flags):
    # SPM is left-handed Y-up with clockwise faces: the reader negates Z and reverses the winding
    kw = {"normal": bool(flags & 1), "colour": bool(flags & 2), "tangent": bool(flags & 4), "skinned": skinned}
    triangle = np.array([[5.0, 0, 0], [6, 0, 0], [5, 1, 0]])
    data = _spm([_spm_buffer(TETRA_Y_UP * MIRROR_Z, TETRA_FACES[:, ::-1], 2, 2, **kw),
                 _spm_buffer(triangle, [[0, 2, 1]], 0, 0, **kw),
                 _spm_buffer(triangle, [[0, 2, 1]], 1, 1, **kw)], skinned=skinned, flags=flags,
                trailer=b"animation data the reader skips" if skinned else b"")
    mesh = read_spm(data)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    np.testing.assert_allclose(mesh.vertices, np.concatenate([TETRA_Y_UP, triangle * MIRROR_Z, triangle * MIRROR_Z]))
    np.testing.assert_array_equal(mesh.faces, np.concatenate([TETRA_FACES, [[5, 6, 4]], [[8, 9, 7]]]))
    assert _tetra_outward(trimesh.Trimesh(mesh.vertices[:4], mesh.faces[:4], process=False))


def test_spm_over_255_vertices_uses_u16_indices():
    vertices = np.concatenate([TETRA_Y_UP, np.full((300, 3), 9.0)])
    mesh = read_mesh_bytes(_spm([_spm_buffer(vertices, [[0, 1, 2], [1, 2, 303]], 1, 1)]), "spm")
    np.testing.assert_array_equal(mesh.faces, [[2, 1, 0], [303, 2, 1]])


@pytest.mark.parametrize("cut", [3, 20, 40, 60, -1])
def test_spm_truncated_is_a_clear_error(cut):
    data = _spm([_spm_buffer(TETRA_Y_UP, TETRA_FACES, 2, 2)])
    with pytest.raises(VatError, match="spm"):
        read_spm(data[:cut])


def test_spm_garbage_and_bad_indices_are_clear_errors():
    rng = np.random.default_rng(2)
    with pytest.raises(VatError, match="SP version 1"):
        read_spm(b"SQ" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    for seed in range(20):  # a valid header followed by noise
        noise = np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes()
        with pytest.raises(VatError):
            read_spm(b"SP\x0a\x07" + noise)
    with pytest.raises(VatError, match="uses vertex 4"):
        read_spm(_spm([_spm_buffer(TETRA_Y_UP, [[0, 1, 4]], 1, 1)]))
    with pytest.raises(VatError, match="material 7"):
        read_spm(_spm([_spm_buffer(TETRA_Y_UP, TETRA_FACES, 7, 1)]))


def _g3d_mesh(frames, faces, textures=1):
    """One G3D v4 mesh: header, texture names, every frame's positions and normals, uvs, indices."""
    frames = np.asarray(frames, dtype=np.float32)
    n_frames, n_verts = frames.shape[:2]
    out = struct.pack("<64s3I8f2I", b"mesh", n_frames, n_verts, 3 * len(faces), *[1.0] * 8, 0, textures)
    out += b"texture.png".ljust(64, b"\x00") * textures.bit_count()
    out += frames.tobytes() + np.ones_like(frames).tobytes()
    out += np.zeros((n_verts, 2), np.float32).tobytes() if textures else b""
    return out + np.asarray(faces, dtype="<u4").tobytes()


def _g3d(meshes, version=4):
    return b"G3D" + bytes([version]) + struct.pack("<HB", len(meshes), 0) + b"".join(meshes)


def test_g3d_frame0_of_every_mesh_kept_y_up():
    triangle = np.array([[5.0, 0, 0], [6, 0, 0], [5, 1, 0]])
    data = _g3d([_g3d_mesh([TETRA_Y_UP, TETRA_Y_UP + 7], TETRA_FACES),  # two frames, one texture
                 _g3d_mesh([triangle], [[0, 1, 2]], textures=0),
                 _g3d_mesh([triangle], [[2, 1, 0]], textures=0b101)])
    mesh = read_g3d(data)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    np.testing.assert_allclose(mesh.vertices, np.concatenate([TETRA_Y_UP, triangle, triangle]))
    np.testing.assert_array_equal(mesh.faces, np.concatenate([TETRA_FACES, [[4, 5, 6]], [[9, 8, 7]]]))
    assert _tetra_outward(trimesh.Trimesh(mesh.vertices[:4], mesh.faces[:4], process=False))
    np.testing.assert_allclose(read_mesh_bytes(data, "g3d").vertices[:4], TETRA_Y_UP)


@pytest.mark.parametrize("cut", [3, 6, 50, 200, -1])
def test_g3d_truncated_is_a_clear_error(cut):
    data = _g3d([_g3d_mesh([TETRA_Y_UP], TETRA_FACES)])
    with pytest.raises(VatError, match="g3d"):
        read_g3d(data[:cut])


def test_g3d_garbage_empty_and_bad_indices_are_clear_errors():
    with pytest.raises(VatError, match="version 4"):
        read_g3d(_g3d([_g3d_mesh([TETRA_Y_UP], TETRA_FACES)], version=3))
    with pytest.raises(VatError, match="no meshes"):
        read_g3d(_g3d([]))
    with pytest.raises(VatError, match="uses vertex 4"):
        read_g3d(_g3d([_g3d_mesh([TETRA_Y_UP], [[0, 1, 4]])]))
    for seed in range(20):  # a valid header followed by noise
        noise = np.random.default_rng(seed).integers(0, 256, 400, dtype=np.uint8).tobytes()
        with pytest.raises(VatError):
            read_g3d(b"G3D\x04\x01\x00\x00" + noise)


def test_every_format_rejects_empty_and_random_bytes():
    assert set(FORMATS) == {"md2", "pmd", "spm", "g3d"}
    rng = np.random.default_rng(3)
    for fmt in FORMATS:
        for data in (b"", rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()):
            with pytest.raises(MeshError, match=fmt):
                read_mesh_bytes(data, fmt)


def test_load_mesh_reads_game_formats_from_paths_and_bytes(tmp_path):
    (tmp_path / "tetra.md2").write_bytes(_tetra_md2())
    (tmp_path / "tetra.g3d").write_bytes(_g3d([_g3d_mesh([TETRA_Y_UP], TETRA_FACES)]))
    assert [p.name for p in find_mesh_files(tmp_path)] == ["tetra.g3d", "tetra.md2"]
    np.testing.assert_allclose(load_mesh(tmp_path / "tetra.g3d").vertices, TETRA_Y_UP)
    assert load_mesh(tmp_path / "tetra.md2").volume == pytest.approx(1 / 6)
    np.testing.assert_allclose(load_mesh(_pmd(TETRA_Y_UP * MIRROR_Z, TETRA_FACES), "pmd").vertices, TETRA_Y_UP)
    (tmp_path / "broken.md2").write_bytes(_tetra_md2()[:100])
    with pytest.raises(MeshError, match=r"broken\.md2: not a readable \.md2 mesh"):
        load_mesh(tmp_path / "broken.md2")
