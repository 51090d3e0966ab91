"""Small readers for game mesh formats that trimesh and assimp do not read: Quake-2 MD2 (UFO:AI),
0 A.D. PMD, SuperTuxKart SPM and MegaGlest G3D. Each takes the file's bytes and returns one
triangle mesh in vat's frame (+Y up), float64 vertices and int64 faces, geometry only (no uvs,
normals or materials). A truncated or garbage file raises MeshError, never a struct/index error.

Only the first (rest or bind) pose is read: frame 0 of MD2 and G3D, the bind pose of skinned
PMD and SPM meshes. Z-up formats are turned to Y-up by the rotation (x, y, z) -> (x, z, -y),
which keeps handedness, so face winding is kept."""

from __future__ import annotations

import struct

import numpy as np
import trimesh

from vat.errors import MeshError

# A header count above this is garbage, not a mesh (it stops huge allocations before reading).
MAX_COUNT = 50_000_000


class _Bytes:
    """A cursor over a file's bytes whose every read is bounds-checked: running past the end
    raises MeshError naming the format, so no caller sees struct.error or IndexError."""

    def __init__(self, data: bytes, fmt: str):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MeshError(f"a .{fmt} mesh must be given as bytes, not {type(data).__name__}")
        self.data = bytes(data)
        self.fmt = fmt
        self.pos = 0

    def fail(self, why: str) -> MeshError:
        return MeshError(f"not a readable .{self.fmt} mesh: {why}")

    def seek(self, pos: int) -> _Bytes:
        if not 0 <= pos <= len(self.data):
            raise self.fail(f"offset {pos} is outside the {len(self.data)}-byte file (truncated or corrupt)")
        self.pos = pos
        return self

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} bytes at offset {self.pos} but the file has {len(self.data)} "
                            "(truncated or corrupt)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, layout: str) -> tuple:
        layout = "<" + layout
        return struct.unpack(layout, self.take(struct.calcsize(layout)))

    def one(self, layout: str):
        return self.unpack(layout)[0]

    def array(self, dtype, count: int, width: int = 1) -> np.ndarray:
        """`count` rows of `width` little-endian values of `dtype`."""
        count = self.count(count)
        dtype = np.dtype(dtype).newbyteorder("<")
        flat = np.frombuffer(self.take(count * width * dtype.itemsize), dtype=dtype)
        return flat.reshape(count, width) if width > 1 else flat

    def count(self, n: int, what: str = "count") -> int:
        if not 0 <= n <= MAX_COUNT:
            raise self.fail(f"{what} {n} is out of range (corrupt header)")
        return int(n)

    def string(self, length_layout: str = "B") -> bytes:
        """A string prefixed by its length (one byte by default)."""
        return self.take(self.one(length_layout))


def _mesh(vertices: np.ndarray, faces: np.ndarray, fmt: str) -> trimesh.Trimesh:
    """The checked result: faces index real vertices, vertices are finite, something is left."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise MeshError(f"the .{fmt} mesh has no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"not a readable .{fmt} mesh: a triangle uses vertex {int(faces.max())} "
                        f"but there are {len(vertices)} (corrupt file)")
    if not np.isfinite(vertices).all():
        raise MeshError(f"not a readable .{fmt} mesh: its vertices include NaN or inf (corrupt file)")
    return trimesh.Trimesh(vertices, faces, process=False)


def _z_up_to_y_up(vertices: np.ndarray) -> np.ndarray:
    """(x, y, z) with +Z up -> (x, z, -y) with +Y up: a rotation about X, so handedness is kept."""
    return np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], axis=1)


def read_md2(data: bytes) -> trimesh.Trimesh:
    """A Quake-2 MD2 model (ident IDP2, version 8): frame 0's vertices, each a byte triple times
    the frame's scale plus its translation, and the triangle list's vertex indices (texture
    coordinates ignored). MD2 is Z-up with clockwise front faces: both are turned to vat's."""
    f = _Bytes(data, "md2")
    ident, version = f.unpack("4si")
    if ident != b"IDP2" or version != 8:
        raise f.fail(f"expected the IDP2 version 8 header, found {ident!r} version {version}")
    (_skin_w, _skin_h, frame_size, _n_skins, n_verts, _n_st, n_tris, _n_gl, n_frames,
     _ofs_skins, _ofs_st, ofs_tris, ofs_frames, _ofs_gl, _ofs_end) = f.unpack("15i")
    if f.count(n_frames, "frame count") < 1:
        raise f.fail("it has no animation frames")
    if frame_size < 40 + 4 * f.count(n_verts, "vertex count"):
        raise f.fail(f"frame size {frame_size} is too small for {n_verts} vertices")
    tris = f.seek(ofs_tris).array(np.int16, n_tris, 6)[:, :3]
    scale_translate = np.array(f.seek(ofs_frames).unpack("6f"))
    f.take(16)  # frame name
    packed = f.array(np.uint8, n_verts, 4)[:, :3].astype(np.float64)
    vertices = packed * scale_translate[:3] + scale_translate[3:]
    # Quake's front faces wind clockwise; vat's (glTF's) wind counter-clockwise seen from outside.
    return _mesh(_z_up_to_y_up(vertices), tris[:, ::-1].astype(np.int64), "md2")


