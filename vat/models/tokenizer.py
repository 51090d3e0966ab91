"""The Variational Tokenizer (VAT): an encoder of surface points into K latent tokens, a Gaussian
bottleneck quantised across scales (VVQ), and a decoder to occupancy logits. Two designs: the paper's
(in-context compression, triplane decoder; here) and the locality prior's (grid encoder, feature
volumes; vat.models.grid). Their configs: vat.models.tokenizer_config. Points and queries are in the
unit cube [-0.5, 0.5]^3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vat.models.checkpoint import load_weights, save_weights
from vat.models.grid import GridEncoder, GridField
from vat.models.layers import CrossAttentionBlock, FourierEmbed, SelfAttentionBlock
from vat.models.quantizer import MultiScaleQuantizer
from vat.models.tokenizer_config import (COMPRESSIONS, DECODERS, LOCALITIES, QUANTIZERS,  # noqa: F401 (re-exported)
                                         CrossAttentionDecoderConfig, GridEncoderConfig, QuantizerConfig,
                                         QueryEncoderConfig, SurfaceLevels, TokenizerConfig, TriplaneDecoderConfig,
                                         VolumeDecoderConfig)

PRESETS = {
    "paper-256": TokenizerConfig(num_latents=256, quantizer=QuantizerConfig(codebook_size=2048)),
    "paper-576": TokenizerConfig(num_latents=576, quantizer=QuantizerConfig(codebook_size=16384)),
    "paper-1024": TokenizerConfig(num_latents=1024, quantizer=QuantizerConfig(codebook_size=16384)),
    "tiny": TokenizerConfig(width=128, heads=4, num_latents=256,
                            encoder=QueryEncoderConfig(num_points=4096, num_queries=256, layers=4, point_mlp=True),
                            quantizer=QuantizerConfig(codebook_size=1024),
                            decoder=TriplaneDecoderConfig(layers=4, plane_tokens=16, plane_channels=16, mlp_hidden=64)),
    # The locality prior at the tiny size: an 8 x 8 x 4 latent grid, 2 + 2 attention blocks over its cells.
    "tiny-grid": TokenizerConfig(width=128, heads=4, num_latents=256,
                                 encoder=GridEncoderConfig(num_points=4096, layers=2, volume_channels=16, point_mlp=True),
                                 quantizer=QuantizerConfig(codebook_size=1024),
                                 decoder=VolumeDecoderConfig(layers=2, volume_channels=16, mlp_hidden=128)),
}


class Encoder(nn.Module):
    """Points+normals -> L features (cross-attention from learnable queries) -> K latent tokens."""

    def __init__(self, c: TokenizerConfig):
        super().__init__()
        e = c.encoder
        self.compression, self.num_latents = e.compression, c.num_latents
        self.embed = FourierEmbed(c.width, e.num_frequencies, extra_channels=3, mlp=e.point_mlp)
        # Learned token sets start at unit scale (as the triplane tokens): at 0.02 every query reads the
        # same average of the points and every latent starts alike, the encoder passes on almost nothing
        # at first, the decoder learns one average shape and the KL term then pushes sigma to 1, which
        # drowns the latents (posterior collapse: a CPU run of 1,000 steps ended with the same mu for
        # every shape and token, sigma 2.3, held-out IoU 0.12).
        self.queries = nn.Parameter(torch.randn(e.num_queries, c.width))
        self.read = CrossAttentionBlock(c.width, c.heads)
        self.blocks = nn.ModuleList(SelfAttentionBlock(c.width, c.heads) for _ in range(e.layers))
        if e.compression != "pooling":
            self.latents = nn.Parameter(torch.randn(c.num_latents, c.width))
        if e.compression == "q-former":
            self.qformer = nn.ModuleList(CrossAttentionBlock(c.width, c.heads) for _ in range(2))
        self.norm = nn.LayerNorm(c.width)

    def forward(self, points_BN3: torch.Tensor, normals_BN3: torch.Tensor) -> torch.Tensor:
        B = points_BN3.shape[0]
        x_BLC = self.read(self.queries.expand(B, -1, -1), self.embed(points_BN3, normals_BN3))
        if self.compression == "in-context":
            # TiTok-style: latents ride along with the features through self-attention, then are sliced out.
            x_BLC = torch.cat([x_BLC, self.latents.expand(B, -1, -1)], dim=1)
        for block in self.blocks:
            x_BLC = block(x_BLC)
        if self.compression == "in-context":
            z_BKC = x_BLC[:, -self.num_latents:]
        elif self.compression == "pooling":
            z_BKC = F.adaptive_avg_pool1d(x_BLC.transpose(1, 2), self.num_latents).transpose(1, 2)
        else:
            z_BKC = self.latents.expand(B, -1, -1)
            for block in self.qformer:
                z_BKC = block(z_BKC, x_BLC)
        return self.norm(z_BKC)


class TriplaneField(nn.Module):
    """Z_hat tokens -> three planes, each a three-level mipmap -> MLP over sampled features -> logits."""

    def __init__(self, c: TokenizerConfig):
        super().__init__()
        d = c.decoder
        self.t, self.width = d.plane_tokens, c.width
        # Unit-scale init: at 0.02 the first blocks' outputs swamp these learned plane cells, all
        # cells start alike and the decoder spends hundreds of steps breaking that symmetry
        # (4 procedural shapes, 300 steps: fresh-query IoU 0.40-0.48 at 0.02, 0.66-0.83 at 1.0).
        self.tokens = nn.Parameter(torch.randn(3 * d.plane_tokens**2, c.width))
        self.read = CrossAttentionBlock(c.width, c.heads)
        self.blocks = nn.ModuleList(SelfAttentionBlock(c.width, c.heads) for _ in range(d.layers))
        self.norm = nn.LayerNorm(c.width)
        channels = [c.width, 4 * d.plane_channels, 2 * d.plane_channels, d.plane_channels]
        # Each stage doubles the plane side; the three outputs are the mip levels 2t, 4t, 8t.
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1))
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        features = 3 * sum(channels[1:])
        self.mlp = nn.Sequential(nn.Linear(features, d.mlp_hidden), nn.GELU(), nn.Linear(d.mlp_hidden, d.mlp_hidden),
                                 nn.GELU(), nn.Linear(d.mlp_hidden, 1))
        # PyTorch's default init shrinks the features through every upsampling stage and the MLP,
        # which slowed learning several-fold in the overfit test; He init keeps their scale.
        for module in [*self.ups.modules(), *self.mlp.modules()]:
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan = "fan_out" if isinstance(module, nn.ConvTranspose2d) else "fan_in"
                nn.init.kaiming_normal_(module.weight, mode=fan, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def planes(self, z_BKC: torch.Tensor) -> list[torch.Tensor]:
        """The mip levels, each [B * 3, C_level, side, side] (planes xy, xz, yz): the decoder's features."""
        B = z_BKC.shape[0]
        x = self.read(self.tokens.expand(B, -1, -1), z_BKC)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).view(B * 3, self.t, self.t, self.width).permute(0, 3, 1, 2)
        levels = []
        for up in self.ups:
            x = up(x)
            levels.append(x)
        return levels

    features = planes

    def query(self, levels: list[torch.Tensor], points_BN3: torch.Tensor) -> torch.Tensor:
        B, N, _ = points_BN3.shape
        p = points_BN3 * 2.0  # unit cube -> grid_sample's [-1, 1]
        uv = torch.stack([p[..., [0, 1]], p[..., [0, 2]], p[..., [1, 2]]], dim=1).view(B * 3, 1, N, 2)
        feats = [F.grid_sample(level, uv.to(level.dtype), mode="bilinear", padding_mode="border", align_corners=False)
                 for level in levels]
        f_B3CN = torch.cat(feats, dim=1).view(B, 3, -1, N)
        return self.mlp(f_B3CN.flatten(1, 2).transpose(1, 2)).squeeze(-1)


