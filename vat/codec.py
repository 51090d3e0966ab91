"""The `.vat` token file: a small header, where the mesh was (its placement), and the token indices of
every stored scale, bit-packed or entropy-coded with a prior over the tokens.

Layout, format version 2 (integers little-endian):
    3 B  magic b"VAT"        1 B  format version
    4 B  tokenizer fingerprint (which model's codebook the indices refer to)
    1 B  bits per token b    1 B  scales of the tokenizer S    1 B  scales stored n (1..S)    1 B  flags
    S B  side of each scale's square token map
    8 B  placement (flag PLACEMENT): the mesh's bounding-box centre x, y, z and its longest side, float16
         (16 B, float32, with flag PLACEMENT_F32: where float16 would move the mesh by more than PLACEMENT_TOLERANCE)
    4 B  prior fingerprint (flag ENTROPY): which model's probabilities coded the tokens
    ...  payload: indices of scales 1..n, row-major, b bits each, packed LSB-first, zero-padded to a byte;
         with flag ENTROPY, the range coder's 32-bit words (vat.entropy) instead
    4 B  CRC-32 of everything before it; with flag ENTROPY, of everything before it followed by the decoded
         tokens bit-packed as above (which the file does not store): a file whose prior computed differently
         on the decoding machine fails the check instead of decoding to other tokens
Format version 1 (what vat wrote before placement; still read) has no flags byte, no placement and no
entropy coding. Storing only the first n scales gives a smaller, coarser file that decodes all the same.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import trimesh

from vat.errors import VatError

MAGIC = b"VAT"
FORMAT_VERSION = 2
FINGERPRINT_BYTES = 4
FLAG_PLACEMENT, FLAG_PLACEMENT_F32, FLAG_ENTROPY = 1, 2, 4
_KNOWN_FLAGS = FLAG_PLACEMENT | FLAG_PLACEMENT_F32 | FLAG_ENTROPY
# Placement in float16 unless its rounding moves a point of the unit cube by more than this (in units of the
# mesh's size; a tenth of the protocol's F-score tau): then float32.
PLACEMENT_TOLERANCE = 1e-3
_FIXED = struct.Struct("<3sB4sBBB")  # magic, version, fingerprint, bits, scales, stored
_CRC_BYTES = 4
# Tokenizers this project shipped before, by fingerprint: a file of theirs is named with where its model is.
EARLIER_SHIPPED = {bytes.fromhex("f311013a"): "vat-tiny-grid, the default checkpoint until session 31 (its files: "
                                              "`git show dcb1f65:checkpoints/FILE`)"}


class CodecError(VatError):
    """A .vat file that cannot be decoded: truncated, corrupted, from another tokenizer or version."""


@dataclass(frozen=True)
class Placement:
    """Where a mesh was: its bounding box's centre and longest side. The codec works in the unit cube
    (the mesh centred and scaled to a longest side of 1); apply() puts a unit-cube mesh back."""

    centre: tuple[float, float, float]
    size: float

    @classmethod
    def from_transform(cls, transform_44: np.ndarray) -> Placement:
        """The placement undone by vat.geometry.io.normalization_transform's matrix."""
        size = 1.0 / float(transform_44[0, 0])
        return cls(tuple(float(v) for v in -np.asarray(transform_44[:3, 3]) * size), size)

    def apply(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        """A copy of the unit-cube `mesh` scaled to this size and moved to this centre."""
        out = mesh.copy()
        out.apply_scale(self.size)
        out.apply_translation(self.centre)
        return out

    def values(self) -> np.ndarray:
        return np.array([*self.centre, self.size], dtype=np.float64)

    def pack(self) -> tuple[int, bytes]:
        """(flags, bytes): float16 where its rounding error stays under PLACEMENT_TOLERANCE, else float32."""
        values = self.values()
        if not np.all(np.isfinite(values)) or values[3] <= 0:
            raise CodecError(f"cannot store the placement {self}: it must be finite with a positive size")
        half = values.astype(np.float16).astype(np.float64)
        error = (np.abs(half[:3] - values[:3]).max() + 0.5 * np.sqrt(3) * abs(half[3] - values[3])) / values[3]
        if np.all(np.isfinite(half)) and half[3] > 0 and error <= PLACEMENT_TOLERANCE:
            return FLAG_PLACEMENT, values.astype("<f2").tobytes()
        return FLAG_PLACEMENT | FLAG_PLACEMENT_F32, values.astype("<f4").tobytes()

    @classmethod
    def unpack(cls, data: bytes, f32: bool) -> Placement:
        values = np.frombuffer(data, "<f4" if f32 else "<f2").astype(np.float64)
        if not np.all(np.isfinite(values)) or values[3] <= 0:
            raise CodecError("corrupted .vat file: its placement is not finite or its size not positive")
        return cls(tuple(float(v) for v in values[:3]), float(values[3]))


class TokenPrior(Protocol):
    """What entropy-codes the tokens (vat.entropy.GeneratorPrior): a fingerprint of the model whose
    probabilities it uses, and the payload of a list of per-scale indices and back."""

    fingerprint: bytes

    def encode(self, indices: list[np.ndarray]) -> bytes: ...

    def decode(self, payload: bytes, scales: int) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class TokenFile:
    fingerprint: bytes  # FINGERPRINT_BYTES, identifies the tokenizer
    scale_sides: tuple[int, ...]  # all scales of the tokenizer
    bits: int  # bits per token
    indices: tuple[np.ndarray, ...]  # the stored scales: int64 [side * side] each
    placement: Placement | None = None  # None: a version-1 file or one written without it (unit cube)
    prior: bytes | None = None  # the prior's fingerprint for an entropy-coded file, None for raw tokens
    version: int = FORMAT_VERSION

    @property
    def num_scales(self) -> int:
        return len(self.indices)


def _payload_bytes(sides: tuple[int, ...], stored: int, bits: int) -> int:
    return (sum(s * s for s in sides[:stored]) * bits + 7) // 8


def _pack(indices: list[np.ndarray], bits: int) -> bytes:
    values = np.concatenate([np.asarray(i).reshape(-1) for i in indices]).astype(np.uint64)
    bit_matrix = (values[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)
    return np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def _unpack(payload: bytes, sides: tuple[int, ...], stored: int, bits: int) -> list[np.ndarray]:
    count = sum(s * s for s in sides[:stored])
    bit_array = np.unpackbits(np.frombuffer(payload, np.uint8), count=count * bits, bitorder="little")
    values = bit_array.reshape(count, bits).astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    return np.split(values, np.cumsum([s * s for s in sides[:stored]])[:-1])


def _check_indices(indices: list[np.ndarray], sides: tuple[int, ...], bits: int) -> list[np.ndarray]:
    if not 1 <= len(indices) <= len(sides):
        raise CodecError(f"need 1..{len(sides)} scales of tokens, got {len(indices)}")
    out = []
    for si, idx in enumerate(indices):
        idx = np.asarray(idx).reshape(-1).astype(np.int64)
        if idx.size != sides[si] ** 2:
            raise CodecError(f"scale {si + 1} has {idx.size} tokens, expected {sides[si] ** 2}")
        if idx.size and (idx.min() < 0 or idx.max() >= 1 << bits):
            raise CodecError(f"scale {si + 1} has token indices outside 0..{(1 << bits) - 1}")
        out.append(idx)
    return out


def encode_tokens(indices: list[np.ndarray], scale_sides: tuple[int, ...], bits: int, fingerprint: bytes,
                  placement: Placement | None = None, prior: TokenPrior | None = None) -> bytes:
    """Bytes of a .vat file holding `indices` (one int array per scale, a prefix of the schedule), with the
    mesh's `placement` when given, entropy-coded with `prior` when given (raw bit-packed otherwise)."""
    sides = tuple(int(s) for s in scale_sides)
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise CodecError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    if not 1 <= bits <= 32 or not 1 <= len(sides) <= 255 or not all(1 <= s <= 255 for s in sides):
        raise CodecError(f"cannot store {bits}-bit tokens on scales {sides}")
    indices = _check_indices(indices, sides, bits)
    flags, extra = 0, b""
    if placement is not None:
        flags, extra = placement.pack()
    raw = _pack(indices, bits)
    payload, check = raw, b""
    if prior is not None:
        if len(prior.fingerprint) != FINGERPRINT_BYTES:
            raise CodecError(f"prior fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(prior.fingerprint)}")
        flags |= FLAG_ENTROPY
        extra += bytes(prior.fingerprint)
        payload, check = prior.encode(indices), raw
    body = (_FIXED.pack(MAGIC, FORMAT_VERSION, bytes(fingerprint), bits, len(sides), len(indices)) + bytes([flags])
            + bytes(sides) + extra + payload)
    return body + struct.pack("<I", zlib.crc32(body + check))


def _header(data: bytes) -> tuple[int, bytes, int, tuple[int, ...], int, int, int]:
    """(version, fingerprint, bits, sides, stored, flags, end of the scale sides) of a file, checked."""
    if len(data) < _FIXED.size + 1 + _CRC_BYTES:
        raise CodecError(f"not a .vat file: {len(data)} bytes is shorter than any .vat header")
    magic, version, fingerprint, bits, num_scales, stored = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise CodecError("not a .vat file (its first bytes are not the .vat magic number)")
    if version > FORMAT_VERSION:
        raise CodecError(f"this .vat file uses format version {version}; this vat reads up to {FORMAT_VERSION}: "
                         "upgrade vat")
    if version < 1:
        raise CodecError(f"this .vat file has an invalid format version {version}")
    if not 1 <= bits <= 32 or num_scales == 0 or not 1 <= stored <= num_scales:
        raise CodecError(f"corrupted .vat header ({bits} bits per token, {stored} of {num_scales} scales)")
    flags, start = (data[_FIXED.size], _FIXED.size + 1) if version >= 2 else (0, _FIXED.size)
    if flags & ~_KNOWN_FLAGS or (flags & FLAG_PLACEMENT_F32 and not flags & FLAG_PLACEMENT):
        raise CodecError(f"corrupted .vat header: unknown flags {flags:#04x}")
    end = start + num_scales
    if len(data) < end + _CRC_BYTES:
        raise CodecError("truncated .vat file: the header is incomplete")
    sides = tuple(data[start:end])
    if 0 in sides or list(sides) != sorted(set(sides)):
        raise CodecError(f"corrupted .vat header: scale sides {sides} must be positive and increasing")
    return version, fingerprint, bits, sides, stored, flags, end


def decode_tokens(data: bytes, expected_fingerprint: bytes | None = None, codebook_size: int | None = None,
                  prior: TokenPrior | None = None) -> TokenFile:
    """Parse a .vat file (format version 1 or 2); an entropy-coded one needs the `prior` it was coded with.
    Raises CodecError with a message that says what is wrong."""
    data = bytes(data)
    version, fingerprint, bits, sides, stored, flags, offset = _header(data)
    placement, prior_fingerprint = None, None
    extra = (16 if flags & FLAG_PLACEMENT_F32 else 8 if flags & FLAG_PLACEMENT else 0) + \
        (FINGERPRINT_BYTES if flags & FLAG_ENTROPY else 0)
    if len(data) < offset + extra + _CRC_BYTES:
        raise CodecError("truncated .vat file: the header is incomplete")
    if flags & FLAG_PLACEMENT:
        size = 16 if flags & FLAG_PLACEMENT_F32 else 8
        placement_bytes, offset = data[offset:offset + size], offset + size
    if flags & FLAG_ENTROPY:
        prior_fingerprint, offset = data[offset:offset + FINGERPRINT_BYTES], offset + FINGERPRINT_BYTES
    payload = data[offset:len(data) - _CRC_BYTES]
    if not flags & FLAG_ENTROPY:
        expected = offset + _payload_bytes(sides, stored, bits) + _CRC_BYTES
        if len(data) != expected:
            kind = "truncated" if len(data) < expected else "corrupted (trailing bytes)"
            raise CodecError(f"{kind} .vat file: {len(data)} bytes where its header implies {expected}")
    (crc,) = struct.unpack_from("<I", data, len(data) - _CRC_BYTES)
    body = data[:-_CRC_BYTES]
    if not flags & FLAG_ENTROPY and crc != zlib.crc32(body):
        raise CodecError("corrupted .vat file: its checksum does not match its contents")
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        known = f", {EARLIER_SHIPPED[fingerprint]}" if fingerprint in EARLIER_SHIPPED else ""
        raise CodecError(
            f"this .vat file was made by another tokenizer (fingerprint {fingerprint.hex()}{known}; "
            f"this model is {expected_fingerprint.hex()}): decode it with the checkpoint that encoded it"
        )
    if flags & FLAG_ENTROPY:
        indices = _decode_entropy(body, payload, crc, prior_fingerprint, prior, sides, stored, bits)
    else:
        indices = _unpack(payload, sides, stored, bits)
    if codebook_size is not None and max(int(i.max()) for i in indices) >= codebook_size:
        raise CodecError(f"this .vat file has token {max(int(i.max()) for i in indices)}, beyond the model's "
                         f"codebook of {codebook_size}")
    if flags & FLAG_PLACEMENT:
        placement = Placement.unpack(placement_bytes, bool(flags & FLAG_PLACEMENT_F32))
    return TokenFile(fingerprint, sides, bits, tuple(indices), placement, prior_fingerprint, version)


def _decode_entropy(body: bytes, payload: bytes, crc: int, prior_fingerprint: bytes, prior: TokenPrior | None,
                    sides: tuple[int, ...], stored: int, bits: int) -> list[np.ndarray]:
    if prior is None:
        raise CodecError(f"this .vat file is entropy-coded with the prior {prior_fingerprint.hex()} (a generator): "
                         "decode it with the checkpoint folder that encoded it, generator included")
    if prior.fingerprint != prior_fingerprint:
        raise CodecError(f"this .vat file was entropy-coded with another prior (fingerprint {prior_fingerprint.hex()}, "
                         f"this generator is {prior.fingerprint.hex()}): decode it with the checkpoint that encoded it")
    try:
        indices = prior.decode(payload, stored)
        indices = _check_indices(indices, sides, bits)
        ok = crc == zlib.crc32(body + _pack(indices, bits))
    except CodecError:
        raise
    except Exception as exc:  # the range decoder on bytes that are not its own
        raise CodecError(f"corrupted .vat file: its entropy-coded tokens do not decode ({exc})") from exc
    if not ok:
        raise CodecError("corrupted .vat file: its checksum does not match the decoded tokens (the file is damaged, "
                         "or this machine computes the prior's probabilities differently from the encoder's)")
    return indices
