"""Multi-scale residual vector quantiser (VAR's scheme on a sqrt(K) x sqrt(K) token grid).

One object serves three roles: tokenizer training (forward), building the generator's
teacher-forcing input (`teacher_forcing_input`) and step-by-step sampling (`next_scale_input`).
Layout names: B batch, C channels (Cq), h/w the side of one scale, H/W the full grid side,
l tokens of one scale (h*w), L tokens of all scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Square token maps per scale, keyed by K (tokens of the last scale): the paper's schedules.
SCALE_SIDES = {
    256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    576: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24),
    1024: (1, 2, 3, 4, 5, 6, 8, 10, 13, 14, 24, 32),
}


def default_scale_sides(num_tokens: int) -> tuple[int, ...]:
    """The paper's schedule for K in SCALE_SIDES, else a VAR-like schedule ending at sqrt(K)."""
    if num_tokens in SCALE_SIDES:
        return SCALE_SIDES[num_tokens]
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"the number of latent tokens must be a square, got {num_tokens}")
    sides = sorted({max(1, round(side * f)) for f in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4)} | {1, side})
    return tuple(s for s in sides if s <= side)


@dataclass
class QuantizerOutput:
    f_hat_BChw: torch.Tensor  # quantised features, straight-through gradient to the input
    indices: list[torch.Tensor]  # per scale: idx_Bl (int64 [B, h*w])
    codebook_loss: torch.Tensor  # MSE between features and their quantisation (both directions)
    partial_f_hat: list[torch.Tensor] | None = None  # with partial=True: Z_hat of the first s scales, s = 1..S (detached)


class UpsampleResidual(nn.Module):
    """Up(x): bicubic interpolation to the full grid, then a learned residual convolution."""

    def __init__(self, channels: int, mix: float = 0.5):
        super().__init__()
        self.mix = mix
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x_BChw: torch.Tensor, size: int) -> torch.Tensor:
        if x_BChw.shape[-1] != size:
            x_BChw = F.interpolate(x_BChw, size=(size, size), mode="bicubic", align_corners=False)
        return x_BChw * (1 - self.mix) + self.conv(x_BChw) * self.mix


