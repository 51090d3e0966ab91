"""One tokens result (vat.tokens.Tokens): what MeshCodec.encode returns and what a Generation is; the mesh and
the .vat file of any prefix of its scales."""

import pickle

import numpy as np
import pytest
import trimesh

from vat.codec import FLAG_ENTROPY
from vat.errors import VatError
from vat.geometry.extract import postprocess
from vat.pipeline import Encoded, Generation, MeshCodec, Pipeline
from vat.tokens import Sample, Tokens, check_scales, decode_key


@pytest.fixture(scope="module")
def codec(tiny_checkpoint):
    return MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def moved_box():
    return trimesh.creation.box((3.0, 1.0, 2.0)).apply_translation((10, -4, 2))


def test_check_scales():
    assert check_scales(None, 3) == 3 and check_scales(1, 3) == 1 and check_scales(3, 3) == 3
    for wrong in (0, 4, -1):
        with pytest.raises(VatError, match=f"scale must be between 1 and 3, got {wrong}"):
            check_scales(wrong, 3)


def test_encode_returns_tokens_whose_prefix_files_keep_the_placement(codec, moved_box):
    encoded = codec.encode(moved_box)
    assert Encoded is Tokens and isinstance(encoded, Tokens) and not isinstance(encoded, Generation)
    assert encoded.num_scales == codec.num_scales and encoded.tokens_at() == encoded.num_tokens
    assert encoded.vat() == encoded.data == codec.write(encoded.indices, encoded.placement)
    sizes = []
    for s in range(1, encoded.num_scales + 1):
        file = codec.read_file(encoded.vat(s))
        assert file.num_scales == s and file.placement == encoded.placement
        assert all((a == b).all() for a, b in zip(file.indices, encoded.indices[:s], strict=True))
        assert encoded.vat(s) == codec.write(encoded.indices[:s], encoded.placement)  # None: the smaller coding
        sizes.append(len(encoded.vat(s)))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    for wrong in (0, encoded.num_scales + 1):
        with pytest.raises(VatError, match="between 1 and"):
            encoded.vat(wrong)


def test_the_files_of_raw_and_fitted_tokens(codec, moved_box):
    raw = codec.encode(moved_box, raw=True)
    assert not raw.entropy_coded and not raw.vat(1)[11] & FLAG_ENTROPY  # every prefix bit-packed, as asked
    assert raw.vat(2) == codec.write(raw.indices[:2], raw.placement, raw=True)
    budget = len(raw.vat(2))
    fitted = codec.encode(moved_box, raw=True, max_bytes=budget)
    assert fitted.num_scales == 2 and fitted.data == raw.vat(2) and len(fitted.data) <= budget


def test_mesh_of_a_prefix_is_the_codecs_and_made_once(codec, moved_box):
    encoded = codec.encode(moved_box)
    mesh = encoded.mesh(2, 16)
    expected = codec.decode_mesh(encoded.indices, scales=2, resolution=16)
    np.testing.assert_allclose(mesh.vertices, expected.vertices)
    assert encoded.mesh(2, 16) is mesh and list(encoded.timings) == ["decode_s2_r16"]
    assert np.abs(mesh.vertices).max() < 1  # in the unit cube; the placement puts it back
    np.testing.assert_allclose(encoded.placement.apply(mesh).vertices, mesh.vertices * 3.0 + (10, -4, 2), atol=2e-3)
    with pytest.raises(VatError, match="between 1 and"):
        encoded.mesh(encoded.num_scales + 1)