def _rotate_by_quaternions(vectors: np.ndarray, quats_xyzw: np.ndarray) -> np.ndarray:
    """Each row of `vectors` rotated by the unit quaternion (x, y, z, w) in the same row."""
    q, w = quats_xyzw[:, :3], quats_xyzw[:, 3:]
    t = 2.0 * np.cross(q, vectors)
    return vectors + w * t + np.cross(q, t)


def read_pmd(data: bytes) -> trimesh.Trimesh:
    """A 0 A.D. PMD model (magic PSMD, versions 1-4): vertex positions and the u16 triangle list.
    Positions are in the model's rest pose, except in version 2, where a skinned vertex is stored
    relative to its first bone and is moved back by that bone's rest transform. 0 A.D.'s world is
    Y-up but left-handed (its converter swaps the Y and Z of Z-up art): Z is negated, which turns
    the model right-handed and its winding counter-clockwise (3,478 of the 3,764 real models with
    volume had negative volume as stored)."""
    f = _Bytes(data, "pmd")
    magic, version, data_size = f.unpack("4sII")
    if magic != b"PSMD" or not 1 <= version <= 4:
        raise f.fail(f"expected the PSMD header of version 1-4, found {magic!r} version {version}")
    if data_size > len(f.data) - 12:
        raise f.fail(f"the header promises {data_size} bytes of data but {len(f.data) - 12} follow (truncated)")
    n_verts = f.count(f.one("I"), "vertex count")
    n_uvs = f.count(f.one("I"), "texture coordinate count") if version >= 4 else 1
    # position (3f), normal (3f), uv pairs (2f each), blend: 4 bone bytes and 4 float weights
    row = f.array(np.uint8, n_verts, 24 + 8 * n_uvs + 20)
    vertices = row[:, :12].copy().view("<f4").astype(np.float64)
    faces = f.array(np.uint16, f.one("I"), 3).astype(np.int64)
    n_bones = f.count(f.one("I"), "bone count")
    rest = f.array(np.float32, n_bones, 7).astype(np.float64)  # translation xyz, rotation xyzw
    if version == 2 and n_bones:
        bone = row[:, 24 + 8 * n_uvs].astype(np.int64)
        skinned = bone < n_bones
        moved = rest[bone[skinned]]
        vertices[skinned] = _rotate_by_quaternions(vertices[skinned], moved[:, 3:]) + moved[:, :3]
    # Prop points (version 2+) follow; they are attachment points, not geometry.
    return _mesh(vertices * [1.0, 1.0, -1.0], faces, "pmd")


def _spm_materials(f: _Bytes) -> list[tuple[bool, bool]]:
    """Per material, whether it has a first and a second texture (each adds a uv pair)."""
    materials = []
    for _ in range(f.one("H")):
        materials.append((len(f.string()) > 0, len(f.string()) > 0))
    return materials


def _spm_buffer(f: _Bytes, flags: dict, materials: list) -> tuple[np.ndarray, np.ndarray]:
    """One mesh buffer: its vertex positions and triangles (indices local to the buffer)."""
    n_verts, n_indices, material = f.unpack("IIH")
    if n_verts > 65535 or n_indices % 3 or material >= len(materials):
        raise f.fail(f"a buffer with {n_verts} vertices, {n_indices} indices and material {material} "
                     f"of {len(materials)} (corrupt)")
    uv_one, uv_two = materials[material]
    head = 12 + 4 * flags["normal"]  # position (3f), packed normal (4 bytes)
    tail = (4 + 4 * uv_two + 4 * flags["tangent"]) * uv_one + 16 * flags["skinned"]
    if flags["colour"]:  # a colour byte, 128 for white, else followed by r, g, b
        starts, pos, data = np.empty(n_verts, np.int64), f.pos, f.data
        for i in range(n_verts):
            starts[i] = pos
            if pos + head >= len(data):
                raise f.fail(f"vertex {i} runs past the end of the file (truncated)")
            pos += head + tail + (1 if data[pos + head] == 128 else 4)
        end = pos
    else:
        starts = f.pos + (head + tail) * np.arange(n_verts, dtype=np.int64)
        end = f.pos + (head + tail) * n_verts
    f.seek(min(end, len(f.data)))
    if end > len(f.data):
        raise f.fail("its vertices run past the end of the file (truncated)")
    raw = np.frombuffer(f.data, np.uint8)
    positions = raw[starts[:, None] + np.arange(12)].copy().view("<f4").astype(np.float64)
    indices = f.array(np.uint16 if n_verts > 255 else np.uint8, n_indices)
    return positions, indices.reshape(-1, 3).astype(np.int64)


