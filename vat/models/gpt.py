"""Stage 2: a VAR-style next-scale autoregressive transformer over the tokenizer's multi-scale tokens,
conditioned on image tokens (DINOv2 or EfficientNet-Lite0; a prefix) and a CLIP text embedding (start token and
AdaLN condition).

Sequence layout: [N image tokens | start token = scale 1 | scales 2..S], one level id per token
(0 for the image tokens, s for scale s); a token attends to every token of a lower or equal level.
Layout names: B batch, N image tokens, W model width, C input channels, l tokens of one scale,
L tokens of all scales, T = N + L sequence positions, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vat.errors import VatError
from vat.models.checkpoint import load_weights, save_weights
from vat.models.layers import MLP
from vat.models.quantizer import SCALE_SIDES, MultiScaleQuantizer
from vat.sampling_config import CFG_SCHEDULES, DEFAULT_SAMPLING


@dataclass
class GeneratorConfig:
    """Every size of the generator; saved as generator_config.json next to the weights."""

    width: int = 1280
    depth: int = 12
    heads: int = 16
    mlp_ratio: float = 4.0
    vocabulary: int = 16384  # the tokenizer's codebook size
    latent_channels: int = 16  # the tokenizer's Cq
    scale_sides: tuple[int, ...] = SCALE_SIDES[1024]  # the tokenizer's schedule
    image_channels: int = 1024  # DINOv2 ViT-L/14 token width
    image_tokens: int = 257  # DINOv2 ViT-L/14 at 224 px: 16 x 16 patches + CLS
    text_channels: int = 768  # CLIP ViT-L/14 text embedding width
    condition_dropout: float = 0.1  # per sample, in training: both conditions become null (for CFG)
    # Per sample, in training, independently of condition_dropout: the text alone becomes null, so that the
    # image-only use (the demo's, eval-gen's) is trained too; 0 (the paper): text and image always come together.
    text_dropout: float = 0.0
    # In training, dropout on every block's attention and MLP outputs before they join the residual stream
    # (GPT-2's residual dropout): a regulariser for small data. 0 (the paper, and every shipped model): none.
    dropout: float = 0.0
    # False (the paper): the image reaches the generator only as the attended prefix and the text vector is
    # the start token and every block's AdaLN condition. True: the mean of the projected image tokens joins
    # the text vector there as well (VAR's class-embedding path), so every block is modulated by the image.
    global_image: bool = False

    def __post_init__(self):
        self.scale_sides = tuple(self.scale_sides)
        if list(self.scale_sides) != sorted(set(self.scale_sides)) or self.scale_sides[0] < 1:
            raise ValueError(f"scale sides must be positive and increase strictly, got {self.scale_sides}")
        if self.width % self.heads:
            raise ValueError(f"{self.width} channels do not split into {self.heads} heads")
        for name in ("condition_dropout", "text_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def tokens_per_scale(self) -> tuple[int, ...]:
        return tuple(s * s for s in self.scale_sides)

    def matching(self, tokenizer_config) -> "GeneratorConfig":
        """This config with the vocabulary, Cq and schedule of a TokenizerConfig."""
        return dataclasses.replace(self, vocabulary=tokenizer_config.codebook_size,
                                   latent_channels=tokenizer_config.latent_channels,
                                   scale_sides=tokenizer_config.scale_sides)

    def matching_encoders(self, encoders) -> "GeneratorConfig":
        """This config with the image token count and the widths of ConditionEncoders
        (vat.models.conditioning); an absent encoder keeps the sizes of its null condition."""
        sizes = {"image_tokens": encoders.image_tokens, "image_channels": encoders.image_channels,
                 "text_channels": encoders.text_channels}
        return dataclasses.replace(self, **{k: v for k, v in sizes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GeneratorConfig":
        return cls(**values)


PRESETS = {
    "paper": GeneratorConfig(),
    # Matches the tokenizer's "tiny" preset; the condition widths match the small condition
    # encoders shipped with the default checkpoint (8 x 8 patches + CLS).
    "tiny": GeneratorConfig(width=192, depth=6, heads=6, vocabulary=1024, scale_sides=SCALE_SIDES[256],
                            image_channels=128, image_tokens=65, text_channels=128),
}


class NormalizedAttention(nn.Module):
    """Self-attention on L2-normalised queries and keys with a learnable per-head temperature (VAR):
    attention logits stay bounded however large the activations grow. Optionally keeps a kv-cache."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.log_temperature = nn.Parameter(torch.full((heads, 1, 1), math.log(4.0)))

    def forward(self, x_BTW: torch.Tensor, mask_TM: torch.Tensor, cache: dict | None) -> torch.Tensor:
        """mask_TM: True where a query may attend a key; with a cache, the keys are cached + new ones.
        cache: {} before the first step; filled in place with k and v of every position seen."""
        B, T, W = x_BTW.shape
        q, k, v = self.qkv(x_BTW).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # Capped at 100 as in VAR: a runaway temperature would make attention one-hot.
        q = F.normalize(q, dim=-1) * self.log_temperature.clamp(max=math.log(100.0)).exp()
        k = F.normalize(k, dim=-1)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_TM, scale=1.0)
        return self.out(y.transpose(1, 2).reshape(B, T, W))


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block whose norms' scale and shift and the residual gates come from the text
    vector; `dropout` (training only) on the attention and MLP outputs before they join the residual stream."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = NormalizedAttention(width, heads)
        self.mlp = MLP(width, mlp_ratio)
        self.drop = nn.Dropout(dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        # adaLN-Zero (DiT): zero gates make every block start as the identity.
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x_BTW: torch.Tensor, cond_BW: torch.Tensor, mask_TM: torch.Tensor, cache: dict | None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond_BW)[:, None].chunk(6, dim=-1)
        x_BTW = x_BTW + gate1 * self.drop(self.attn(self.norm(x_BTW) * (1 + scale1) + shift1, mask_TM, cache))
        return x_BTW + gate2 * self.drop(self.mlp(self.norm(x_BTW) * (1 + scale2) + shift2))


