"""The mesh codec around the tokenizer: file sizes, prefixes, and clean errors on bad input."""


import numpy as np
import pytest
import torch
import trimesh

from vat.codec import CodecError, encode_tokens
from vat.errors import VatError
from vat.geometry.extract import GRID_BOUND
from vat.models.tokenizer import VAT, TokenizerConfig
from vat.pipeline import MeshCodec, resolve_checkpoint

MICRO = TokenizerConfig(num_points=256, width=32, heads=2, num_queries=32, num_latents=16, encoder_layers=1,
                        decoder_layers=1, codebook_size=64, triplane_tokens=4, plane_channels=4, mlp_hidden=16)


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return MeshCodec(VAT(MICRO), device="cpu")


def test_encode_size_and_round_trip(codec):
    encoded = codec.encode(trimesh.creation.box((3.0, 1.0, 2.0)))
    tokens = sum(s * s for s in MICRO.scale_sides)
    assert encoded.num_tokens == tokens
    # The header (16 B), the scale sides, the placement (8 B in float16) and the tokens (6 bits each).
    assert len(encoded.data) == 16 + len(MICRO.scale_sides) + 8 + (tokens * 6 + 7) // 8
    for a, b in zip(codec.read(encoded.data), encoded.indices, strict=True):
        np.testing.assert_array_equal(a, b)


def test_encoding_is_placement_invariant_and_seeded(codec):
    """The tokens do not depend on where the mesh is; the file stores where it was."""
    box = trimesh.creation.box((3.0, 1.0, 2.0))
    moved = box.copy().apply_scale(7.0).apply_translation((10, -4, 2))
    a, b = codec.encode(box), codec.encode(moved)
    assert all((x == y).all() for x, y in zip(a.indices, b.indices, strict=True)) and a.data != b.data
    assert codec.read_file(b.data).placement.centre == pytest.approx((10, -4, 2), abs=1e-2)
    assert codec.read_file(b.data).placement.size == pytest.approx(21.0, rel=1e-3)


def test_decode_puts_the_mesh_back_where_it_was(tiny_checkpoint_of_each_design):
    tiny_checkpoint = tiny_checkpoint_of_each_design
    codec = MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")
    box = trimesh.creation.box((3.0, 1.0, 2.0)).apply_translation((10, -4, 2))
    data = codec.encode(box).data
    unit = codec.decode(data, resolution=16, placement=False)
    placed = codec.decode(data, resolution=16)
    assert np.abs(unit.vertices).max() <= GRID_BOUND + 1e-6  # the decoder's grid: the unit cube and a margin
    np.testing.assert_allclose(placed.vertices, unit.vertices * 3.0 + (10, -4, 2), atol=2e-3)
    # A file without a placement (Generation.vat, version 1) decodes into the unit cube either way.
    bare = codec.write(codec.read(data))
    np.testing.assert_allclose(codec.decode(bare, resolution=16).vertices, unit.vertices)


def test_prefix_of_scales(codec):
    encoded = codec.encode(trimesh.creation.icosphere(2), scales=2)
    assert len(codec.read(encoded.data)) == 2
    with pytest.raises(VatError, match="between 1 and"):
        codec.encode(trimesh.creation.icosphere(2), scales=99)


