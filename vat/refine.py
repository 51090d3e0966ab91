"""Content-adaptive encoding (MeshCodec.encode(refine=N)): the encoder has the mesh, so after its one
amortised pass it can fit the tokens to that mesh. The latent (the Gaussian's mean the encoder gives) takes
N Adam steps through the frozen decoder, the quantiser in the loop with a straight-through gradient (the
same number of tokens), on the BCE of the decoded occupancy against the mesh's own inside/outside at points
drawn for this from the encoder's seed (REFINE_SEED_OFFSET; never the evaluation protocol's queries), plus
REFINE_ANCHOR times the latent's squared distance from where it started (an entropy-coded file grows when
the tokens stray from what the prior expects). The decoder runs under bfloat16 autocast where that is fast
(vat.models.layers.fast_bf16: CUDA, and CPUs with native bf16, about 2.5x faster a step there on 2 cores
than float32); on other CPUs in float32, since their bf16 3D convolutions are reference kernels (14x slower a
step than float32 on an AVX2 EPYC: 20 steps took 170 s).

The result is kept only when its decoded occupancy agrees better (IoU) with the mesh at the encoder's check
points (the encoder search's, SEARCH_QUERIES) than the unrefined tokens do: refinement never makes a file
worse on that check. Steps stop early when the check has not improved for REFINE_PATIENCE checks.

A file can hold a prefix of the scales, so `schedule` picks what the steps fit (SCHEDULES): "full" (the
default) the decode of all scales; "coarse-first" the first half of the steps the decode of the first
COARSE_SCALES scales, the rest the full decode; "prefixes" each step the mean of the full decode's loss and
that of one random prefix (PREFIX_MIN..S-1 scales). A prefix's quantised features get the same
straight-through gradient as the full decode's. The guard is the same for every schedule (the full decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vat.models.layers import fast_bf16
from vat.ui import DEFAULT_REFINE  # noqa: F401  (what the CLI, bench and demo use; the library's default: 0)

REFINE_SEED_OFFSET = 0x2EF1AE  # the training points' seed is the encoder's seed + this
REFINE_POINTS = (8_192, 8_192)  # uniform and near-surface points the refinement fits (a pool)
REFINE_BATCH = 4_096  # points per step, drawn from the pool
REFINE_LR = 0.05
REFINE_CHECK_EVERY = 5  # steps between checks of the quantised tokens on the encoder's check points
REFINE_PATIENCE = 4  # checks without a better IoU before stopping
# Weight of the mean squared distance of the latent from the encoder's (whose values have a mean square near
# 0.4): refined latents that wander off pick tokens the prior finds unlikely, and the entropy-coded file grows.
# Measured on three held-out pieces (12-oz glass, VW beetle; the MIDI keyboard never improved), 20 steps at
# lr 0.05, F@0.01 at 128^3 and bytes: without the anchor 0.74 -> 0.91 (478 -> 682 B) and 0.58 -> 0.67
# (298 -> 626 B); with 1.0, 0.95 (566 B) and 0.69 (358 B); with 5.0, 0.87 (510 B) and 0.65 (298 B).
REFINE_ANCHOR = 1.0
SCHEDULES = ("full", "coarse-first", "prefixes")
COARSE_SCALES = 7  # the prefix "coarse-first" fits first (capped at S - 1); the shipped curve's knee
PREFIX_MIN = 5  # "prefixes" draws its prefix from PREFIX_MIN..S-1 scales (capped to 1..S-1)


@dataclass
class Refined:
    indices: list[np.ndarray]  # the kept tokens (the unrefined ones when refining did not help)
    iou_before: float  # at the encoder's check points
    iou_after: float  # of the kept tokens (>= iou_before)
    steps: int  # steps taken (early stop may end before N)
    kept: bool  # True when the refined tokens were kept


def _check_iou(codec, indices: list[np.ndarray], check: dict) -> float:
    from vat.metrics import iou

    return iou(codec.occupancy_fn(indices)(check["points"]) > 0, check["inside"])


def check_schedule(schedule: str) -> None:
    """A VatError unless `schedule` is one of SCHEDULES."""
    if schedule not in SCHEDULES:
        from vat.errors import VatError

        raise VatError(f"unknown refinement schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def _step_prefixes(schedule: str, step: int, steps: int, sides: tuple[int, ...],
                   rng: torch.Generator) -> list[int | None]:
    """The decodes step `step` of `steps` fits: None the full decode, s the first s scales."""
    last = len(sides) - 1  # the longest proper prefix
    if schedule == "full" or last < 1:
        return [None]
    if schedule == "coarse-first":
        return [min(COARSE_SCALES, last)] if step <= steps // 2 else [None]
    low = min(max(PREFIX_MIN, 1), last)
    return [None, int(torch.randint(low, last + 1, (1,), generator=rng))]


def _decoded_logits(tokenizer, z_1KC: torch.Tensor, prefixes: list[int | None], points_N3: torch.Tensor) -> torch.Tensor:
    """Occupancy logits [len(prefixes), N] at the points of the decodes of z's quantised features (a
    straight-through gradient to z): None the full decode, s the first s scales (decoded together)."""
    grid = tokenizer.latent_map(z_1KC)
    q = tokenizer.quantizer(grid, partial=prefixes != [None])
    f_hats = [q.f_hat_BChw if s is None else q.partial_f_hat[s - 1] + (grid - grid.detach()) for s in prefixes]
    features = tokenizer.decode_features(tokenizer._tokens(torch.cat(f_hats)))
    if prefixes == [None]:  # the full decode alone, as before schedules existed
        return tokenizer.query(features, points_N3[None])
    raw = tokenizer.field.query(features, points_N3[None].expand(len(prefixes), -1, -1))
    levels = torch.tensor([tokenizer.surface_level(s) for s in prefixes], dtype=raw.dtype, device=raw.device)
    return raw - levels[:, None]


def refine_tokens(codec, normalized, z_1KC: torch.Tensor, steps: int, seed: int, check: dict,
                  bf16: bool | None = None, schedule: str = "full") -> Refined:
    """Refine the latent z_1KC (the encoder's mean for the unit-cube mesh `normalized`) for up to `steps`
    Adam steps; `check` holds the encoder's check points and their inside flags. bf16: autocast the decoder
    in bfloat16 (default: where that is faster, fast_bf16; the kept tokens are always checked in float32).
    schedule: what the steps fit (SCHEDULES; the module's docstring)."""
    from vat.metrics import protocol_queries

    check_schedule(schedule)
    tokenizer = codec.tokenizer
    device = z_1KC.device
    bf16 = fast_bf16(device) if bf16 is None else bf16
    with torch.no_grad():
        start = [i[0].cpu().numpy() for i in tokenizer.quantize(z_1KC)]
    best = Refined(start, _check_iou(codec, start, check), 0.0, 0, False)
    best.iou_after = best.iou_before
    if steps <= 0:
        return best
    pool = protocol_queries(normalized, *REFINE_POINTS, seed=seed + REFINE_SEED_OFFSET)
    points = torch.as_tensor(pool["points"], dtype=torch.float32, device=device)
    labels = torch.as_tensor(pool["inside"], dtype=torch.float32, device=device)
    rng = torch.Generator(device="cpu").manual_seed(seed + REFINE_SEED_OFFSET)
    prefix_rng = torch.Generator(device="cpu").manual_seed(seed + REFINE_SEED_OFFSET + 1)  # "prefixes" only
    z = z_1KC.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=REFINE_LR)
    requires_grad = [p.requires_grad for p in tokenizer.parameters()]
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    stale, step = 0, 0
    try:
        for step in range(1, steps + 1):
            pick = torch.randint(len(points), (min(REFINE_BATCH, len(points)),), generator=rng).to(device)
            prefixes = _step_prefixes(schedule, step, steps, tokenizer.quantizer.scale_sides, prefix_rng)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = _decoded_logits(tokenizer, z, prefixes, points[pick])
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels[pick].expand_as(logits))
            if REFINE_ANCHOR:
                loss = loss + REFINE_ANCHOR * (z - z_1KC).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % REFINE_CHECK_EVERY and step != steps:
                continue
            with torch.no_grad():
                indices = [i[0].cpu().numpy() for i in tokenizer.quantize(z)]
            score = _check_iou(codec, indices, check)
            if score > best.iou_after:
                best.indices, best.iou_after, best.kept, stale = indices, score, True, 0
            elif schedule == "coarse-first" and step <= steps // 2:
                stale = 0  # the coarse phase does not fit the full decode: patience counts from the next phase
            else:
                stale += 1
                if stale >= REFINE_PATIENCE:
                    break
    finally:
        for p, flag in zip(tokenizer.parameters(), requires_grad):
            p.requires_grad_(flag)
    best.steps = step
    return best
