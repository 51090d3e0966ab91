"""The locality prior (a TokenizerConfig with a GridEncoderConfig and a VolumeDecoderConfig; v1's
locality="grid"): the K latent tokens are the cells of a 3D grid, so neighbours on the square token
map are neighbours in space and VVQ's down/up-sampling across scales is spatial coarse to fine.
Points are scattered onto a fine grid and convolved down to the latent cells (ConvONet-style); the
decoder convolves the latent cells up to feature volumes that the queries sample trilinearly. A little global self-attention on the K cells keeps long-range
context. The paper's design has no such prior and must learn every route through attention.

Layout: the square map of side S (S even) holds an (S/2) x (S/2) x 4 grid; each 2 x 2 block of the
map is one column of 4 cells along z: map[2y + a, 2x + b] = cell (x, y, z = 2a + b). Volumes are
[B, C, Z, Y, X] (so that grid_sample's (x, y, z) coordinates index them directly); points are in the
unit cube [-0.5, 0.5]^3."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vat.models.layers import FourierEmbed, SelfAttentionBlock

COLUMN = 2  # map cells per column side: a 2 x 2 block of the map is one column of 4 cells along z


def grid_shape(num_latents: int) -> tuple[int, int, int]:
    """(Z, Y, X) of the latent grid on the square map of num_latents tokens."""
    side = math.isqrt(num_latents)
    if side * side != num_latents or side % COLUMN:
        raise ValueError(f"the grid layout needs an even square number of latents, got {num_latents}")
    return COLUMN * COLUMN, side // COLUMN, side // COLUMN


def map_to_volume(f_BCSS: torch.Tensor) -> torch.Tensor:
    """[B, C, S, S] token map -> [B, C, 4, S/2, S/2] volume."""
    B, C, S, _ = f_BCSS.shape
    n = S // COLUMN
    return f_BCSS.view(B, C, n, COLUMN, n, COLUMN).permute(0, 1, 3, 5, 2, 4).reshape(B, C, COLUMN * COLUMN, n, n)


def volume_to_map(v_BCZYX: torch.Tensor) -> torch.Tensor:
    """[B, C, 4, n, n] volume -> [B, C, 2n, 2n] token map (the inverse of map_to_volume)."""
    B, C, _, n, _ = v_BCZYX.shape
    return v_BCZYX.view(B, C, COLUMN, COLUMN, n, n).permute(0, 1, 4, 2, 5, 3).reshape(B, C, COLUMN * n, COLUMN * n)


def cell_centres(shape_ZYX: tuple[int, int, int]) -> torch.Tensor:
    """Centres (x, y, z) of a grid's cells over the unit cube, [Z * Y * X, 3] in volume order."""
    axes = [(torch.arange(n) + 0.5) / n - 0.5 for n in shape_ZYX]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


