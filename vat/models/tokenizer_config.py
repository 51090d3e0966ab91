"""The tokenizer's config: shared sizes and four typed parts, each tagged by `kind` where it has
variants (as vat.models.conditioning's image encoders are).

- encoder: the paper's (`QueryEncoderConfig`, kind "attention": learnable queries read the points,
  then in-context compression, pooling or a Q-Former) or the locality prior's (`GridEncoderConfig`,
  kind "grid": points scattered onto a volume, convolved down to a grid of latent cells);
- quantizer: VVQ or plain residual VQ across scales (`QuantizerConfig`);
- decoder: the paper's triplane (`TriplaneDecoderConfig`), its cross-attention ablation
  (`CrossAttentionDecoderConfig`) or the locality prior's feature volumes (`VolumeDecoderConfig`);
- surface: the calibrated surface levels (`SurfaceLevels`).

The encoder and the quantizer define the tokens, so the fingerprint is computed from them (and the
shared sizes); the decoder and the surface levels are left out, except the decoder fields that the
fingerprints of the first, flat config covered (`fingerprinted()`, frozen: .vat files record them).

Version 1 of the saved config was one flat dict (`to_flat` / `from_flat` read and write it; the
--model-override FIELD=VALUE names are its fields). `from_dict` reads both forms; `to_dict` writes
the typed one."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from vat.models.grid import grid_shape
from vat.models.quantizer import default_scale_sides

COMPRESSIONS = ("in-context", "pooling", "q-former")
QUANTIZERS = ("vvq", "residual-vq")
DECODERS = ("triplane", "cross-attention")  # the paper's decoders (the v1 `decoder` field)
LOCALITIES = ("none", "grid")
# The v1 flat fields whose values a design ignores, at their v1 defaults: the flat config held them for
# every design, so its fingerprint covered them (a grid config's num_queries, say).
V1_IGNORED_DEFAULTS = {"num_queries": 3072, "triplane_tokens": 32, "plane_channels": 32, "mlp_hidden": 128}
_SHARED = ("width", "heads", "num_latents")


def _check(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_kind(config, kind: str) -> None:
    if config.kind != kind:
        raise ValueError(f"a {type(config).__name__} has kind {kind!r}, got {config.kind!r}")


# ---------------------------------------------------------------------------- encoders


@dataclass
class QueryEncoderConfig:
    """The paper's encoder: `num_queries` learnable queries cross-attend to the points' Fourier
    features, `layers` self-attention blocks, then `compression` keeps K latent tokens."""

    kind: str = "attention"
    num_points: int = 80_000  # surface points (with normals) per shape
    num_queries: int = 3072  # L
    layers: int = 12
    compression: str = "in-context"  # in-context | pooling | q-former
    num_frequencies: int = 8
    point_mlp: bool = False  # a residual MLP on the point embedding (see FourierEmbed)

    def __post_init__(self):
        _check_kind(self, "attention")
        _check("compression", self.compression, COMPRESSIONS)

    def flat(self) -> dict:
        return {"num_points": self.num_points, "num_queries": self.num_queries, "encoder_layers": self.layers,
                "compression": self.compression, "num_frequencies": self.num_frequencies,
                "point_mlp": self.point_mlp, "locality": "none"}


@dataclass
class GridEncoderConfig:
    """The locality prior's encoder (vat.models.grid.GridEncoder): point features scattered onto a
    volume 4x finer than the latent cells (`volume_channels` channels), convolved down to the cells,
    then `layers` attention blocks over them."""

    kind: str = "grid"
    num_points: int = 80_000
    layers: int = 12
    volume_channels: int = 32  # the fine volume's channels (twice that one level coarser)
    num_frequencies: int = 8
    point_mlp: bool = False

    def __post_init__(self):
        _check_kind(self, "grid")

    def flat(self) -> dict:
        return {"num_points": self.num_points, "encoder_layers": self.layers, "plane_channels": self.volume_channels,
                "num_frequencies": self.num_frequencies, "point_mlp": self.point_mlp, "locality": "grid",
                "compression": "in-context"}


ENCODERS = {"attention": QueryEncoderConfig, "grid": GridEncoderConfig}


# ---------------------------------------------------------------------------- quantizer


@dataclass
class QuantizerConfig:
    """Multi-scale residual quantisation of the K x Cq latents; "vvq" puts a Gaussian before it."""

    kind: str = "vvq"  # vvq | residual-vq
    latent_channels: int = 16  # Cq
    codebook_size: int = 16384
    scale_sides: tuple[int, ...] = ()  # empty: the paper's schedule for K (filled in by TokenizerConfig)

    def __post_init__(self):
        _check("quantizer", self.kind, QUANTIZERS)
        self.scale_sides = tuple(self.scale_sides)

    def flat(self) -> dict:
        return {"quantizer": self.kind, "latent_channels": self.latent_channels, "codebook_size": self.codebook_size,
                "scale_sides": self.scale_sides}


# ---------------------------------------------------------------------------- decoders


@dataclass
class TriplaneDecoderConfig:
    """The paper's decoder: 3 t^2 learnable tokens cross-attend to Z_hat, `layers` self-attention
    blocks, three planes upsampled into mip levels 2t, 4t, 8t, an MLP over the sampled features."""

    kind: str = "triplane"
    layers: int = 12
    plane_tokens: int = 32  # t, the side of each plane's token grid
    plane_channels: int = 32  # the finest mip level's channels
    mlp_hidden: int = 128

    def __post_init__(self):
        _check_kind(self, "triplane")

    def fingerprinted(self) -> dict:
        return {"decoder": "triplane", "decoder_layers": self.layers, "triplane_tokens": self.plane_tokens,
                "plane_channels": self.plane_channels, "mlp_hidden": self.mlp_hidden}

    def flat(self) -> dict:
        return self.fingerprinted()


@dataclass
class CrossAttentionDecoderConfig:
    """The paper's decoder ablation: `layers` self-attention blocks over Z_hat, then each query's
    Fourier features cross-attend to them."""

    kind: str = "cross-attention"
    layers: int = 12
    num_frequencies: int = 8

    def __post_init__(self):
        _check_kind(self, "cross-attention")

    def fingerprinted(self) -> dict:
        return {"decoder": "cross-attention", "decoder_layers": self.layers}

    def flat(self) -> dict:
        return {**self.fingerprinted(), "num_frequencies": self.num_frequencies}


@dataclass
class VolumeDecoderConfig:
    """The locality prior's decoder (vat.models.grid.GridField): the latent cells as a volume,
    `layers` attention blocks over them, 3D convolutions up to `up_levels` finer volumes (x2 each;
    `cubic_levels`: the first step also doubles z twice, so the fine volumes are cubes of cells),
    all sampled trilinearly at each query, an MLP to the logit."""

    kind: str = "volume"
    layers: int = 12
    volume_channels: int = 32  # the first finer volume's channels (twice that at the latent cells)
    mlp_hidden: int = 128
    up_levels: int = 2
    cubic_levels: bool = False

    def __post_init__(self):
        _check_kind(self, "volume")
        if self.up_levels < 1:
            raise ValueError(f"grid_up_levels must be at least 1, got {self.up_levels}")

    def fingerprinted(self) -> dict:  # v1 called the grid's decoder "triplane" (the field did not apply)
        return {"decoder": "triplane", "decoder_layers": self.layers, "plane_channels": self.volume_channels,
                "mlp_hidden": self.mlp_hidden}

    def flat(self) -> dict:
        return {**self.fingerprinted(), "grid_up_levels": self.up_levels, "grid_cubic_levels": self.cubic_levels}


DECODER_CLASSES = {"triplane": TriplaneDecoderConfig, "cross-attention": CrossAttentionDecoderConfig,
                   "volume": VolumeDecoderConfig}


# ---------------------------------------------------------------------------- surface levels


@dataclass
class SurfaceLevels:
    """The occupancy logit where the surface lies, per decoded prefix: entry s - 1 for a field decoded
    from the first s scales (a coarse prefix is a blurrier field whose best level lies lower). Fitted
    on training shapes when a run exports its model (train_tokenizer's calibrate_surface): an
    under-fitted field sits below 0 on thin parts. VAT.query returns logits relative to it, so every
    consumer thresholds at 0; training sees raw logits. Empty: 0 for every prefix."""

    levels: tuple[float, ...] = ()

    def __post_init__(self):
        self.levels = tuple(float(v) for v in self.levels)

    @classmethod
    def fitted(cls, levels, num_scales: int) -> "SurfaceLevels":
        """Levels fitted per decoded prefix, or one level (an unquantised fit) for every prefix."""
        levels = tuple(levels)
        return cls(levels * num_scales if len(levels) == 1 else levels)


# ---------------------------------------------------------------------------- the whole config


def _tagged(values, classes: dict, what: str, default_kind: str | None = None):
    """A sub-config from its dict, by its `kind` (or default_kind when the dict has none)."""
    if not isinstance(values, dict):
        return values
    kind = values.get("kind", default_kind)
    if kind not in classes:
        raise ValueError(f"unknown {what} kind {kind!r} (one of {tuple(classes)})")
    return classes[kind](**values)


@dataclass(init=False)
class TokenizerConfig:
    """Every size of the tokenizer; saved as tokenizer_config.json next to the weights (typed form).
    TokenizerConfig(**flat) also reads the v1 flat fields (for callers and files of v1)."""

    width: int = 768  # C: the encoder's, the latent projections' and the decoder's width
    heads: int = 12
    num_latents: int = 1024  # K: latent tokens (a square; the grid needs an even side)
    encoder: QueryEncoderConfig | GridEncoderConfig = field(default_factory=QueryEncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: TriplaneDecoderConfig | CrossAttentionDecoderConfig | VolumeDecoderConfig = field(
        default_factory=TriplaneDecoderConfig)
    surface: SurfaceLevels = field(default_factory=SurfaceLevels)
    # Values of a v1 config that its design ignored but its fingerprint covered, where they differ from
    # V1_IGNORED_DEFAULTS (a grid made by --model-override locality=grid on a triplane preset, say).
    fingerprint_extras: dict = field(default_factory=dict)

    def __init__(self, width: int = 768, heads: int = 12, num_latents: int = 1024, encoder=None, quantizer=None,
                 decoder=None, surface=None, fingerprint_extras: dict | None = None, **v1_fields):
        for name, value in (("quantizer", quantizer), ("decoder", decoder)):
            if isinstance(value, str):  # v1's quantizer="vvq", decoder="triplane"
                v1_fields[name] = value
        quantizer, decoder = (None if isinstance(v, str) else v for v in (quantizer, decoder))
        self.width, self.heads, self.num_latents = width, heads, num_latents
        self.encoder = _tagged(encoder if encoder is not None else QueryEncoderConfig(), ENCODERS, "encoder")
        self.quantizer = _tagged(quantizer if quantizer is not None else QuantizerConfig(),
                                 dict.fromkeys(QUANTIZERS, QuantizerConfig), "quantizer", "vvq")
        self.decoder = _tagged(decoder if decoder is not None else TriplaneDecoderConfig(), DECODER_CLASSES, "decoder")
        self.surface = surface if isinstance(surface, SurfaceLevels) else SurfaceLevels(**(surface or {}))
        self.fingerprint_extras = dict(fingerprint_extras or {})
        if v1_fields:  # the v1 flat form, TokenizerConfig(num_points=4096, ...), or dataclasses.replace(c, **v1)
            other = from_flat({**self.to_flat(), **v1_fields})
            self.encoder, self.quantizer, self.decoder = other.encoder, other.quantizer, other.decoder
            self.surface, self.fingerprint_extras = other.surface, other.fingerprint_extras
        self._validate()

    def _validate(self):
        if not self.quantizer.scale_sides:
            self.quantizer = dataclasses.replace(self.quantizer, scale_sides=default_scale_sides(self.num_latents))
        sides = self.quantizer.scale_sides
        if self.surface.levels and len(self.surface.levels) != len(sides):
            raise ValueError(f"surface levels: one level per scale ({len(sides)}), got {len(self.surface.levels)}")
        unknown = set(self.fingerprint_extras) - set(V1_IGNORED_DEFAULTS)
        if unknown:
            raise ValueError(f"fingerprint_extras holds v1 fields a design ignores ({sorted(V1_IGNORED_DEFAULTS)}), "
                             f"not {sorted(unknown)}")
        if (self.encoder.kind == "grid") != (self.decoder.kind == "volume"):
            raise ValueError("the grid encoder and the volume decoder go together (the locality prior); the "
                             "compression and decoder ablations belong to the paper's design (locality='none')")
        if self.encoder.kind == "grid":
            grid_shape(self.num_latents)
        if sides[-1] ** 2 != self.num_latents:
            raise ValueError(f"the last scale ({sides[-1]}^2) must hold all {self.num_latents} latents")

    # --- facts the codec and the data need ----------------------------------------------------
    @property
    def locality(self) -> str:
        """"grid" for the locality prior (grid encoder, volume decoder), "none" for the paper's design."""
        return "grid" if self.encoder.kind == "grid" else "none"

    @property
    def num_points(self) -> int:
        return self.encoder.num_points

    @property
    def scale_sides(self) -> tuple[int, ...]:
        return self.quantizer.scale_sides

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def latent_channels(self) -> int:
        return self.quantizer.latent_channels

    @property
    def bits_per_token(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    @property
    def tokens_per_shape(self) -> int:
        return sum(s * s for s in self.scale_sides)

    # --- forms ------------------------------------------------------------------------------
    def fingerprint_fields(self) -> dict:
        """What the fingerprint hashes: the shared sizes, the encoder and the quantizer (they define the
        tokens) and the decoder fields v1 fingerprints covered (frozen); never the surface levels."""
        shared = {name: getattr(self, name) for name in _SHARED}
        return {**V1_IGNORED_DEFAULTS, **self.fingerprint_extras, **shared, **self.decoder.fingerprinted(),
                **self.encoder.flat(), **self.quantizer.flat()}

    def to_flat(self) -> dict:
        """The v1 flat form (the --model-override field names)."""
        levels = self.surface.levels
        values = {**V1_DEFAULTS, **self.fingerprint_fields(), **self.decoder.flat(), **self.encoder.flat(),
                  "surface_logit": levels[-1] if levels else 0.0, "surface_logits": levels}
        return {name: values[name] for name in V1_FIELDS}  # in v1's order

    def to_dict(self) -> dict:
        """The typed form, as saved."""
        values = {n: getattr(self, n) for n in _SHARED}
        values.update({n: dataclasses.asdict(getattr(self, n)) for n in ("encoder", "quantizer", "decoder", "surface")})
        if self.fingerprint_extras:
            values["fingerprint_extras"] = dict(self.fingerprint_extras)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TokenizerConfig":
        """A saved config, typed or v1 flat."""
        return cls(**values)

    def with_overrides(self, **v1_fields) -> "TokenizerConfig":
        """This config with v1 flat fields replaced (--model-override FIELD=VALUE)."""
        if not v1_fields:
            return from_flat(self.to_flat())
        unknown = set(v1_fields) - set(V1_FIELDS)
        if unknown:
            raise TypeError(f"unknown TokenizerConfig fields {sorted(unknown)} (one of {V1_FIELDS})")
        return from_flat({**self.to_flat(), **v1_fields})


V1_DEFAULTS = {"num_points": 80_000, "width": 768, "heads": 12, "num_queries": 3072, "num_latents": 1024,
               "encoder_layers": 12, "decoder_layers": 12, "latent_channels": 16, "codebook_size": 16384,
               "scale_sides": (), "compression": "in-context", "quantizer": "vvq", "decoder": "triplane",
               "triplane_tokens": 32, "plane_channels": 32, "mlp_hidden": 128, "num_frequencies": 8,
               "point_mlp": False, "locality": "none", "grid_up_levels": 2, "grid_cubic_levels": False,
               "surface_logit": 0.0, "surface_logits": ()}
V1_FIELDS = tuple(V1_DEFAULTS)


def from_flat(values: dict) -> TokenizerConfig:
    """A TokenizerConfig from the v1 flat fields (missing ones take v1's defaults)."""
    unknown = set(values) - set(V1_FIELDS)
    if unknown:
        raise TypeError(f"unknown TokenizerConfig fields {sorted(unknown)}")
    v = {**V1_DEFAULTS, **values}
    _check("locality", v["locality"], LOCALITIES)
    _check("decoder", v["decoder"], DECODERS)
    grid = v["locality"] == "grid"
    if grid and (v["compression"], v["decoder"]) != ("in-context", "triplane"):
        raise ValueError("the compression and decoder ablations belong to the paper's design (locality='none')")
    common = dict(num_points=v["num_points"], layers=v["encoder_layers"], num_frequencies=v["num_frequencies"],
                  point_mlp=v["point_mlp"])
    if grid:
        encoder = GridEncoderConfig(volume_channels=v["plane_channels"], **common)
        decoder = VolumeDecoderConfig(layers=v["decoder_layers"], volume_channels=v["plane_channels"],
                                      mlp_hidden=v["mlp_hidden"], up_levels=v["grid_up_levels"],
                                      cubic_levels=v["grid_cubic_levels"])
        ignored = ("num_queries", "triplane_tokens")
    else:
        encoder = QueryEncoderConfig(num_queries=v["num_queries"], compression=v["compression"], **common)
        if v["decoder"] == "triplane":
            decoder, ignored = TriplaneDecoderConfig(layers=v["decoder_layers"], plane_tokens=v["triplane_tokens"],
                                                     plane_channels=v["plane_channels"], mlp_hidden=v["mlp_hidden"]), ()
        else:
            decoder = CrossAttentionDecoderConfig(layers=v["decoder_layers"], num_frequencies=v["num_frequencies"])
            ignored = ("triplane_tokens", "plane_channels", "mlp_hidden")
    quantizer = QuantizerConfig(kind=v["quantizer"], latent_channels=v["latent_channels"],
                                codebook_size=v["codebook_size"], scale_sides=v["scale_sides"])
    sides = quantizer.scale_sides or default_scale_sides(v["num_latents"])
    # v1 kept the last level twice (surface_logit) and an empty per-prefix list when it held one level.
    levels = tuple(v["surface_logits"]) or ((v["surface_logit"],) * len(sides) if v["surface_logit"] else ())
    extras = {k: v[k] for k in ignored if v[k] != V1_IGNORED_DEFAULTS[k]}
    return TokenizerConfig(width=v["width"], heads=v["heads"], num_latents=v["num_latents"], encoder=encoder,
                           quantizer=quantizer, decoder=decoder, surface=SurfaceLevels(levels),
                           fingerprint_extras=extras)