def _join_parts(f, parts: list[tuple[np.ndarray, np.ndarray]], empty: str) -> tuple[np.ndarray, np.ndarray]:
    """The (positions, triangles) parts of a file as one vertex and one face array; a triangle pointing
    past its part's vertices is corruption, no part at all is `empty`'s MeshError."""
    if not parts:
        raise MeshError(empty)
    offsets = np.cumsum([0] + [len(positions) for positions, _ in parts[:-1]])
    for positions, triangles in parts:
        if len(triangles) and triangles.max() >= len(positions):
            raise f.fail(f"a triangle uses vertex {int(triangles.max())} of {len(positions)} (corrupt)")
    return (np.concatenate([positions for positions, _ in parts]),
            np.concatenate([triangles + offset for (_, triangles), offset in zip(parts, offsets)]))


def read_spm(data: bytes) -> trimesh.Trimesh:
    """A SuperTuxKart SPM mesh (version 1, static or skinned), every buffer's vertex positions and
    triangles; skinned meshes give their stored bind pose (the animation data after is skipped).
    SPM is Irrlicht's left-handed Y-up (the exporter swaps Blender's Y and Z) with clockwise front
    faces: Z is negated and the winding reversed (as stored, 933 of 1,166 real meshes with volume
    had negative volume after the Z flip alone)."""
    f = _Bytes(data, "spm")
    magic, kind, flag_bits = f.unpack("2sBB")
    if magic != b"SP" or kind >> 3 != 1 or kind & 0x07 not in (1, 2):
        raise f.fail(f"expected an SP version 1 header of a normal or skinned mesh, found {magic!r} {kind:#x}")
    flags = {"normal": bool(flag_bits & 1), "colour": bool(flag_bits & 2), "tangent": bool(flag_bits & 4),
             "skinned": kind & 0x07 == 1}
    f.take(24)  # bounding box
    materials = _spm_materials(f)
    parts = [_spm_buffer(f, flags, materials) for _ in range(f.one("H")) for _ in range(f.one("H"))]
    vertices, faces = _join_parts(f, parts, "the .spm mesh has no triangles")
    return _mesh(vertices * [1.0, 1.0, -1.0], faces[:, ::-1], "spm")


def _g3d_mesh(f: _Bytes) -> tuple[np.ndarray, np.ndarray]:
    """One G3D v4 mesh: frame 0's vertex positions and its triangles."""
    n_frames, n_verts, n_indices = f.unpack("64x3I")
    (texture_bits,) = f.unpack("32x4xI")  # colours, specular power, opacity, property flags
    if f.count(n_frames, "frame count") < 1 or f.count(n_indices, "index count") % 3:
        raise f.fail(f"a mesh with {n_frames} frames and {n_indices} indices (corrupt)")
    f.take(64 * (texture_bits & 0xFF).bit_count())  # a 64-byte file name per texture
    positions = f.array(np.float32, f.count(n_frames * n_verts, "vertex count"), 3)[:n_verts]
    f.take(12 * n_frames * n_verts)  # normals of every frame
    if texture_bits:
        f.take(8 * n_verts)  # texture coordinates
    return positions.astype(np.float64), f.array(np.uint32, n_indices // 3, 3).astype(np.int64)


def read_g3d(data: bytes) -> trimesh.Trimesh:
    """A MegaGlest/Glest G3D model (version 4): frame 0 of every mesh, all meshes in one.
    G3D is Y-up and right-handed with counter-clockwise faces like vat, so it is kept as stored
    (the tall axis of trees and units is Y; 1,187 of the 1,291 real models have positive volume)."""
    f = _Bytes(data, "g3d")
    magic, version = f.unpack("3sB")
    if magic != b"G3D" or version != 4:
        raise f.fail(f"expected the G3D version 4 header, found {magic!r} version {version}")
    n_meshes, model_type = f.unpack("HB")
    if model_type != 0:
        raise f.fail(f"model type {model_type} is not the morph-mesh type 0")
    vertices, faces = _join_parts(f, [_g3d_mesh(f) for _ in range(n_meshes)], "the .g3d model has no meshes")
    return _mesh(vertices, faces, "g3d")


_READERS = {"md2": read_md2, "pmd": read_pmd, "spm": read_spm, "g3d": read_g3d}
FORMATS = tuple(_READERS)


def read_mesh_bytes(data: bytes, fmt: str) -> trimesh.Trimesh:
    """Read a mesh in one of FORMATS from its bytes."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in _READERS:
        raise MeshError(f"{fmt!r} is not a game mesh format vat reads: expected one of {', '.join(FORMATS)}")
    return _READERS[fmt](data)
