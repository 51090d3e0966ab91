"""The typed tokenizer config (vat.models.tokenizer_config): every config of v1's flat form still
loads, keeps its fingerprint (.vat files, generator data manifests and the generator checkpoint
record it) and its tokens, saves back typed, and the fingerprint covers the encoder and the
quantizer by construction, never the surface levels or decoder fields added since v1."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vat.errors import VatError
from vat.models.tokenizer import (PRESETS, VAT, CrossAttentionDecoderConfig, GridEncoderConfig, QuantizerConfig,
                                  QueryEncoderConfig, SurfaceLevels, TokenizerConfig, TriplaneDecoderConfig,
                                  VolumeDecoderConfig)

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints"
# The shipped vat-tiny-grid-2 (session 31); any change breaks every .vat file written with it since.
SHIPPED_FINGERPRINT = "93b7952a"
SHIPPED_TOKENS_SHA256 = "c312b1b21c1e1bd0"  # tokens of procedural shape 0, MeshCodec.encode defaults
# The tokenizer_config.json of the checkpoint shipped before it (vat-tiny-grid, v1's flat form, git dcb1f65),
# whose real weights gave fingerprint f311013a with main's code before and after the typed config.
PREVIOUS_SHIPPED_V1 = {
    "num_points": 4096, "width": 128, "heads": 4, "num_queries": 3072, "num_latents": 256, "encoder_layers": 2,
    "decoder_layers": 2, "latent_channels": 16, "codebook_size": 1024, "scale_sides": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
    "compression": "in-context", "quantizer": "vvq", "decoder": "triplane", "triplane_tokens": 32,
    "plane_channels": 16, "mlp_hidden": 128, "num_frequencies": 8, "point_mlp": True, "locality": "grid",
    "grid_up_levels": 2, "grid_cubic_levels": False, "surface_logit": -0.45,
    "surface_logits": [-1.05, -1.1, -1.05, -0.9, -0.85, -0.8, -0.7, -0.7, -0.65, -0.45]}
# The tiny preset as v1's code saved it (TokenizerConfig.to_dict() of the flat dataclass).
V1_TINY = {"num_points": 4096, "width": 128, "heads": 4, "num_queries": 256, "num_latents": 256, "encoder_layers": 4,
           "decoder_layers": 4, "latent_channels": 16, "codebook_size": 1024,
           "scale_sides": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16], "compression": "in-context", "quantizer": "vvq",
           "decoder": "triplane", "triplane_tokens": 16, "plane_channels": 16, "mlp_hidden": 64, "num_frequencies": 8,
           "point_mlp": True, "locality": "none", "grid_up_levels": 2, "grid_cubic_levels": False,
           "surface_logit": 0.0, "surface_logits": []}


def fixed_codebook_fingerprint(config: TokenizerConfig) -> str:
    """The fingerprint with a codebook that does not depend on the initialisation's random draws."""
    model = VAT(config)
    with torch.no_grad():
        weight = model.quantizer.codebook.weight
        weight.copy_(torch.linspace(-1, 1, weight.numel()).view_as(weight))
    return model.fingerprint().hex()


# (v1 flat fields over the tiny preset, the fingerprint main's code gave with that codebook)
V1_PINS = [({}, "fd01f993"),
           ({"compression": "pooling"}, "38735196"),
           ({"compression": "q-former", "decoder": "cross-attention", "quantizer": "residual-vq"}, "b6a226a9"),
           # a grid made from the triplane preset: it keeps num_queries=256 and triplane_tokens=16, which the
           # grid ignores but v1's fingerprint covered
           ({"locality": "grid"}, "fa811e92")]


@pytest.mark.parametrize("fields, fingerprint", V1_PINS)
def test_v1_configs_keep_their_fingerprint_and_round_trip(fields, fingerprint, tmp_path):
    v1 = {**V1_TINY, **fields}
    config = TokenizerConfig.from_dict(v1)
    assert fixed_codebook_fingerprint(config) == fingerprint
    assert config.to_flat() == {**v1, "scale_sides": tuple(v1["scale_sides"]), "surface_logits": ()}
    assert config == PRESETS["tiny"].with_overrides(**fields)
    typed = json.loads(json.dumps(config.to_dict()))  # as saved
    assert "num_queries" not in typed and TokenizerConfig.from_dict(typed) == config
    assert fixed_codebook_fingerprint(TokenizerConfig.from_dict(typed)) == fingerprint


def test_presets_keep_their_fingerprints():
    assert fixed_codebook_fingerprint(PRESETS["tiny"]) == "fd01f993"
    assert fixed_codebook_fingerprint(PRESETS["tiny-grid"]) == "c17d24ac"


def test_v1_checkpoint_folder_loads_and_saves_back_typed(tmp_path):
    """A folder written by v1's code (flat config) loads, and a save of it loads again to the same model."""
    torch.manual_seed(0)
    model = VAT(PRESETS["tiny"])
    model.save_pretrained(tmp_path / "v1")
    (tmp_path / "v1" / "tokenizer_config.json").write_text(json.dumps({**V1_TINY, "surface_logit": -0.3}))
    loaded = VAT.from_pretrained(tmp_path / "v1")
    assert loaded.config.surface.levels == (-0.3,) * 10  # v1's one level: every prefix
    assert loaded.fingerprint() == model.fingerprint() and loaded.surface_level(1) == pytest.approx(-0.3)
    loaded.save_pretrained(tmp_path / "typed")
    saved = json.loads((tmp_path / "typed" / "tokenizer_config.json").read_text())
    assert saved["encoder"]["kind"] == "attention" and saved["decoder"]["kind"] == "triplane"
    again = VAT.from_pretrained(tmp_path / "typed")
    assert again.config == loaded.config and again.fingerprint() == model.fingerprint()


