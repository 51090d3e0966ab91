"""The `.vat` token file: a small header and the bit-packed token indices of every stored scale.

Layout (format version 1; integers little-endian):
    3 B  magic b"VAT"        1 B  format version
    4 B  tokenizer fingerprint (which model's codebook the indices refer to)
    1 B  bits per token b    1 B  scales of the tokenizer S    1 B  scales stored n (1..S)
    S B  side of each scale's square token map
    ...  indices of scales 1..n, row-major, b bits each, packed LSB-first, zero-padded to a byte
    4 B  CRC-32 of everything before it
Storing only the first n scales gives a smaller, coarser file that decodes all the same.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from vat.errors import VatError

MAGIC = b"VAT"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 4
_FIXED = struct.Struct("<3sB4sBBB")  # magic, version, fingerprint, bits, scales, stored
_CRC_BYTES = 4


class CodecError(VatError):
    """A .vat file that cannot be decoded: truncated, corrupted, from another tokenizer or version."""


@dataclass(frozen=True)
class TokenFile:
    fingerprint: bytes  # FINGERPRINT_BYTES, identifies the tokenizer
    scale_sides: tuple[int, ...]  # all scales of the tokenizer
    bits: int  # bits per token
    indices: tuple[np.ndarray, ...]  # the stored scales: int64 [side * side] each

    @property
    def num_scales(self) -> int:
        return len(self.indices)


def _payload_bytes(sides: tuple[int, ...], stored: int, bits: int) -> int:
    return (sum(s * s for s in sides[:stored]) * bits + 7) // 8


def encode_tokens(indices: list[np.ndarray], scale_sides: tuple[int, ...], bits: int, fingerprint: bytes) -> bytes:
    """Bytes of a .vat file holding `indices` (one int array per scale, a prefix of the schedule)."""
    sides = tuple(int(s) for s in scale_sides)
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise CodecError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    if not 1 <= bits <= 32 or not 1 <= len(sides) <= 255 or not all(1 <= s <= 255 for s in sides):
        raise CodecError(f"cannot store {bits}-bit tokens on scales {sides}")
    if not 1 <= len(indices) <= len(sides):
        raise CodecError(f"need 1..{len(sides)} scales of tokens, got {len(indices)}")
    flat = []
    for si, idx in enumerate(indices):
        idx = np.asarray(idx).reshape(-1).astype(np.int64)
        if idx.size != sides[si] ** 2:
            raise CodecError(f"scale {si + 1} has {idx.size} tokens, expected {sides[si] ** 2}")
        if idx.size and (idx.min() < 0 or idx.max() >= 1 << bits):
            raise CodecError(f"scale {si + 1} has token indices outside 0..{(1 << bits) - 1}")
        flat.append(idx)
    values = np.concatenate(flat).astype(np.uint64)
    bit_matrix = (values[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)
    payload = np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()
    body = _FIXED.pack(MAGIC, FORMAT_VERSION, bytes(fingerprint), bits, len(sides), len(indices)) + bytes(sides) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def decode_tokens(data: bytes, expected_fingerprint: bytes | None = None, codebook_size: int | None = None) -> TokenFile:
    """Parse a .vat file; raises CodecError with a message that says what is wrong."""
    data = bytes(data)
    if len(data) < _FIXED.size + 1 + _CRC_BYTES:
        raise CodecError(f"not a .vat file: {len(data)} bytes is shorter than any .vat header")
    magic, version, fingerprint, bits, num_scales, stored = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise CodecError("not a .vat file (its first bytes are not the .vat magic number)")
    if version > FORMAT_VERSION:
        raise CodecError(f"this .vat file uses format version {version}; this vat reads up to {FORMAT_VERSION}: upgrade vat")
    if version < 1:
        raise CodecError(f"this .vat file has an invalid format version {version}")
    if not 1 <= bits <= 32 or num_scales == 0 or not 1 <= stored <= num_scales:
        raise CodecError(f"corrupted .vat header ({bits} bits per token, {stored} of {num_scales} scales)")
    header_end = _FIXED.size + num_scales
    if len(data) < header_end + _CRC_BYTES:
        raise CodecError("truncated .vat file: the header is incomplete")
    sides = tuple(data[_FIXED.size:header_end])
    if 0 in sides or list(sides) != sorted(set(sides)):
        raise CodecError(f"corrupted .vat header: scale sides {sides} must be positive and increasing")
    expected = header_end + _payload_bytes(sides, stored, bits) + _CRC_BYTES
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "corrupted (trailing bytes)"
        raise CodecError(f"{kind} .vat file: {len(data)} bytes where its header implies {expected}")
    (crc,) = struct.unpack_from("<I", data, len(data) - _CRC_BYTES)
    if crc != zlib.crc32(data[:-_CRC_BYTES]):
        raise CodecError("corrupted .vat file: its checksum does not match its contents")
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        raise CodecError(
            f"this .vat file was made by another tokenizer (fingerprint {fingerprint.hex()}, "
            f"this model is {expected_fingerprint.hex()}): decode it with the checkpoint that encoded it"
        )
    count = sum(s * s for s in sides[:stored])
    bit_array = np.unpackbits(np.frombuffer(data, np.uint8, offset=header_end, count=expected - header_end - _CRC_BYTES),
                              count=count * bits, bitorder="little")
    values = bit_array.reshape(count, bits).astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    if codebook_size is not None and count and values.max() >= codebook_size:
        raise CodecError(f"this .vat file has token {values.max()}, beyond the model's codebook of {codebook_size}")
    splits = np.cumsum([s * s for s in sides[:stored]])[:-1]
    return TokenFile(fingerprint, sides, bits, tuple(np.split(values, splits)))