def test_a_raw_mesh_is_the_codecs_kept_and_timed_apart(codec, moved_box):
    """mesh(clean=False): the extraction before vat.geometry.extract.postprocess (MeshCodec.decode_mesh's
    clean=False), cached and timed apart from the cleaned mesh (decode_key's _raw)."""
    encoded = codec.encode(moved_box)
    raw, cleaned = encoded.mesh(2, 16, clean=False), encoded.mesh(2, 16)
    expected = codec.decode_mesh(encoded.indices, scales=2, resolution=16, clean=False)
    np.testing.assert_allclose(raw.vertices, expected.vertices)
    np.testing.assert_array_equal(raw.faces, expected.faces)
    again = postprocess(raw)
    np.testing.assert_allclose(cleaned.vertices, again.vertices)
    np.testing.assert_array_equal(cleaned.faces, again.faces)
    assert encoded.mesh(2, 16, clean=False) is raw and encoded.mesh(2, 16) is cleaned
    assert list(encoded.timings) == [decode_key(2, 16, clean=False), decode_key(2, 16)] == ["decode_s2_r16_raw",
                                                                                            "decode_s2_r16"]


def test_a_generation_is_tokens_with_its_seed_and_settings(tiny_checkpoint, codec):
    pipeline = Pipeline.from_pretrained(tiny_checkpoint, device="cpu")
    generation = pipeline.generate(text="a chair", seed=3, resolution=16)
    assert isinstance(generation, Tokens) and generation.seed == 3 and generation.settings["text"] == "a chair"
    assert generation.placement is None and generation.vat(2) == pipeline.codec.write(generation.indices[:2])
    assert set(generation.timings) == {"preprocess", "condition", "sample"}
    generation.mesh(1)
    assert "decode_s1_r16" in generation.timings
    # An encoded mesh's tokens decode the same way through the same type.
    encoded = codec.encode(trimesh.creation.icosphere(2))
    assert type(encoded).mesh is type(generation).mesh and type(encoded).vat is type(generation).vat


def test_another_sample_of_a_search_is_chosen_by_its_seed(tiny_checkpoint):
    pipeline = Pipeline.from_pretrained(tiny_checkpoint, device="cpu")
    drawn = [pipeline.generate(text="a chair", seed=s, resolution=16) for s in (4, 5, 6)]
    samples = [Sample(g.seed, g.indices, score, (15.0 * k, 0.0))
               for k, (g, score) in enumerate(zip(drawn, (0.5, 0.7, -1.0)))]
    shown = Generation(drawn[1].indices, pipeline.codec, seed=5, settings={**drawn[1].settings, "outline_score": 0.7},
                       timings={"sample": 1.0, "decode_s1_r16": 0.1}, resolution=16, samples=samples)
    other = shown.choose(4)
    assert other.seed == 4 and other.samples is samples and other.resolution == 16
    assert all(np.array_equal(a, b) for a, b in zip(other.indices, drawn[0].indices))
    assert other.settings == {**shown.settings, "outline_score": 0.5}
    assert other.timings == {"sample": 1.0}  # how it was drawn; its meshes are not decoded yet
    assert other.vat() == pipeline.codec.write(drawn[0].indices)
    with pytest.raises(VatError, match=r"sample seed 9 is not one of this generation's samples \(seeds: 4, 5, 6\)"):
        shown.choose(9)
    with pytest.raises(VatError, match="no search was made"):
        drawn[0].choose(4)


def test_pickled_tokens_leave_their_codec_behind(codec, moved_box):
    """What ZeroGPU does to a call's result: the tokens and their file travel, the model does not."""
    encoded = codec.encode(moved_box)
    encoded.mesh(1, 16)
    data = pickle.dumps(encoded)
    assert len(data) < 2 * encoded.num_tokens * 8 + 4096  # the int64 tokens and the file, no weights
    back = pickle.loads(data)
    assert back.codec is None and back.data == encoded.data and back.placement == encoded.placement
    assert back.entropy_coded == encoded.entropy_coded and back.num_tokens == encoded.num_tokens
    assert all((a == b).all() for a, b in zip(back.indices, encoded.indices, strict=True))
    with pytest.raises(VatError, match="unpickled without their codec"):
        back.mesh(1, 16)
    back.codec = codec
    np.testing.assert_allclose(back.mesh(1, 16).vertices, encoded.mesh(1, 16).vertices)
    assert back.vat(1) == encoded.vat(1)