def test_shipped_checkpoint_keeps_fingerprint_config_and_tokens(tmp_path):
    from vat.geometry.procedural import random_shape
    from vat.pipeline import MeshCodec

    codec = MeshCodec.from_pretrained(CHECKPOINT, device="cpu")
    config = codec.tokenizer.config
    assert codec.tokenizer.fingerprint().hex() == SHIPPED_FINGERPRINT
    assert isinstance(config.encoder, GridEncoderConfig) and isinstance(config.decoder, VolumeDecoderConfig)
    saved = json.loads((CHECKPOINT / "tokenizer_config.json").read_text())
    assert config.surface.levels == tuple(saved["surface"]["levels"]) and not config.fingerprint_extras
    encoded = codec.encode(random_shape(0).mesh)
    digest = hashlib.sha256(b"".join(np.asarray(i, np.int64).tobytes() for i in encoded.indices)).hexdigest()
    assert digest[:16] == SHIPPED_TOKENS_SHA256
    codec.tokenizer.save_pretrained(tmp_path)  # typed, and back
    again = VAT.from_pretrained(tmp_path)
    assert again.config == config and again.fingerprint().hex() == SHIPPED_FINGERPRINT


def test_previous_shipped_config_still_loads_with_its_fingerprint():
    """The previous checkpoint's flat config (from git history) loads as the tiny-grid design with its levels,
    and its fingerprint with a fixed codebook is the tiny-grid preset's: its .vat files still decode with it."""
    config = TokenizerConfig.from_dict(PREVIOUS_SHIPPED_V1)
    assert isinstance(config.encoder, GridEncoderConfig) and isinstance(config.decoder, VolumeDecoderConfig)
    assert config.surface.levels == tuple(PREVIOUS_SHIPPED_V1["surface_logits"]) and not config.fingerprint_extras
    assert config.to_flat() == {**PREVIOUS_SHIPPED_V1, "scale_sides": tuple(PREVIOUS_SHIPPED_V1["scale_sides"]),
                                "surface_logits": tuple(PREVIOUS_SHIPPED_V1["surface_logits"])}
    assert fixed_codebook_fingerprint(config) == fixed_codebook_fingerprint(PRESETS["tiny-grid"]) == "c17d24ac"


def _changed(value):
    return not value if isinstance(value, bool) else value + (1,) if isinstance(value, tuple) else value + 1


@pytest.mark.parametrize("part", ["encoder", "quantizer"])
def test_fingerprint_covers_every_encoder_and_quantizer_field(part):
    """By construction: a new field of either part is covered without anyone listing it."""
    for design in ("tiny", "tiny-grid"):
        config = PRESETS[design]
        sub = getattr(config, part)
        for f in dataclasses.fields(sub):
            value = getattr(sub, f.name)
            if f.name == "kind" or isinstance(value, str):  # kinds and compression: other classes or choices
                continue
            other = dataclasses.replace(config)
            setattr(other, part, dataclasses.replace(sub, **{f.name: _changed(value)}))
            assert other.fingerprint_fields() != config.fingerprint_fields(), (design, part, f.name)


def test_surface_levels_and_new_decoder_fields_leave_the_fingerprint():
    base = PRESETS["tiny-grid"]
    other = dataclasses.replace(base, surface=SurfaceLevels((-0.5,) * len(base.scale_sides)),
                                decoder=dataclasses.replace(base.decoder, up_levels=3, cubic_levels=True))
    assert other.fingerprint_fields() == base.fingerprint_fields()
    assert fixed_codebook_fingerprint(other) == fixed_codebook_fingerprint(base)


def test_parts_are_tagged_by_kind_and_checked():
    config = TokenizerConfig(width=32, heads=2, num_latents=64, encoder={"kind": "grid", "num_points": 256, "layers": 1},
                             quantizer={"codebook_size": 64}, decoder={"kind": "volume", "layers": 1})
    assert isinstance(config.encoder, GridEncoderConfig) and config.locality == "grid"
    assert isinstance(config.quantizer, QuantizerConfig) and config.quantizer.kind == "vvq"
    assert (config.scale_sides[-1], config.num_points, config.bits_per_token) == (8, 256, 6)
    with pytest.raises(ValueError, match="unknown decoder kind 'planes'"):
        TokenizerConfig(decoder={"kind": "planes"})
    with pytest.raises(ValueError, match="go together"):
        TokenizerConfig(num_latents=64, encoder=GridEncoderConfig(), decoder=TriplaneDecoderConfig())
    with pytest.raises(ValueError, match="go together"):
        TokenizerConfig(num_latents=64, encoder=QueryEncoderConfig(), decoder=VolumeDecoderConfig())
    with pytest.raises(ValueError, match="has kind 'triplane'"):
        TriplaneDecoderConfig(kind="volume")
    # v1's flat names over a typed config, as dataclasses.replace(config, **v1_fields) passes them
    assert dataclasses.replace(PRESETS["tiny"], num_points=256, compression="pooling") == \
        PRESETS["tiny"].with_overrides(num_points=256, compression="pooling")
    with pytest.raises(TypeError, match="unknown TokenizerConfig fields"):
        PRESETS["tiny"].with_overrides(triplane_size=4)
    assert isinstance(PRESETS["tiny"].with_overrides(decoder="cross-attention").decoder, CrossAttentionDecoderConfig)


def test_a_config_with_an_unknown_kind_is_a_clear_error(tmp_path):
    VAT(PRESETS["tiny"].with_overrides(num_points=128)).save_pretrained(tmp_path)
    path = tmp_path / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["encoder"]["kind"] = "pointnet"
    path.write_text(json.dumps(config))
    with pytest.raises(VatError, match="unknown encoder kind 'pointnet'"):
        VAT.from_pretrained(tmp_path)
