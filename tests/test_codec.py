"""The .vat byte format: round trips, sizes, and that no input crashes the reader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vat.codec import (
    FORMAT_VERSION,
    PLACEMENT_TOLERANCE,
    CodecError,
    Placement,
    TokenFile,
    decode_tokens,
    encode_tokens,
)
from vat.models.quantizer import SCALE_SIDES

FP = b"\x01\x02\x03\x04"


def random_indices(sides, bits, seed=0, stored=None):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1 << bits, s * s) for s in sides[: stored or len(sides)]]


@pytest.mark.parametrize("k, bits", [(256, 11), (576, 14), (1024, 11), (256, 8)])
def test_round_trip_and_size(k, bits):
    sides = SCALE_SIDES[k]
    indices = random_indices(sides, bits)
    data = encode_tokens(indices, sides, bits, FP)
    tokens = sum(s * s for s in sides)
    assert len(data) == 3 + 1 + 4 + 3 + 1 + len(sides) + (tokens * bits + 7) // 8 + 4
    decoded = decode_tokens(data, expected_fingerprint=FP, codebook_size=1 << bits)
    assert isinstance(decoded, TokenFile) and decoded.scale_sides == sides and decoded.bits == bits
    for a, b in zip(indices, decoded.indices, strict=True):
        np.testing.assert_array_equal(a, b)


def test_prefix_of_scales_is_smaller_and_decodes():
    sides = SCALE_SIDES[256]
    full = encode_tokens(random_indices(sides, 11), sides, 11, FP)
    coarse = encode_tokens(random_indices(sides, 11, stored=4), sides, 11, FP)
    assert len(coarse) < len(full)
    assert decode_tokens(coarse).num_scales == 4


def test_clear_errors():
    sides = SCALE_SIDES[256]
    data = encode_tokens(random_indices(sides, 11), sides, 11, FP)
    with pytest.raises(CodecError, match="another tokenizer") as error:
        decode_tokens(data, expected_fingerprint=b"\xff" * 4)
    assert "vat-tiny-grid" not in str(error.value)
    # a file of the tokenizer shipped before is named, with where that checkpoint is
    earlier = encode_tokens(random_indices(sides, 11), sides, 11, bytes.fromhex("f311013a"))
    with pytest.raises(CodecError, match=r"f311013a, vat-tiny-grid, .*git show dcb1f65:checkpoints"):
        decode_tokens(earlier, expected_fingerprint=b"\xff" * 4)
    with pytest.raises(CodecError, match="truncated"):
        decode_tokens(data[:-10])
    with pytest.raises(CodecError, match="checksum"):
        decode_tokens(data[:40] + bytes([data[40] ^ 0x10]) + data[41:])
    with pytest.raises(CodecError, match="upgrade"):
        decode_tokens(data[:3] + b"\x07" + data[4:])
    with pytest.raises(CodecError, match="not a .vat"):
        decode_tokens(b"PK\x03\x04" + data[4:])
    with pytest.raises(CodecError, match="codebook"):
        decode_tokens(data, codebook_size=16)
    with pytest.raises(CodecError, match="outside"):
        encode_tokens([np.array([5000])], sides, 11, FP)


# A version-1 file as vat wrote it before placement and entropy coding (made by that version's
# encode_tokens: sides (1, 2, 3, 4), 6-bit tokens, 3 scales stored, fingerprint 0a0b0c0d).
VERSION_1 = bytes.fromhex("564154010a0b0c0d0604030102030405f0472a70381537aa310e28443053")


def test_version_1_files_still_decode():
    tokens = decode_tokens(VERSION_1, expected_fingerprint=bytes.fromhex("0a0b0c0d"), codebook_size=64)
    assert tokens.version == 1 and tokens.placement is None and tokens.prior is None
    assert tokens.scale_sides == (1, 2, 3, 4) and tokens.bits == 6
    expected = [[5], [0, 63, 17, 42], list(np.arange(9) * 7)]
    assert [t.tolist() for t in tokens.indices] == expected
    with pytest.raises(CodecError, match="truncated"):
        decode_tokens(VERSION_1[:-1])
    # Written today, the same tokens are a version-2 file one byte (the flags) longer.
    again = encode_tokens([np.array(t) for t in expected], (1, 2, 3, 4), 6, bytes.fromhex("0a0b0c0d"))
    assert again[3] == FORMAT_VERSION == 2 and len(again) == len(VERSION_1) + 1


@pytest.mark.parametrize("centre, size, width", [((0.0, 0.0, 0.0), 0.8, 8), ((0.1, -0.25, 0.3), 1.7, 8),
                                                 ((1000.3, -2.0, 3.0), 0.5, 16), ((1e-3, 0, 0), 1e-6, 16)])
def test_placement_round_trip(centre, size, width):
    """Float16 where it keeps the mesh within PLACEMENT_TOLERANCE of its size, float32 otherwise (far from the
    origin for its size, or too small for float16)."""
    sides = SCALE_SIDES[256][:3]
    indices = random_indices(sides, 10)
    plain = encode_tokens(indices, sides, 10, FP)
    placed = encode_tokens(indices, sides, 10, FP, placement=Placement(centre, size))
    assert len(placed) == len(plain) + width
    back = decode_tokens(placed).placement
    error = (np.abs(np.subtract(back.centre, centre)).max() + 0.5 * np.sqrt(3) * abs(back.size - size)) / size
    assert error <= PLACEMENT_TOLERANCE
    assert decode_tokens(plain).placement is None
    with pytest.raises(CodecError, match="truncated"):
        decode_tokens(placed[:16 + len(sides) + 4])
    with pytest.raises(CodecError, match="placement"):
        encode_tokens(indices, sides, 10, FP, placement=Placement((0, 0, 0), -1.0))


def test_placement_puts_a_unit_cube_mesh_back():
    import trimesh

    from vat.geometry.io import normalize_mesh

    box = trimesh.creation.box((3.0, 1.0, 2.0)).apply_translation((10, -4, 2))
    unit, transform = normalize_mesh(box)
    np.testing.assert_allclose(Placement.from_transform(transform).apply(unit).vertices, box.vertices, atol=1e-9)


def test_future_versions_and_flags_are_clear_errors():
    sides = SCALE_SIDES[256][:3]
    data = encode_tokens(random_indices(sides, 10), sides, 10, FP)
    with pytest.raises(CodecError, match="format version 3.*upgrade vat"):
        decode_tokens(data[:3] + bytes([3]) + data[4:])
    with pytest.raises(CodecError, match="unknown flags"):
        decode_tokens(data[:11] + bytes([0x80]) + data[12:])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data):
    try:
        decode_tokens(data)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_files(draw):
    sides = SCALE_SIDES[256][:5]
    data = bytearray(encode_tokens(random_indices(sides, 9, seed=1), sides, 9, FP))
    for _ in range(draw.draw(st.integers(1, 4))):
        position = draw.draw(st.integers(0, len(data) - 1))
        data[position] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(data)))
    try:
        decode_tokens(bytes(data[:cut]))
    except CodecError:
        pass