def top_k_filter(logits_BV: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k largest logits of each row (ties broken by position); k <= 0 keeps all."""
    if k <= 0 or k >= logits_BV.shape[-1]:
        return logits_BV
    keep = torch.zeros_like(logits_BV, dtype=torch.bool).scatter(-1, logits_BV.topk(k, dim=-1).indices, True)
    return logits_BV.masked_fill(~keep, float("-inf"))


def top_p_filter(logits_BV: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p (never empty);
    p <= 0 or p >= 1 keeps all."""
    if p <= 0.0 or p >= 1.0:
        return logits_BV
    sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
    probs_BV = sorted_BV.softmax(dim=-1)
    # A token goes when the strictly more likely ones already reach p; the first one never does.
    drop_sorted = probs_BV.cumsum(dim=-1) - probs_BV >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order_BV, drop_sorted)
    return logits_BV.masked_fill(drop, float("-inf"))


def sample_tokens(logits_BlV: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """idx_Bl drawn from softmax(logits / temperature) after top-k then top-p filtering (top_k=1: greedy)."""
    if temperature <= 0:
        raise VatError(f"temperature must be positive (use top_k=1 for greedy), got {temperature}")
    logits = top_p_filter(top_k_filter(logits_BlV.float() / temperature, top_k), top_p)
    idx = torch.multinomial(logits.softmax(dim=-1).flatten(0, -2), 1, generator=generator)
    return idx.view(logits_BlV.shape[:-1])


def scale_temperature(temperature: float, temperature_last: float | None, scale_index: int, num_scales: int) -> float:
    """The softmax temperature of scale `scale_index` (0-based): `temperature` at the first scale, falling (or
    rising) linearly to `temperature_last` at the last; constant when temperature_last is None. Cooler fine
    scales (VAR's sampler cools as the scale grows) keep the many tokens of a scale, drawn in parallel,
    from disagreeing into holes."""
    if temperature_last is None:
        return temperature
    return temperature + (temperature_last - temperature) * scale_index / max(num_scales - 1, 1)


def guidance_weight(cfg: float, scale_index: int, num_scales: int, schedule: str) -> float:
    """w for scale `scale_index` (0-based): constant -> cfg; linear -> cfg * s / (S - 1), i.e. 0 at the
    first scale and cfg at the last (VAR). Guided logits are (1 + w) * cond - w * uncond."""
    if schedule == "constant":
        return cfg
    if schedule == "linear":
        return cfg * scale_index / max(num_scales - 1, 1)
    raise VatError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {schedule!r}")


class NextScaleGPT(nn.Module):
    """Predicts all tokens of scale s in parallel from the conditions and the quantiser's Z_hat of scales < s."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = c = config
        self.image_proj = nn.Linear(c.image_channels, c.width)
        self.text_proj = nn.Linear(c.text_channels, c.width)
        self.word_embed = nn.Linear(c.latent_channels, c.width)
        # Stand-ins for a missing or dropped condition; the unconditional half of classifier-free guidance.
        self.null_image = nn.Parameter(torch.randn(c.image_tokens, c.width) * 0.02)
        self.null_text = nn.Parameter(torch.randn(c.width) * 0.02)
        if c.global_image:  # zero at the start: the model begins as the paper's
            self.image_global = nn.Linear(c.width, c.width)
            nn.init.zeros_(self.image_global.weight)
            nn.init.zeros_(self.image_global.bias)
        self.pos_image = nn.Parameter(torch.randn(c.image_tokens, c.width) * 0.02)
        self.pos_scales = nn.Parameter(torch.randn(sum(c.tokens_per_scale), c.width) * 0.02)
        self.level_embed = nn.Embedding(len(c.scale_sides), c.width)
        nn.init.normal_(self.level_embed.weight, std=0.02)
        self.blocks = nn.ModuleList(AdaLNBlock(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.head_norm = nn.LayerNorm(c.width, elementwise_affine=False)
        self.head_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.width, 2 * c.width))
        nn.init.zeros_(self.head_modulation[1].weight)
        nn.init.zeros_(self.head_modulation[1].bias)
        self.head = nn.Linear(c.width, c.vocabulary)

        scale_ids = torch.repeat_interleave(torch.arange(1, len(c.scale_sides) + 1), torch.tensor(c.tokens_per_scale))
        self.register_buffer("levels_T", torch.cat([torch.zeros(c.image_tokens, dtype=torch.long), scale_ids]),
                             persistent=False)
        # Sequence position where each scale ends (scale s occupies ends[s-1]:ends[s]).
        self.ends = [c.image_tokens + sum(c.tokens_per_scale[:s]) for s in range(len(c.scale_sides) + 1)]

    def attention_mask(self) -> torch.Tensor:
        """[T, T] bool, True where token i may attend token j: level[j] <= level[i]."""
        levels = self.levels_T
        return levels[None, :] <= levels[:, None]

    # --- embeddings --------------------------------------------------------------------------
    def condition(self, image_tokens_BNC: torch.Tensor | None, text_BC: torch.Tensor | None, batch: int,
                  drop_B: torch.Tensor | None = None,
                  drop_text_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Image prefix [B, N, W] (with its position embedding) and the condition vector [B, W] (the
        text's, plus the pooled image with config.global_image); null embeddings where a condition is
        None or drop_B is True (the text alone where drop_text_B is True)."""
        c = self.config
        if image_tokens_BNC is None:
            image_BNW = self.null_image.expand(batch, -1, -1)
        elif image_tokens_BNC.shape != (batch, c.image_tokens, c.image_channels):
            raise VatError(f"expected image tokens [{batch}, {c.image_tokens}, {c.image_channels}], "
                           f"got {list(image_tokens_BNC.shape)}")
        else:
            image_BNW = self.image_proj(image_tokens_BNC)
        if text_BC is None:
            text_BW = self.null_text.expand(batch, -1)
        elif text_BC.shape != (batch, c.text_channels):
            raise VatError(f"expected a text embedding [{batch}, {c.text_channels}], got {list(text_BC.shape)}")
        else:
            text_BW = self.text_proj(text_BC)
        if drop_text_B is not None:
            text_BW = torch.where(drop_text_B[:, None], self.null_text, text_BW)
        if drop_B is not None:
            image_BNW = torch.where(drop_B[:, None, None], self.null_image, image_BNW)
            text_BW = torch.where(drop_B[:, None], self.null_text, text_BW)
        if c.global_image:
            text_BW = text_BW + self.image_global(image_BNW.mean(dim=1))
        return image_BNW + self.pos_image, text_BW

    def scale_tokens(self, first_scale: int, x_BlC: torch.Tensor | None, text_BW: torch.Tensor) -> torch.Tensor:
        """Embeddings of consecutive scales from `first_scale` (0-based): scale 0 is the start token
        (the text vector); later scales are word embeddings of the quantiser's inputs x_BlC."""
        parts = [text_BW[:, None]] if first_scale == 0 else []
        if x_BlC is not None:
            parts.append(self.word_embed(x_BlC))
        x_BlW = torch.cat(parts, dim=1)
        lo = self.ends[first_scale] - self.config.image_tokens
        levels = self.levels_T[self.ends[first_scale]:self.ends[first_scale] + x_BlW.shape[1]]
        return x_BlW + self.pos_scales[lo:lo + x_BlW.shape[1]] + self.level_embed(levels - 1)

    def _transformer(self, x_BTW, text_BW, mask_TM, caches: list[dict] | None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x_BTW = block(x_BTW, text_BW, mask_TM, None if caches is None else caches[i])
        return x_BTW

    def _logits(self, h_BlW: torch.Tensor, text_BW: torch.Tensor) -> torch.Tensor:
        shift, scale = self.head_modulation(text_BW)[:, None].chunk(2, dim=-1)
        return self.head(self.head_norm(h_BlW) * (1 + scale) + shift)

    # --- training --------------------------------------------------------------------------
    def forward(self, image_tokens_BNC: torch.Tensor | None, text_BC: torch.Tensor | None,
                x_teacher_BLC: torch.Tensor, scales: int | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, L, V] for all scales; x_teacher_BLC is [B, L - 1, Cq] from
        quantizer.teacher_forcing_input. In training each sample loses both conditions with p = condition_dropout
        and, independently, the text alone with p = text_dropout. `scales`: the logits of the first
        `scales` scales only (a shorter, cheaper pass; the same values as the full pass's)."""
        B = x_teacher_BLC.shape[0]
        if x_teacher_BLC.shape[1:] != (sum(self.config.tokens_per_scale) - 1, self.config.latent_channels):
            raise VatError(f"expected teacher-forcing input [B, {sum(self.config.tokens_per_scale) - 1}, "
                           f"{self.config.latent_channels}], got {list(x_teacher_BLC.shape)}")
        drop_B = drop_text_B = None
        if self.training and self.config.condition_dropout > 0:
            drop_B = torch.rand(B, device=x_teacher_BLC.device) < self.config.condition_dropout
        if self.training and self.config.text_dropout > 0 and text_BC is not None:
            drop_text_B = torch.rand(B, device=x_teacher_BLC.device) < self.config.text_dropout
        image_BNW, text_BW = self.condition(image_tokens_BNC, text_BC, B, drop_B, drop_text_B)
        if scales is not None:
            if not 1 <= scales <= len(self.config.scale_sides):
                raise VatError(f"scales must be between 1 and {len(self.config.scale_sides)}, got {scales}")
            x_teacher_BLC = x_teacher_BLC[:, :sum(self.config.tokens_per_scale[:scales]) - 1]
        x_BTW = torch.cat([image_BNW, self.scale_tokens(0, x_teacher_BLC, text_BW)], dim=1)
        T = x_BTW.shape[1]
        h_BTW = self._transformer(x_BTW, text_BW, self.attention_mask()[:T, :T], None)
        return self._logits(h_BTW[:, self.config.image_tokens:], text_BW)

    # --- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, quantizer: MultiScaleQuantizer, image_tokens: torch.Tensor | None = None,
                 text: torch.Tensor | None = None, batch_size: int = 1,
                 cfg: float = DEFAULT_SAMPLING.cfg, cfg_schedule: str = DEFAULT_SAMPLING.cfg_schedule,
                 temperature: float = DEFAULT_SAMPLING.temperature, top_k: int = DEFAULT_SAMPLING.top_k,
                 top_p: float = DEFAULT_SAMPLING.top_p,
                 temperature_last: float | None = DEFAULT_SAMPLING.temperature_last,
                 seed: int | torch.Generator | list[int] | None = None,
                 use_cache: bool = True, on_scale=None, choose=None, scales: int | None = None) -> list[torch.Tensor]:
        """Token indices per scale (idx_Bl), coarse to fine; with `scales`, only the first that many (a prefix:
        the same tokens the full sampling of the same seed starts with, up to float rounding). With cfg != 0
        and a condition, the conditional and unconditional (null) passes run as one doubled batch; see
        guidance_weight for the formula.
        use_cache=True feeds only each new scale's tokens; False re-runs the whole prefix every step.
        batch_size only counts when no condition is given; seed: an int or a torch.Generator for
        reproducible tokens, None for torch's global generator; a list of ints samples one row per seed
        (a condition of batch 1 is shared by all rows), each row the tokens generate(seed=that int) gives
        (up to float rounding in the batched forward pass): batched samples for the price of few.
        on_scale(done, total), if given, is called after each scale (progress bars). temperature_last: see
        scale_temperature (None: `temperature` at every scale). choose(si, logits_BlV), if given, picks each
        scale's tokens (idx_Bl) from its float32 logits in place of sampling: how the entropy coder
        (vat.entropy) reads the model's probabilities of known tokens, scale by scale."""
        c = self.config
        if (quantizer.scale_sides, quantizer.codebook_size, quantizer.channels) != \
                (c.scale_sides, c.vocabulary, c.latent_channels):
            raise VatError("the quantiser's scales, codebook size or channels do not match the generator's config")
        if cfg_schedule not in CFG_SCHEDULES:
            raise VatError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {cfg_schedule!r}")
        device = self.pos_scales.device
        if isinstance(seed, (list, tuple)):
            if not seed:
                raise VatError("seed: give at least one seed")
            batch_size = len(seed)
            image_tokens, text = (given if given is None or given.shape[0] != 1 else
                                  given.expand(batch_size, *given.shape[1:]) for given in (image_tokens, text))
            generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seed]
        else:
            generators = [seed if isinstance(seed, torch.Generator) or seed is None else
                          torch.Generator(device=device).manual_seed(seed)]
        batch_size = next((given.shape[0] for given in (image_tokens, text) if given is not None), batch_size)

        guided = cfg != 0 and (image_tokens is not None or text is not None)
        image_BNW, text_BW = self.condition(image_tokens, text, batch_size)
        if guided:
            null_image_BNW, null_text_BW = self.condition(None, None, batch_size)
            image_BNW, text_BW = torch.cat([image_BNW, null_image_BNW]), torch.cat([text_BW, null_text_BW])
        num_scales = len(c.scale_sides) if scales is None else int(scales)
        if not 1 <= num_scales <= len(c.scale_sides):
            raise VatError(f"scales must be 1 to {len(c.scale_sides)}, got {scales}")
        mask_TT = self.attention_mask()
        caches = [{} for _ in self.blocks] if use_cache else None
        new_BTW = torch.cat([image_BNW, self.scale_tokens(0, None, text_BW)], dim=1)
        seen_BTW, f_hat, indices = None, None, []
        for si in range(num_scales):
            begin, end = self.ends[si], self.ends[si + 1]
            if use_cache:
                start = end - new_BTW.shape[1]
                h_BTW = self._transformer(new_BTW, text_BW, mask_TT[start:end, :end], caches)
            else:
                seen_BTW = new_BTW if seen_BTW is None else torch.cat([seen_BTW, new_BTW], dim=1)
                h_BTW = self._transformer(seen_BTW, text_BW, mask_TT[:end, :end], None)
            logits_BlV = self._logits(h_BTW[:, -(end - begin):], text_BW).float()
            if guided:
                cond_BlV, uncond_BlV = logits_BlV.chunk(2)
                w = guidance_weight(cfg, si, len(c.scale_sides), cfg_schedule)
                logits_BlV = (1 + w) * cond_BlV - w * uncond_BlV
            t = scale_temperature(temperature, temperature_last, si, len(c.scale_sides))
            if choose is not None:
                idx_Bl = choose(si, logits_BlV)
            elif len(generators) == 1:
                idx_Bl = sample_tokens(logits_BlV, t, top_k, top_p, generators[0])
            else:  # one seed per row: each row draws from its own generator
                idx_Bl = torch.cat([sample_tokens(logits_BlV[b:b + 1], t, top_k, top_p, g)
                                    for b, g in enumerate(generators)])
            indices.append(idx_Bl)
            if on_scale is not None:
                on_scale(si + 1, num_scales)
            if si + 1 == num_scales:
                break
            f_hat, x_next_BlC = quantizer.next_scale_input(si, f_hat, idx_Bl)
            if x_next_BlC is not None:
                new_BTW = self.scale_tokens(si + 1, x_next_BlC.repeat(2 if guided else 1, 1, 1), text_BW)
        return indices

    # --- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype = torch.float16) -> None:
        save_weights(self, self.config.to_dict(), directory, "generator", dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "NextScaleGPT":
        return load_weights(directory, "generator", lambda d: cls(GeneratorConfig.from_dict(d)))


@torch.no_grad()
def image_retrieval_losses(generator: NextScaleGPT, tokens_NL: torch.Tensor, x_NLC: torch.Tensor,
                           image_NMC: torch.Tensor, rank: int = 0, world: int = 1,
                           scales: int | None = None, chunk: int = 32) -> torch.Tensor:
    """[N, N] float64: entry (i, j) is the mean loss of shape i's tokens of the first `scales` scales
    (default: those of the first quarter of the sequence, the coarse shape) given image j alone, text null
    (teacher forcing with x_NLC from quantizer.teacher_forcing_input). Columns j = rank, rank + world, ...
    are filled, the rest left 0, so that processes can split the images and sum the matrices. Call it on
    a generator in eval mode (training mode would drop conditions). Shapes go through in chunks of
    `chunk`, which bounds the logits held at once."""
    tokens_per_scale, n = generator.config.tokens_per_scale, len(tokens_NL)
    if scales is None:
        scales = max([1] + [s for s in range(1, len(tokens_per_scale) + 1)
                            if sum(tokens_per_scale[:s]) <= sum(tokens_per_scale) / 4])
    prefix = sum(tokens_per_scale[:scales])
    loss_NN = torch.zeros(n, n, dtype=torch.float64, device=tokens_NL.device)
    for j in range(rank, n, world):
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            logits = generator(image_NMC[j:j + 1].expand(b - a, -1, -1), None, x_NLC[a:b], scales=scales).float()
            loss_NN[a:b, j] = F.cross_entropy(logits.flatten(0, 1), tokens_NL[a:b, :prefix].flatten(),
                                              reduction="none").view(b - a, prefix).mean(1).double()
    return loss_NN


@torch.no_grad()
def condition_pmi(generator: NextScaleGPT, quantizer: MultiScaleQuantizer, indices: list[torch.Tensor],
                  image_tokens: torch.Tensor | None, text: torch.Tensor | None,
                  scales: int | None = None) -> torch.Tensor:
    """[B]: for each row of `indices` (idx_Bl per scale, all scales), the mean over the tokens of the first
    `scales` scales (default all) of log p(token | condition) - log p(token | null condition), teacher
    forced: how much more likely the condition (a batch-1 image and/or text, shared by the rows) makes
    those tokens than no input does. The pointwise mutual information of samples and input: the
    retrieval score (image_retrieval_losses) seen from the shapes' side. Call it in eval mode."""
    batch = indices[0].shape[0]
    x_BLC = quantizer.teacher_forcing_input(indices)
    image, text = (given if given is None else given.expand(batch, *given.shape[1:]) for given in (image_tokens, text))
    scales = len(generator.config.scale_sides) if scales is None else scales
    target_BL = torch.cat(indices[:scales], dim=1)
    log_p = []
    for condition in ((image, text), (None, None)):
        logits_BLV = generator(*condition, x_BLC, scales=scales).float()
        log_p.append(-F.cross_entropy(logits_BLV.flatten(0, 1), target_BL.flatten(), reduction="none"))
    return (log_p[0] - log_p[1]).view(batch, -1).mean(1)


def retrieval_scores(loss_NN: torch.Tensor) -> dict[str, float]:
    """From image_retrieval_losses: the share of shapes whose own image gives their tokens a strictly lower
    loss than every other image (retrieval_top1; chance 1/N) and the own image's mean rank (retrieval_rank,
    1 = best, ties counted against it): how much the generator's distribution depends on the image, free
    of sampling noise."""
    own_N = loss_NN.diagonal()
    ahead_N = (loss_NN <= own_N[:, None]).sum(1) - 1  # other images at least as good as the own one
    return {"retrieval_top1": float((ahead_N == 0).double().mean()),
            "retrieval_rank": float(ahead_N.double().mean() + 1), "retrieval_shapes": float(len(loss_NN))}
