"""The VAT network: presets, every ablation switch, prefix decoding, checkpoints."""

import json

import pytest
import torch

from vat.errors import VatError
from vat.models.tokenizer import COMPRESSIONS, DECODERS, PRESETS, QUANTIZERS, VAT, SurfaceLevels, TokenizerConfig

MICRO = TokenizerConfig(num_points=256, width=32, heads=2, num_queries=32, num_latents=16, encoder_layers=1,
                        decoder_layers=1, codebook_size=64, triplane_tokens=4, plane_channels=4, mlp_hidden=16)


def shape_batch(batch=2, points=256, queries=100):
    torch.manual_seed(0)
    p = torch.rand(batch, points, 3) - 0.5
    return p, torch.nn.functional.normalize(p, dim=-1), torch.rand(batch, queries, 3) - 0.5


@pytest.mark.parametrize("name, scales, tokens, bytes_", [
    ("paper-256", 10, 680, 935), ("paper-576", 11, 1256, 2198), ("paper-1024", 12, 2220, 3885), ("tiny", 10, 680, 850)])
def test_presets_schedule_and_payload_bytes(name, scales, tokens, bytes_):
    c = PRESETS[name]
    assert len(c.scale_sides) == scales and c.tokens_per_shape == tokens
    assert c.tokens_per_shape * c.bits_per_token // 8 == bytes_


def test_paper_sizes():
    c = PRESETS["paper-1024"]
    assert (c.encoder.num_queries, c.width, c.encoder.layers, c.decoder.layers, c.latent_channels) == (3072, 768, 12, 12, 16)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_every_ablation_trains(compression, decoder, quantizer):
    model = VAT(MICRO.with_overrides(compression=compression, decoder=decoder, quantizer=quantizer))
    p, n, q = shape_batch()
    out = model(p, n, q)
    assert out["logits"].shape == (2, 100)
    (out["logits"].mean() + out["kl"] + out["codebook"]).backward()
    assert model.encoder.embed.proj.weight.grad.abs().sum() > 0
    assert (out["kl"] > 0) == (quantizer == "vvq")


def test_encode_then_decode_any_prefix():
    model = VAT(MICRO).eval()
    p, n, q = shape_batch()
    indices = model.encode(p, n)
    assert [i.shape[1] for i in indices] == [s * s for s in MICRO.scale_sides]
    full = model.query(model.decode_indices(indices), q)
    torch.testing.assert_close(full, model(p, n, q)["logits"])
    for s in range(1, len(indices) + 1):
        assert model.query(model.decode_indices(indices[:s]), q).shape == (2, 100)


def test_save_load_round_trip_and_fingerprint(tmp_path):
    torch.manual_seed(7)
    model = VAT(MICRO).eval()
    model.save_pretrained(tmp_path)
    loaded = VAT.from_pretrained(tmp_path)
    p, n, q = shape_batch()
    torch.testing.assert_close(loaded(p, n, q)["logits"], model(p, n, q)["logits"], atol=5e-2, rtol=0)
    assert loaded.fingerprint() == model.fingerprint()
    torch.manual_seed(123)
    assert VAT(MICRO).fingerprint() != model.fingerprint()
    # Calibrated surface levels travel with the folder (a JSON list back to a tuple) and leave the tokens' meaning.
    model.config.surface = SurfaceLevels(tuple(-0.1 * s for s in range(len(MICRO.scale_sides))))
    model.save_pretrained(tmp_path / "levels")
    loaded = VAT.from_pretrained(tmp_path / "levels")
    assert loaded.config.surface.levels == pytest.approx(model.config.surface.levels)
    assert loaded.fingerprint() == model.fingerprint()
    with pytest.raises(ValueError, match="one level per scale"):
        MICRO.with_overrides(surface_logits=(0.0,))


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    VAT(MICRO).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["width"] = 64
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(VatError, match="does not match"):
        VAT.from_pretrained(tmp_path)
    with pytest.raises(VatError, match="no tokenizer"):
        VAT.from_pretrained(tmp_path / "missing")


def test_point_mlp_starts_as_the_linear_embedding_and_sees_joint_positions():
    """The residual MLP on the point embedding starts at zero (a model with it equals one without),
    and once trained, an average of embeddings tells apart clouds that share their marginals."""
    from vat.models.layers import FourierEmbed

    torch.manual_seed(0)
    linear, with_mlp = FourierEmbed(32, 4), FourierEmbed(32, 4, mlp=True)
    with_mlp.load_state_dict(linear.state_dict(), strict=False)
    x = torch.rand(1, 64, 3) - 0.5
    torch.testing.assert_close(with_mlp(x), linear(x), rtol=0, atol=0)
    # Two diagonals of the square in the xy plane have the same x and y marginals.
    t = torch.linspace(-0.4, 0.4, 101)
    a = torch.stack([t, t, torch.zeros_like(t)], -1)[None]
    b = torch.stack([t, -t, torch.zeros_like(t)], -1)[None]
    torch.testing.assert_close(linear(a).mean(1), linear(b).mean(1), rtol=0, atol=1e-5)
    torch.nn.init.normal_(with_mlp.mlp[-1][-1].weight)  # as after training: the MLP is no longer zero
    assert (with_mlp(a).mean(1) - with_mlp(b).mean(1)).abs().max() > 1e-2