@pytest.mark.parametrize("fields", [{}, {"locality": "grid", "grid_up_levels": 1}])
def test_a_batch_of_token_lists_decodes_as_each_alone(fields, monkeypatch):
    """occupancy_fns decodes the planes of many shapes per batch (SAMPLE_BATCH of them; 2 here, so the
    last batch is short): each shape's field is the one occupancy_fn gives, for the triplane field (3
    plane rows per shape) and the grid field (one volume per shape)."""
    monkeypatch.setattr("vat.pipeline.SAMPLE_BATCH", 2)
    torch.manual_seed(0)
    codec = MeshCodec(VAT(MICRO.with_overrides(**fields)), device="cpu")
    rng = np.random.default_rng(0)
    candidates = [[rng.integers(0, MICRO.codebook_size, s * s) for s in MICRO.scale_sides] for _ in range(3)]
    points = rng.uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    together = [fn(points) for fn in codec.occupancy_fns(candidates, scales=3)]
    for values, indices in zip(together, candidates, strict=True):
        np.testing.assert_allclose(values, codec.occupancy_fn(indices, scales=3)(points), rtol=1e-4, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3  # different tokens, different fields


def test_foreign_and_broken_files(codec):
    foreign = encode_tokens([np.zeros(1, np.int64)], MICRO.scale_sides, 6, b"\0\0\0\0")
    with pytest.raises(CodecError, match="another tokenizer"):
        codec.read(foreign)
    with pytest.raises(CodecError, match="truncated|shorter"):
        codec.read(codec.encode(trimesh.creation.icosphere(2)).data[:-3])


def test_empty_field_is_a_clear_error():
    # A decoder that says "outside" everywhere must produce a message, not an empty mesh file.
    model = VAT(MICRO)
    last = model.field.mlp[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, -10.0)
    codec = MeshCodec(model, device="cpu")
    indices = codec.encode(trimesh.creation.icosphere(2)).indices
    with pytest.raises(VatError, match="no surface"):
        codec.decode_mesh(indices, resolution=16)


def test_checkpoint_resolution(tmp_path):
    assert resolve_checkpoint(tmp_path) == tmp_path
    with pytest.raises(VatError, match="not a folder"):
        resolve_checkpoint(tmp_path / "missing" / "deeper")


def test_a_checkpoints_part_files_and_what_a_folder_lacks(tmp_path):
    """vat.models.checkpoint.part_files names a part's two files (vat.pipeline.part_files, its name before
    issue 30, is the same function); missing_files lists those a folder lacks, part by part."""
    from vat import pipeline
    from vat.models import checkpoint

    assert pipeline.part_files is checkpoint.part_files
    assert checkpoint.part_files("generator") == ("generator_config.json", "generator.safetensors")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert pipeline.missing_files(tmp_path, pipeline.CODEC_PARTS) == ["tokenizer.safetensors"]
    assert pipeline.missing_files(tmp_path) == ["tokenizer.safetensors", "generator_config.json", "generator.safetensors",
                                                "conditioning_config.json", "conditioning.safetensors"]


def test_pipeline_saves_all_parts_in_float16(tiny_checkpoint_of_each_design, tmp_path):
    """Pipeline.save_pretrained: how a run's OUT/final becomes the shipped folder."""
    from safetensors import safe_open

    from vat.pipeline import Pipeline

    tiny_checkpoint = tiny_checkpoint_of_each_design
    Pipeline.from_pretrained(tiny_checkpoint, device="cpu").save_pretrained(tmp_path)
    for part in ("tokenizer", "generator", "conditioning"):
        assert (tmp_path / f"{part}_config.json").read_text() == (tiny_checkpoint / f"{part}_config.json").read_text()
        with safe_open(tmp_path / f"{part}.safetensors", "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64, torch.int32, torch.bool}
    again = Pipeline.from_pretrained(tmp_path, device="cpu")
    assert again.codec.fingerprint == Pipeline.from_pretrained(tiny_checkpoint, device="cpu").codec.fingerprint
    assert again.generate(text="a chair", seed=3, resolution=16).num_scales == again.num_scales


def test_the_checkpoint_carries_its_sampling_settings(tiny_checkpoint, tmp_path):
    """sampling_config.json: the setting chosen for a generator travels with it; arguments override it."""
    import json
    import shutil

    from vat.pipeline import SAMPLING_CONFIG, SAMPLING_DEFAULTS, Pipeline, SamplingConfig

    plain = Pipeline.from_pretrained(tiny_checkpoint, device="cpu")
    assert plain.sampling == SamplingConfig() and plain.sampling.to_dict() == SAMPLING_DEFAULTS  # no file: defaults
    chosen = {"cfg": 3.0, "cfg_schedule": "constant", "top_k": 5}
    folder = tmp_path / "chosen"
    Pipeline(plain.codec, plain.generator, plain.encoders, sampling=chosen).save_pretrained(folder)
    assert json.loads((folder / SAMPLING_CONFIG).read_text()) == {**SAMPLING_DEFAULTS, **chosen}
    pipeline = Pipeline.from_pretrained(folder, device="cpu")
    assert pipeline.sampling == SamplingConfig(**chosen)
    assert pipeline.sampling.to_dict() == {**SAMPLING_DEFAULTS, **chosen}
    used = pipeline.generate(text="a chair", seed=3, resolution=16).settings
    assert {k: used[k] for k in SAMPLING_DEFAULTS} == {**SAMPLING_DEFAULTS, **chosen}
    again = pipeline.generate(text="a chair", seed=3, resolution=16, cfg=0.5, top_k=None).settings
    assert (again["cfg"], again["top_k"], again["cfg_schedule"]) == (0.5, 5, "constant")
    # The same tokens as passing the settings by hand to a pipeline without the file.
    by_hand = Pipeline.from_pretrained(tiny_checkpoint, device="cpu").generate(text="a chair", seed=3, resolution=16,
                                                                               **chosen)
    assert all((a == b).all() for a, b in zip(pipeline.generate(text="a chair", seed=3, resolution=16).indices,
                                              by_hand.indices))

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for text, message in (("{not json", "not a readable JSON"), ('{"cfg": -1}', "out of range"),
                          ('{"guidance": 2}', "unknown sampling setting"), ("[1]", "JSON object")):
        (broken / SAMPLING_CONFIG).write_text(text)
        with pytest.raises(VatError, match=message):
            Pipeline.from_pretrained(broken, device="cpu")
    with pytest.raises(VatError, match="top_k"):
        pipeline.generate(text="a chair", top_k=-1)


def test_a_temperature_falling_over_the_scales_is_a_stored_sampling_setting(tiny_checkpoint, tmp_path):
    """sampling_config.json's temperature_last (the temperature at the last scale) reaches the generator;
    files written before it existed load with a constant temperature."""
    import json
    import shutil

    from vat.pipeline import SAMPLING_CONFIG, Pipeline

    folder = tmp_path / "cooled"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / SAMPLING_CONFIG).write_text(json.dumps({"cfg": 1.5, "temperature": 1.0, "top_k": 0}))  # an old file
    assert Pipeline.from_pretrained(folder, device="cpu").sampling.temperature_last is None
    (folder / SAMPLING_CONFIG).write_text(json.dumps({"temperature": 1.0, "temperature_last": 0.3}))
    pipeline = Pipeline.from_pretrained(folder, device="cpu")
    seen = []
    generate = pipeline.generator.generate
    pipeline.generator.generate = lambda *a, **kw: seen.append(kw["temperature_last"]) or generate(*a, **kw)
    cooled = pipeline.generate(text="a chair", seed=3, resolution=16)
    assert seen == [0.3] and cooled.settings["temperature_last"] == 0.3
    plain = Pipeline.from_pretrained(tiny_checkpoint, device="cpu")
    by_hand = plain.generate(text="a chair", seed=3, resolution=16, temperature_last=0.3)
    assert all((a == b).all() for a, b in zip(cooled.indices, by_hand.indices))
    assert pipeline.generate(text="a chair", seed=3, resolution=16, temperature_last=1.0).settings[
        "temperature_last"] == 1.0
    assert pipeline.generate_unconditional(seed=3).settings["temperature_last"] == 0.3
    with pytest.raises(VatError, match="temperature_last"):
        plain.generate(text="a chair", temperature_last=0)


def test_the_tiny_checkpoints_decode_any_tokens_to_blobs_that_depend_on_them(tiny_checkpoint_of_each_design, request):
    """The promise of conftest.make_tiny_checkpoint, in both tokenizer designs: random tokens decode to a
    field that is inside on about INSIDE_FRACTION (0.3) of the cube, whose meshes differ with the tokens."""
    from vat.geometry.extract import grid_points

    codec = MeshCodec.from_pretrained(tiny_checkpoint_of_each_design, device="cpu")
    design = request.node.callspec.params["tiny_checkpoint_of_each_design"]
    assert codec.config.locality == {"triplane": "none", "grid": "grid"}[design]
    axis = grid_points(16)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(1)
    meshes = []
    for _ in range(3):
        indices = [rng.integers(0, codec.config.codebook_size, s * s) for s in codec.config.scale_sides]
        assert 0.2 < np.mean(codec.occupancy_fn(indices)(points) > 0) < 0.4
        meshes.append(codec.decode_mesh(indices, resolution=16))
    assert len({m.vertices.round(4).tobytes() for m in meshes}) == 3  # three different meshes
