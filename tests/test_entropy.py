"""Entropy-coded .vat files (vat.entropy): the decoder gets back exactly the tokens that were encoded, in
this process and another, whatever precision the caller computes in; damaged or foreign files are clear
errors."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from vat.codec import FLAG_ENTROPY, FLAG_PLACEMENT_F32, CodecError, decode_tokens
from vat.entropy import PROBABILITY_TOTAL, GeneratorPrior, quantized_probabilities
from vat.geometry.procedural import random_shape
from vat.pipeline import MeshCodec


@pytest.fixture(scope="module")
def codec(tiny_checkpoint):
    return MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")


def random_lists(codec, count, seed=0):
    """Token lists of every prefix length, uniform and peaked (many repeats), as files hold them."""
    rng = np.random.default_rng(seed)
    sides, size = codec.config.scale_sides, codec.config.codebook_size
    out = []
    for k in range(count):
        scales = int(rng.integers(1, len(sides) + 1))
        high = size if k % 2 else 3
        out.append([rng.integers(0, high, s * s) for s in sides[:scales]])
    return out


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_random_token_lists_round_trip(codec):
    assert codec.prior is not None  # the checkpoint has a generator: files may be entropy-coded
    for indices in random_lists(codec, 40):
        chosen = codec.write(indices)  # by default the smaller of the two (this random prior is often worse)
        assert len(chosen) == min(len(codec.write(indices, raw=False)), len(codec.write(indices, raw=True)))
        data = codec.write(indices, raw=False)
        assert data[11] & FLAG_ENTROPY
        assert same(codec.read(data), indices)
        raw = codec.write(indices, raw=True)
        assert not raw[11] & FLAG_ENTROPY and same(codec.read(raw), indices)


def test_real_encodings_round_trip_and_code_what_the_prior_predicts(codec):
    for k in range(4):
        encoded = codec.encode(random_shape(k).mesh, seed=k, raw=False)
        tokens = codec.read_file(encoded.data)
        assert same(list(tokens.indices), encoded.indices) and tokens.prior == codec.prior.fingerprint
        # The payload is the information content under the quantised prior plus the coder's last words.
        bits = sum(b * len(i) for b, i in zip(codec.prior.bits(encoded.indices), encoded.indices))
        placement = 16 if encoded.data[11] & FLAG_PLACEMENT_F32 else 8
        header = 12 + len(codec.config.scale_sides) + placement + 4  # + the prior's fingerprint
        coded = 8 * (len(encoded.data) - header - 4)  # - the CRC
        assert bits <= coded <= bits + 64, (bits, coded)


def test_a_second_process_decodes_the_same_tokens(codec, tiny_checkpoint, tmp_path):
    files = []
    for k, indices in enumerate(random_lists(codec, 6, seed=1)):
        files.append(tmp_path / f"{k}.vat")
        files[-1].write_bytes(codec.write(indices, raw=False))
    script = ("import sys, numpy as np; from vat.pipeline import MeshCodec; "
              f"c = MeshCodec.from_pretrained({str(tiny_checkpoint)!r}, device='cpu'); "
              "[np.save(f + '.npy', np.concatenate(c.read(open(f, 'rb').read()))) for f in sys.argv[1:]]")
    subprocess.run([sys.executable, "-c", script, *map(str, files)], check=True, timeout=120)
    for path, indices in zip(files, random_lists(codec, 6, seed=1)):
        np.testing.assert_array_equal(np.load(f"{path}.npy"), np.concatenate(indices))


def test_the_prior_does_not_depend_on_the_callers_precision(codec):
    """bf16 logits are not float32 logits: quantised, they give other probabilities, so a decoder that
    computed them in another precision would read other tokens. The prior computes in float32 on the CPU,
    whatever autocast or thread count the caller has, so the files come out the same."""
    indices = random_lists(codec, 2, seed=2)[1]
    plain = codec.write(indices, raw=False)
    threads = torch.get_num_threads()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert codec.write(indices, raw=False) == plain and same(codec.read(plain), indices)
    assert torch.get_num_threads() == threads
    generator = codec.prior.generator
    as_bf16 = GeneratorPrior(generator.to(torch.bfloat16), codec.prior.quantizer)
    generator.float()
    assert as_bf16.fingerprint != codec.prior.fingerprint  # weights rounded to bf16 are another prior
    logits = torch.randn(5, codec.config.codebook_size) * 4
    assert not np.array_equal(quantized_probabilities(logits), quantized_probabilities(logits.bfloat16()))
    counts = quantized_probabilities(logits)
    assert counts.min() >= 1 and counts.sum(1).max() <= PROBABILITY_TOTAL


def test_one_teacher_forced_pass_gives_the_scale_by_scale_logits(codec):
    """The block-causal mask: the whole sequence in one forward pass gives each scale the logits that the
    kv-cache pass gives it (up to float rounding; the coder itself always runs scale by scale)."""
    generator, quantizer = codec.prior.generator, codec.prior.quantizer
    indices = [torch.as_tensor(i)[None] for i in random_lists(codec, 2, seed=3)[1]]
    indices += [torch.zeros(1, s * s, dtype=torch.long) for s in codec.config.scale_sides[len(indices):]]
    with torch.no_grad():
        full = generator(None, None, quantizer.teacher_forcing_input(indices))[0]
        steps = []
        generator.generate(quantizer, cfg=0.0, choose=lambda si, logits: (steps.append(logits[0]), indices[si])[1])
    torch.testing.assert_close(torch.cat(steps), full, rtol=1e-4, atol=1e-4)


def test_damaged_and_foreign_entropy_coded_files(codec, tiny_checkpoint):
    data = codec.encode(trimesh.creation.icosphere(2), raw=False).data
    with pytest.raises(CodecError, match="checksum|do not decode"):
        codec.read(data[:-6] + bytes([data[-6] ^ 0x40]) + data[-5:])
    with pytest.raises(CodecError, match="entropy-coded with the prior"):
        decode_tokens(data)  # no prior given: the file says which one it needs
    other = MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")
    torch.nn.init.zeros_(other.prior.generator.head.bias)
    other.prior = GeneratorPrior(other.prior.generator, other.prior.quantizer)
    with pytest.raises(CodecError, match="another prior"):
        other.read(data)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fuzz_mutated_entropy_coded_files(codec, draw):
    data = bytearray(codec.write(random_lists(codec, 2, seed=4)[1], raw=False))
    for _ in range(draw.draw(st.integers(1, 3))):
        data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
    try:
        codec.read(bytes(data[:draw.draw(st.integers(0, len(data)))]))
    except CodecError:
        pass