def test_configs_saved_before_point_mlp_load_without_it(tmp_path):
    VAT(MICRO).save_pretrained(tmp_path)
    config = MICRO.to_flat()  # v1's flat form, as saved then
    del config["point_mlp"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert VAT.from_pretrained(tmp_path).encoder.embed.mlp is None
    assert PRESETS["tiny"].encoder.point_mlp and VAT(PRESETS["tiny"]).encoder.embed.mlp is not None


MICRO_GRID = MICRO.with_overrides(num_latents=64, scale_sides=(), plane_channels=4, locality="grid")


def test_grid_layout_puts_map_neighbours_next_to_each_other_in_space():
    """Each 2 x 2 block of the token map is one column of 4 cells along z, and the blocks tile x and y,
    so VVQ's coarse scales are spatially coarse versions of the fine one."""
    from vat.models.grid import cell_centres, grid_shape, map_to_volume, volume_to_map

    assert grid_shape(256) == (4, 8, 8) and grid_shape(64) == (4, 4, 4)
    with pytest.raises(ValueError, match="even square"):
        grid_shape(25)
    f = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    torch.testing.assert_close(volume_to_map(map_to_volume(f)), f, rtol=0, atol=0)
    centres = cell_centres(grid_shape(64))  # volume order (z, y, x)
    xyz = volume_to_map(centres.T.reshape(1, 3, 4, 4, 4))[0]  # [3, 8, 8]: the centre of each map token
    # Within a 2 x 2 block: same x and y, four different z; across blocks: x steps along columns, y along rows.
    block = xyz[:, :2, :2].reshape(3, 4)
    assert block[0].unique().numel() == 1 and block[1].unique().numel() == 1 and block[2].unique().numel() == 4
    torch.testing.assert_close(xyz[0, :, 2] - xyz[0, :, 0], torch.full((8,), 0.25))
    torch.testing.assert_close(xyz[1, 2] - xyz[1, 0], torch.full((8,), 0.25))


def test_grid_decoder_levels_are_decoder_only():
    """grid_up_levels adds finer feature volumes and grid_cubic_levels makes them cubes of cells; the
    tokens' meaning (the fingerprint) does not depend on either, so a decoder retrained with them
    keeps the .vat files and a generator trained on the tokens."""
    model = VAT(MICRO_GRID)  # 4 x 4 x 4 cells: already cubes
    flat = VAT(MICRO_GRID.with_overrides(num_latents=256, scale_sides=()))  # 8 x 8 x 4 cells
    z = torch.zeros(1, 256, MICRO_GRID.width)
    assert [tuple(v.shape[2:]) for v in flat.field.volumes(z)] == [(4, 8, 8), (8, 16, 16), (16, 32, 32)]
    finer = MICRO_GRID.with_overrides(num_latents=256, scale_sides=(), grid_up_levels=3, grid_cubic_levels=True)
    fine = VAT(finer)
    levels = fine.field.volumes(z)
    assert [tuple(v.shape[2:]) for v in levels] == [(4, 8, 8), (16, 16, 16), (32, 32, 32), (64, 64, 64)]
    assert [v.shape[1] for v in levels] == [32, 8, 4, 4]
    assert fine.field.query(levels, torch.rand(1, 10, 3) - 0.5).shape == (1, 10)
    fine.load_state_dict({k: v for k, v in flat.state_dict().items() if not k.startswith("field.")}, strict=False)
    assert fine.fingerprint() == flat.fingerprint() and model.fingerprint() != flat.fingerprint()
    with pytest.raises(ValueError, match="grid_up_levels"):
        MICRO_GRID.with_overrides(grid_up_levels=0)


def test_grid_encoder_reads_points_locally():
    """Before any training, moving the points of one corner changes the latent cells near that corner
    far more than those of the opposite corner (attention over the cells is the only global path)."""
    from vat.models.grid import map_to_volume

    torch.manual_seed(0)
    model = VAT(MICRO_GRID.with_overrides(encoder_layers=0)).eval()
    p = torch.rand(1, 2048, 3) - 0.5
    n = torch.nn.functional.normalize(torch.randn(1, 2048, 3), dim=-1)
    moved = p.clone()
    corner = (p > 0.2).all(-1)
    moved[corner] = 0.2 + (moved[corner] - 0.2).flip(-1)
    with torch.no_grad():
        def cells(points):
            z = model.encoder(points, n)  # [1, K, C] in map order
            return map_to_volume(z.transpose(1, 2).reshape(1, -1, 8, 8))[0]  # [C, Z, Y, X]
        change = (cells(moved) - cells(p)).abs().sum(0)  # [Z, Y, X]
    assert change[3, 3, 3] > 0 and change[0, 0, 0] == 0


def test_grid_design_trains_and_decodes_any_prefix():
    model = VAT(MICRO_GRID)
    p, n, q = shape_batch()
    out = model(p, n, q)
    assert out["logits"].shape == (2, 100)
    (out["logits"].mean() + out["kl"] + out["codebook"]).backward()
    assert model.encoder.embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    indices = model.encode(p, n)
    torch.testing.assert_close(model.query(model.decode_indices(indices), q), model(p, n, q)["logits"])
    coarse = [model.query(model.decode_indices(indices[:s]), q) for s in range(1, len(indices) + 1)]
    assert all(c.shape == (2, 100) for c in coarse) and not torch.equal(coarse[0], coarse[-1])


def test_grid_config_rejects_paper_only_switches():
    with pytest.raises(ValueError, match="paper's design"):
        MICRO_GRID.with_overrides(decoder="cross-attention")
    assert PRESETS["tiny-grid"].locality == "grid" and PRESETS["tiny"].locality == "none"
