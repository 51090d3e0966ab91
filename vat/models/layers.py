"""Building blocks shared by the tokenizer and the generator: Fourier point embedding,
pre-norm self- and cross-attention blocks on torch's fused attention. x_BLC: [batch, tokens, channels]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds work up on `device`: on CUDA, and on CPUs whose oneDNN has native
    bf16 (AVX-512 BF16 or AMX). Elsewhere (AVX2-only CPUs: many laptops, AMD EPYC before Zen 4) bf16
    convolutions fall back to reference kernels: a 3D convolution of the grid tokenizer ran 900x slower
    than in float32 on an AVX2 EPYC, and the codec's refinement 14x slower a step."""
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class FourierEmbed(nn.Module):
    """xyz in the unit cube -> [sin, cos] of octave frequencies, plus xyz itself; then a linear layer.
    One module, used by the encoder (surface points, with normals) and by decoders (queries).

    `mlp=True` adds a residual point-wise MLP after the linear layer. The linear embedding is a sum of
    per-axis terms, so an average of it over a point cloud (what a cross-attention that has not yet
    learned to be selective computes) holds only the three marginal distributions of the points: a
    box. A non-linear embedding makes the same average see joint positions. Its last layer starts at
    zero, so the module starts as the linear embedding (and loads such weights unchanged)."""

    def __init__(self, out_channels: int, num_frequencies: int = 8, extra_channels: int = 0, mlp: bool = False):
        super().__init__()
        self.register_buffer("frequencies", (2.0 ** torch.arange(num_frequencies)) * math.pi, persistent=False)
        self.proj = nn.Linear(3 + 6 * num_frequencies + extra_channels, out_channels)
        self.mlp = None
        if mlp:
            self.mlp = nn.Sequential(nn.LayerNorm(out_channels), MLP(out_channels, ratio=2.0))
            nn.init.zeros_(self.mlp[-1][-1].weight)
            nn.init.zeros_(self.mlp[-1][-1].bias)

    def forward(self, xyz_BN3: torch.Tensor, extra_BNE: torch.Tensor | None = None) -> torch.Tensor:
        angles = (xyz_BN3[..., None] * self.frequencies).flatten(-2)
        parts = [xyz_BN3, angles.sin(), angles.cos()] + ([extra_BNE] if extra_BNE is not None else [])
        h = self.proj(torch.cat(parts, dim=-1))
        return h if self.mlp is None else h + self.mlp(h)


class MLP(nn.Sequential):
    def __init__(self, channels: int, ratio: float = 4.0, out_channels: int | None = None):
        hidden = int(channels * ratio)
        super().__init__(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, out_channels or channels))


class Attention(nn.Module):
    """Multi-head attention; queries from x, keys/values from context (x itself if None)."""

    def __init__(self, channels: int, heads: int, context_channels: int | None = None):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_channels or channels, 2 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x_BLC: torch.Tensor, context_BMC: torch.Tensor | None = None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        context = x_BLC if context_BMC is None else context_BMC
        q = self.q(x_BLC).view(B, L, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(B, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, L, C))


class SelfAttentionBlock(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(channels), Attention(channels, heads)
        self.norm2, self.mlp = nn.LayerNorm(channels), MLP(channels)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = x_BLC + self.attn(self.norm1(x_BLC))
        return x_BLC + self.mlp(self.norm2(x_BLC))


class CrossAttentionBlock(nn.Module):
    def __init__(self, channels: int, heads: int, context_channels: int | None = None):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(channels), nn.LayerNorm(context_channels or channels)
        self.attn = Attention(channels, heads, context_channels)
        self.norm2, self.mlp = nn.LayerNorm(channels), MLP(channels)

    def forward(self, x_BLC: torch.Tensor, context_BMC: torch.Tensor) -> torch.Tensor:
        x_BLC = x_BLC + self.attn(self.norm_q(x_BLC), self.norm_kv(context_BMC))
        return x_BLC + self.mlp(self.norm2(x_BLC))