class ResBlock3d(nn.Module):
    """GroupNorm -> GELU -> conv, twice, plus the input; the last conv starts at zero."""

    def __init__(self, channels: int):
        super().__init__()
        groups = math.gcd(8, channels)
        self.body = nn.Sequential(nn.GroupNorm(groups, channels), nn.GELU(), nn.Conv3d(channels, channels, 3, padding=1),
                                  nn.GroupNorm(groups, channels), nn.GELU(), nn.Conv3d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def level_channels(width: int, plane_channels: int, up_levels: int = 2) -> list[int]:
    """Channels of the latent grid and of the `up_levels` finer levels (x2, x4, ... the latent
    resolution): 2 x plane_channels, plane_channels, then half the level before (at least 4)."""
    channels = [width, 2 * plane_channels, plane_channels]
    while len(channels) < up_levels + 1:
        channels.append(max(4, channels[-1] // 2))
    return channels[:up_levels + 1]


class CellAttention(nn.Module):
    """Global self-attention over the K cells, with a learned position per cell."""

    def __init__(self, width: int, heads: int, cells: int, layers: int):
        super().__init__()
        self.position = nn.Parameter(torch.randn(cells, width) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, v_BCZYX: torch.Tensor) -> torch.Tensor:
        B, C, Z, Y, X = v_BCZYX.shape
        x_BKC = v_BCZYX.flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            x_BKC = block(x_BKC)
        return x_BKC.transpose(1, 2).reshape(B, C, Z, Y, X)


class GridEncoder(nn.Module):
    """Points+normals -> per-point features scattered (mean, plus a point-count channel) onto a grid
    4x finer than the latent cells -> patchifying 3D convolutions -> attention over the cells -> K tokens."""

    def __init__(self, c):
        super().__init__()
        self.cells = grid_shape(c.num_latents)
        self.fine = tuple(4 * n for n in self.cells)
        e = c.encoder
        wide, mid, fine = level_channels(c.width, e.volume_channels)
        self.embed = FourierEmbed(fine, e.num_frequencies, extra_channels=3, mlp=e.point_mlp)
        # 2 x 2 x 2 patches down to the cells: the point embedding already carries where in its fine
        # cell each point lies, and convolutions at the fine level cost most of a CPU step.
        self.stages = nn.Sequential(nn.Conv3d(fine + 1, mid, 2, stride=2), ResBlock3d(mid),
                                    nn.Conv3d(mid, wide, 2, stride=2), ResBlock3d(wide))
        self.attention = CellAttention(c.width, c.heads, c.num_latents, e.layers)
        self.norm = nn.LayerNorm(c.width)

    def scatter(self, points_BN3: torch.Tensor, features_BNC: torch.Tensor) -> torch.Tensor:
        """Mean feature per fine cell and log(1 + count): [B, C + 1, Z, Y, X]."""
        B, N, C = features_BNC.shape
        Z, Y, X = self.fine
        size = torch.tensor([X, Y, Z], device=points_BN3.device)
        ijk = ((points_BN3 + 0.5) * size).long().clamp(min=0).minimum(size - 1)
        cell_BN = (ijk[..., 2] * Y + ijk[..., 1]) * X + ijk[..., 0] + torch.arange(B, device=ijk.device)[:, None] * (Z * Y * X)
        index = cell_BN.flatten()
        sums = features_BNC.new_zeros(B * Z * Y * X, C).index_add_(0, index, features_BNC.flatten(0, 1))
        counts = features_BNC.new_zeros(B * Z * Y * X).index_add_(0, index, features_BNC.new_ones(B * N))
        mean = sums / counts.clamp(min=1.0)[:, None]
        grid = torch.cat([mean, torch.log1p(counts)[:, None]], dim=1)
        return grid.view(B, Z, Y, X, C + 1).permute(0, 4, 1, 2, 3)

    def forward(self, points_BN3: torch.Tensor, normals_BN3: torch.Tensor) -> torch.Tensor:
        v = self.stages(self.scatter(points_BN3, self.embed(points_BN3, normals_BN3)))
        v = self.attention(v)
        z_BKC = volume_to_map(v).flatten(2).transpose(1, 2)  # map order, as VVQ reads the tokens
        return self.norm(z_BKC)


class GridField(nn.Module):
    """Z_hat tokens (map order) -> latent volume -> attention over the cells -> 3D convolutions up to
    2x, 4x, ... the latent resolution (VolumeDecoderConfig.up_levels; with cubic_levels the first step
    also doubles z twice, so the fine levels are cubes of cells) -> every level sampled trilinearly at
    each query, concatenated with the query's Fourier features -> MLP -> occupancy logit."""

    def __init__(self, c):
        super().__init__()
        d = c.decoder
        channels = level_channels(c.width, d.volume_channels, d.up_levels)
        Z, Y, _ = grid_shape(c.num_latents)
        self.factors = [(2, 2, 2)] * d.up_levels
        if d.cubic_levels:
            self.factors[0] = (2 * Y // Z, 2, 2)
        self.attention = CellAttention(c.width, c.heads, c.num_latents, d.layers)
        self.latent_block = ResBlock3d(channels[0])
        self.up = nn.ModuleList(nn.Sequential(nn.Conv3d(coarse, fine, 3, padding=1), ResBlock3d(fine))
                                for coarse, fine in zip(channels[:-1], channels[1:]))
        self.embed = FourierEmbed(d.volume_channels, num_frequencies=4)
        self.mlp = nn.Sequential(nn.Linear(sum(channels) + d.volume_channels, d.mlp_hidden), nn.GELU(),
                                 nn.Linear(d.mlp_hidden, d.mlp_hidden), nn.GELU(), nn.Linear(d.mlp_hidden, 1))

    def volumes(self, z_BKC: torch.Tensor) -> list[torch.Tensor]:
        """The feature volumes, coarse to fine, each [B, C_level, Z, Y, X]: the decoder's features."""
        B, K, C = z_BKC.shape
        side = math.isqrt(K)
        v = map_to_volume(z_BKC.transpose(1, 2).reshape(B, C, side, side))
        levels = [self.latent_block(self.attention(v))]
        for up, factor in zip(self.up, self.factors):
            levels.append(up(F.interpolate(levels[-1], scale_factor=factor, mode="trilinear", align_corners=False)))
        return levels

    features = volumes

    def query(self, levels: list[torch.Tensor], points_BN3: torch.Tensor) -> torch.Tensor:
        B, N, _ = points_BN3.shape
        uvw = (points_BN3 * 2.0).view(B, 1, 1, N, 3)  # unit cube -> grid_sample's [-1, 1], (x, y, z)
        feats = [F.grid_sample(level, uvw.to(level.dtype), mode="bilinear", padding_mode="border",
                               align_corners=False).view(B, -1, N) for level in levels]
        f_BNC = torch.cat(feats, dim=1).transpose(1, 2)
        f_BNC = torch.cat([f_BNC, self.embed(points_BN3).to(f_BNC.dtype)], dim=-1)
        return self.mlp(f_BNC).squeeze(-1)