class MultiScaleQuantizer(nn.Module):
    """x_s = Quant(Down(Z_s)); Z_{s+1} = Z_s - Up(x_s); Z_hat = sum_s Up(x_s)."""

    def __init__(self, channels: int, codebook_size: int, scale_sides: tuple[int, ...], beta: float = 0.25):
        super().__init__()
        if list(scale_sides) != sorted(set(scale_sides)):
            raise ValueError(f"scale sides must increase strictly, got {scale_sides}")
        self.channels, self.codebook_size, self.scale_sides, self.beta = channels, codebook_size, tuple(scale_sides), beta
        self.codebook = nn.Embedding(codebook_size, channels)
        nn.init.normal_(self.codebook.weight, std=1.0 / math.sqrt(channels))
        self.up = nn.ModuleList(UpsampleResidual(channels) for _ in scale_sides)
        # Exponential moving average of how often each code is picked, for dead-code restarts.
        self.register_buffer("usage", torch.ones(codebook_size), persistent=False)

    @property
    def side(self) -> int:
        return self.scale_sides[-1]

    @property
    def tokens_per_scale(self) -> tuple[int, ...]:
        return tuple(s * s for s in self.scale_sides)

    @property
    def bits_per_token(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    def _distances(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Squared distances [N, V] of the vectors to every code."""
        codes = self.codebook.weight
        return z_NC.pow(2).sum(1, keepdim=True) - 2 * z_NC @ codes.T + codes.pow(2).sum(1)[None]

    def _nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        return self._distances(z_NC).argmin(dim=1)

    def _lookup(self, idx_Bl: torch.Tensor, side: int) -> torch.Tensor:
        B = idx_Bl.shape[0]
        return self.codebook(idx_Bl).transpose(1, 2).reshape(B, self.channels, side, side)

    def forward(self, f_BChw: torch.Tensor, partial: bool = False) -> QuantizerOutput:
        """Quantise every scale; `partial` also returns Z_hat after each scale (for training a decoder
        on scale prefixes)."""
        B, C, H, W = f_BChw.shape
        if (C, H, W) != (self.channels, self.side, self.side):
            raise ValueError(f"expected [B, {self.channels}, {self.side}, {self.side}], got {list(f_BChw.shape)}")
        f = f_BChw.float()
        f_rest, f_hat = f.detach().clone(), torch.zeros_like(f)
        indices, loss, partials = [], f.new_zeros(()), []
        counts = torch.zeros(self.codebook_size, device=f.device)
        for si, side in enumerate(self.scale_sides):
            z_BChw = F.interpolate(f_rest, size=(side, side), mode="area") if side != H else f_rest
            idx_N = self._nearest(z_BChw.permute(0, 2, 3, 1).reshape(-1, C))
            idx_Bl = idx_N.view(B, side * side)
            h_BChw = self.up[si](self._lookup(idx_Bl, side), H)
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw
            indices.append(idx_Bl)
            if partial:
                partials.append(f_hat.detach())
            counts += torch.bincount(idx_N, minlength=self.codebook_size).float()
            loss = loss + F.mse_loss(f_hat.detach(), f) * self.beta + F.mse_loss(f_hat, f.detach())
        if self.training:
            self.usage.mul_(0.99).add_(counts / counts.sum() * self.codebook_size, alpha=0.01)
        f_hat_st = f_hat.detach() + (f - f.detach())  # straight-through; the value is f_hat exactly
        return QuantizerOutput(f_hat_st.to(f_BChw.dtype), indices, loss / len(self.scale_sides),
                               [x.to(f_BChw.dtype) for x in partials] if partial else None)

    def _scale_term(self, si: int, idx_Bl: torch.Tensor) -> torch.Tensor:
        """Up(x_si): scale `si`'s tokens as their share of Z_hat, on the full grid."""
        return self.up[si](self._lookup(idx_Bl, self.scale_sides[si]), self.side)

    def indices_to_f_hat(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """Z_hat from the first len(indices) scales (decoding a prefix is how coarse scales are seen)."""
        return self.prefix_f_hats(indices)[-1]

    def prefix_f_hats(self, indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """Z_hat after each of the first len(indices) scales: [Z_hat from scale 1, from scales 1-2, ...]."""
        if not 1 <= len(indices) <= len(self.scale_sides):
            raise ValueError(f"need 1..{len(self.scale_sides)} scales of indices, got {len(indices)}")
        f_hats = []
        for si, idx_Bl in enumerate(indices):
            h_BChw = self._scale_term(si, idx_Bl)
            f_hats.append(h_BChw if not f_hats else f_hats[-1] + h_BChw)
        return f_hats

    @torch.no_grad()
    def near_misses(self, indices: list[torch.Tensor], rate_B: torch.Tensor, near: int = 8) -> list[torch.Tensor]:
        """The indices with mistakes of the kind a sampler makes: each token of sample b (every scale) is
        replaced with probability rate_B[b] by one of the `near` codes nearest its own code. A decoder
        trained on them learns to draw a clean shape from a generator's slightly wrong tokens."""
        near = max(1, min(near, self.codebook_size - 1))
        distances_VV = self._distances(self.codebook.weight.float()).fill_diagonal_(float("inf"))  # never itself
        neighbours_VK = distances_VV.topk(near, dim=1, largest=False).indices
        noisy = []
        for idx_Bl in indices:
            swap_Bl = torch.rand(idx_Bl.shape, device=idx_Bl.device) < rate_B[:, None].to(idx_Bl.device)
            pick_Bl = torch.randint(0, near, idx_Bl.shape, device=idx_Bl.device)
            noisy.append(torch.where(swap_Bl, neighbours_VK[idx_Bl, pick_Bl], idx_Bl))
        return noisy

    def next_scale_input(self, si: int, f_hat_BChw: torch.Tensor | None, idx_Bl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale `si`'s tokens to Z_hat; return it and the generator's input for scale si+1
        (Z_hat area-downsampled to that scale, [B, l, C]), or None after the last scale."""
        h_BChw = self._scale_term(si, idx_Bl)
        f_hat_BChw = h_BChw if f_hat_BChw is None else f_hat_BChw + h_BChw
        if si + 1 == len(self.scale_sides):
            return f_hat_BChw, None
        side = self.scale_sides[si + 1]
        x_BChw = F.interpolate(f_hat_BChw, size=(side, side), mode="area")
        return f_hat_BChw, x_BChw.flatten(2).transpose(1, 2)

    def teacher_forcing_input(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """The generator's input for scales 2..S from ground-truth indices: [B, L - 1, C]."""
        inputs, f_hat = [], None
        for si, idx_Bl in enumerate(indices[:-1]):
            f_hat, x_BlC = self.next_scale_input(si, f_hat, idx_Bl)
            inputs.append(x_BlC)
        return torch.cat(inputs, dim=1)

    @torch.no_grad()
    def self_correcting_input(self, indices: list[torch.Tensor], rate_B: torch.Tensor,
                              near: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing with mistakes, so that a generator learns to correct its earlier scales rather
        than build on their errors (Infinity's bitwise self-correction, for index tokens). On every scale
        but the last, each token of sample b is replaced with probability rate_B[b] by one of the `near`
        codes next nearest its target (a near miss, the kind a sampler makes). Each target is the code
        nearest to what its scale has to quantise after the prefix actually fed: the true token's code
        plus D = Down(Z_hat of the true prefix - Z_hat of the fed one). The true scale's input Down(residual)
        is unknown without the encoder, so its true code stands in for it; where the prefix's mistakes do
        not reach (D = 0) the target is the true token exactly. Returns the generator's inputs [B, L - 1, C]
        (as teacher_forcing_input) and its targets [B, L]; with rate 0, teacher_forcing_input(indices) and
        the indices."""
        if len(indices) != len(self.scale_sides):
            raise ValueError(f"need the indices of all {len(self.scale_sides)} scales, got {len(indices)}")
        near = max(1, min(near, self.codebook_size - 1))
        true_hat = fed_hat = None
        inputs, targets = [], []
        for si, side in enumerate(self.scale_sides):
            true_Bl = indices[si]
            z_BChw = self._lookup(true_Bl, side)
            B, C = z_BChw.shape[:2]
            if fed_hat is not None:
                gap = true_hat - fed_hat
                gap_BChw = F.interpolate(gap, size=(side, side), mode="area") if side != self.side else gap
                z_BChw = z_BChw + gap_BChw
            ranked_Nk = self._distances(z_BChw.permute(0, 2, 3, 1).reshape(-1, C)).topk(
                near + 1, dim=1, largest=False).indices
            target_Bl = true_Bl if fed_hat is None else torch.where(
                gap_BChw.flatten(2).abs().amax(dim=1) > 0, ranked_Nk[:, 0].view(B, -1), true_Bl)
            targets.append(target_Bl)
            if si + 1 == len(self.scale_sides):
                break
            swap_Bl = torch.rand(target_Bl.shape, device=target_Bl.device) < rate_B[:, None]
            pick_N1 = torch.randint(1, near + 1, (ranked_Nk.shape[0], 1), device=target_Bl.device)
            fed_Bl = torch.where(swap_Bl, ranked_Nk.gather(1, pick_N1).view(B, -1), target_Bl)
            true_term = self._scale_term(si, true_Bl)
            true_hat = true_term if true_hat is None else true_hat + true_term
            fed_hat, x_BlC = self.next_scale_input(si, fed_hat, fed_Bl)
            inputs.append(x_BlC)
        return torch.cat(inputs, dim=1), torch.cat(targets, dim=1)

    @torch.no_grad()
    def restart_dead_codes(self, samples_NC: torch.Tensor, threshold: float = 0.03) -> int:
        """Move codes picked far less than average onto random feature vectors; returns how many.
        Call with the same samples on every rank (e.g. gathered) so replicas stay identical."""
        dead = (self.usage < threshold).nonzero().flatten()
        if len(dead) == 0 or len(samples_NC) == 0:
            return 0
        pick = torch.randint(len(samples_NC), (len(dead),), device=samples_NC.device)
        self.codebook.weight.data[dead] = samples_NC[pick].to(self.codebook.weight.dtype)
        self.usage[dead] = 1.0
        return len(dead)