class CrossAttentionField(nn.Module):
    """The ablation: queries' Fourier features cross-attend straight to the decoded latent tokens."""

    def __init__(self, c: TokenizerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(SelfAttentionBlock(c.width, c.heads) for _ in range(c.decoder.layers))
        self.norm = nn.LayerNorm(c.width)
        self.embed = FourierEmbed(c.width, c.decoder.num_frequencies)
        self.read = CrossAttentionBlock(c.width, c.heads)
        self.head = nn.Linear(c.width, 1)

    def tokens(self, z_BKC: torch.Tensor) -> list[torch.Tensor]:
        """[the decoded tokens [B, K, C]]: the decoder's features."""
        for block in self.blocks:
            z_BKC = block(z_BKC)
        return [self.norm(z_BKC)]

    features = tokens

    def query(self, features: list[torch.Tensor], points_BN3: torch.Tensor) -> torch.Tensor:
        return self.head(self.read(self.embed(points_BN3), features[0])).squeeze(-1)


FIELDS = {"triplane": TriplaneField, "cross-attention": CrossAttentionField, "volume": GridField}  # by decoder kind


class VAT(nn.Module):
    """Encoder -> bottleneck (Gaussian for VVQ) -> multi-scale quantiser -> decoder field."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = GridEncoder(c) if c.encoder.kind == "grid" else Encoder(c)
        moments = 2 if c.quantizer.kind == "vvq" else 1
        self.to_latent = nn.Linear(c.width, moments * c.latent_channels)
        if c.quantizer.kind == "vvq":
            # Start with sigma ~ 0.05: with logvar = 0 the latents begin as mostly noise and the
            # decoder settles on one average shape before the encoder can say anything.
            with torch.no_grad():
                self.to_latent.bias[c.latent_channels:].fill_(-6.0)
        self.quantizer = MultiScaleQuantizer(c.latent_channels, c.codebook_size, c.scale_sides)
        self.from_latent = nn.Linear(c.latent_channels, c.width)
        self.field = FIELDS[c.decoder.kind](c)

    # --- latents -------------------------------------------------------------------------
    def latent(self, points_BN3, normals_BN3, sample: bool, stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Z0 [B, K, Cq] and the KL term (0 for plain residual VQ). VVQ: Z0 = mu + sigma * eps.
        `stats`, when given, receives detached diagnostics of posterior collapse: the spread of mu
        across the batch's shapes (near 0: the encoder says nothing) and the mean sigma."""
        h = self.to_latent(self.encoder(points_BN3, normals_BN3))
        if self.config.quantizer.kind != "vvq":
            if stats is not None and h.shape[0] > 1:
                stats["mu_spread"] = h.detach().float().std(0).mean()
            return h, h.new_zeros(())
        mu, logvar = h.float().chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        if stats is not None:
            if mu.shape[0] > 1:
                stats["mu_spread"] = mu.detach().std(0).mean()
            stats["sigma"] = torch.exp(0.5 * logvar.detach()).mean()
        return z, kl

    def latent_map(self, z_BKC: torch.Tensor) -> torch.Tensor:
        """Latent tokens Z0 [B, K, Cq] as the square map [B, Cq, s, s] the multi-scale quantiser reads."""
        s = self.quantizer.side
        return z_BKC.transpose(1, 2).reshape(z_BKC.shape[0], -1, s, s)

    def quantize(self, z_BKC: torch.Tensor) -> list[torch.Tensor]:
        """Token indices per scale (idx_Bl) of latents Z0 [B, K, Cq]."""
        return self.quantizer(self.latent_map(z_BKC)).indices

    @staticmethod
    def _tokens(f_BChw: torch.Tensor) -> torch.Tensor:
        return f_BChw.flatten(2).transpose(1, 2)

    # --- decoding --------------------------------------------------------------------------
    def decode_features(self, z_hat_BKC: torch.Tensor) -> list[torch.Tensor]:
        """Everything of the decoder that does not depend on the query points (computed once per shape):
        the triplane's mip levels, the grid's feature volumes, the cross-attention decoder's tokens."""
        return self.field.features(self.from_latent(z_hat_BKC))

    decode_planes = decode_features  # the name of the paper's triplane design, kept for callers

    def surface_level(self, scales: int | None = None) -> float:
        """The calibrated surface logit of a field decoded from the first `scales` scales (None: all)."""
        levels = self.config.surface.levels
        if not levels:
            return 0.0
        scales = len(levels) if scales is None else scales
        if not 1 <= scales <= len(levels):
            raise ValueError(f"scales must be between 1 and {len(levels)}, got {scales}")
        return levels[scales - 1]

    def query(self, features: list[torch.Tensor], points_BN3: torch.Tensor, scales: int | None = None) -> torch.Tensor:
        """Occupancy logits [B, N] at points [B, N, 3], relative to the calibrated surface level of decoder
        features (decode_features) decoded from the first `scales` scales (None: all of them)."""
        return self.field.query(features, points_BN3) - self.surface_level(scales)

    def forward(self, points_BN3, normals_BN3, queries_BQ3, quantize: bool = True,
                scales_B: torch.Tensor | None = None,
                token_noise_B: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training pass: logits at the queries and the auxiliary losses. Phase 1 uses quantize=False.
        `scales_B` (with quantisation): decode shape b from its first scales_B[b] scales only, as a
        coarse prefix is decoded; prefixes shorter than all scales pass no gradient to the encoder.
        `token_noise_B` (with quantisation): decode shape b from its tokens with near misses at that rate
        (MultiScaleQuantizer.near_misses); no gradient then reaches the encoder (for a frozen one)."""
        stats = {}
        z, kl = self.latent(points_BN3, normals_BN3, sample=self.training, stats=stats)
        out = {"kl": kl, "codebook": z.new_zeros(()), **stats}
        if quantize:
            q = self.quantizer(self.latent_map(z), partial=scales_B is not None)
            f_hat, partial_f_hat = q.f_hat_BChw, q.partial_f_hat
            if token_noise_B is not None:
                fed = self.quantizer.near_misses(q.indices, token_noise_B)
                partial_f_hat = [x.to(f_hat.dtype) for x in self.quantizer.prefix_f_hats(fed)]
                f_hat = partial_f_hat[-1]
            if scales_B is not None:
                prefix_SBChw = torch.stack(partial_f_hat[:-1] + [f_hat])
                f_hat = prefix_SBChw[scales_B.to(f_hat.device) - 1, torch.arange(f_hat.shape[0], device=f_hat.device)]
            z = self._tokens(f_hat)
            out.update(codebook=q.codebook_loss, indices=q.indices)
        out["logits"] = self.field.query(self.decode_features(z), queries_BQ3)  # raw: the loss's logits
        return out

    # --- the codec ---------------------------------------------------------------------------
    @torch.no_grad()
    def mean_latent(self, points_BN3, normals_BN3, average: int = 1) -> torch.Tensor:
        """The Gaussian's mean Z0 [B / A, K, Cq] (no sample), with the rows in groups of `average` = A samplings of
        one shape each (shape b: rows b * A .. b * A + A - 1) and each group's latents averaged."""
        z, _ = self.latent(points_BN3, normals_BN3, sample=False)
        return z.view(-1, average, *z.shape[1:]).mean(1) if average > 1 else z

    @torch.no_grad()
    def encode(self, points_BN3, normals_BN3, average: int = 1) -> list[torch.Tensor]:
        """Token indices per scale (idx_Bl) of mean_latent: the Gaussian's mean is stored, not a sample;
        `average` = A > 1 quantises the mean latent of each group of A rows (B / A shapes out)."""
        return self.quantize(self.mean_latent(points_BN3, normals_BN3, average))

    @torch.no_grad()
    def decode_indices(self, indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder features (decode_features) from the first len(indices) scales."""
        return self.decode_features(self._tokens(self.quantizer.indices_to_f_hat(indices)))

    # --- checkpoints -----------------------------------------------------------------------------
    def fingerprint(self) -> bytes:
        """4 bytes that identify this tokenizer's config and codebook; stored in every .vat file. Computed
        from the config's fingerprint_fields() (the encoder and the quantizer, which define the tokens) and
        the codebook: the surface levels and decoder fields added since v1 (the grid's levels) change how
        a decoder draws the field, not what the tokens mean."""
        digest = hashlib.sha256(json.dumps(self.config.fingerprint_fields(), sort_keys=True).encode())
        digest.update(self.quantizer.codebook.weight.detach().to(torch.float16).cpu().numpy().tobytes())
        return digest.digest()[:4]

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        save_weights(self, self.config.to_dict(), directory, "tokenizer", dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "VAT":
        return load_weights(directory, "tokenizer", lambda d: cls(TokenizerConfig.from_dict(d)))
