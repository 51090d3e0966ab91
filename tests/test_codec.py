"""The .vat byte format: round trips, sizes, and that no input crashes the reader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vat.codec import CodecError, TokenFile, decode_tokens, encode_tokens
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
    assert len(data) == 3 + 1 + 4 + 3 + len(sides) + (tokens * bits + 7) // 8 + 4
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
    with pytest.raises(CodecError, match="another tokenizer"):
        decode_tokens(data, expected_fingerprint=b"\xff" * 4)
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
