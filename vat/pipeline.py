"""Pipelines over trained models: MeshCodec, the VAT mesh codec (mesh -> tokens -> .vat -> mesh per scale),
and Pipeline, image/text -> tokens -> mesh with the outline search."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from vat.codec import Placement, TokenFile, decode_tokens, encode_tokens
from vat.errors import VatError
from vat.geometry.extract import OccupancyFn, evaluate_grid, extract_mesh, postprocess
from vat.geometry.io import normalize_mesh
from vat.geometry.sampling import sample_surface
from vat.models.checkpoint import part_files  # noqa: F401  (vat.pipeline.part_files before issue 30)
from vat.models.tokenizer import VAT, TokenizerConfig
from vat.preprocess_config import DEFAULT_PREPROCESS
from vat.sampling_config import (DEFAULT_SAMPLING, SAMPLING_CONFIG, SAMPLING_DEFAULTS,  # noqa: F401
                                 UNGUIDED_SAMPLING, SamplingConfig, check_sampling, read_sampling)
from vat.tokens import Generation, Sample, Tokens, check_scales
from vat.ui import (DEFAULT_DRAFT_SCALES, DEFAULT_GENERATE_SEARCH,  # noqa: F401  (the CLI's and demo's defaults)
                    DEFAULT_SEARCH)

QUERY_BATCH = 65_536
# Encoder-side search (MeshCodec.encode(search=K)): the candidates are checked against the mesh's own
# inside/outside at this many uniform and near-surface points, drawn from seed + SEARCH_SEED_OFFSET (never
# the evaluation protocol's queries of the same seed).
SEARCH_QUERIES = (10_000, 10_000)
SEARCH_SEED_OFFSET = 0x5EA4C4
# Generator-side search (Pipeline.generate(search=K)): K samples (seeds seed .. seed + K - 1), drawn
# SAMPLE_BATCH at a time, each decoded on an OUTLINE_GRID^3 grid (coarse to fine from half that, 24^3: 3.7x
# fewer queries than the dense grid, the same kept sample on the four examples we checked); the one whose
# outline best fits the input's foreground mask from some view of vat.geometry.silhouette's grid is kept.
OUTLINE_GRID = 48
# Drafts (Pipeline.generate(drafts=M)): the first scales of M samples, their outlines from a coarser grid (a
# coarse shape has no detail a finer grid would show), of which the best `search` are finished.
DRAFT_GRID = 32
SAMPLE_BATCH = 16  # samples drawn in one batch (one seed per row); also the decoder planes' batch


def resolve_draft_scales(draft_scales: int | None, num_scales: int) -> int:
    """The scales of a draft: as given, else DEFAULT_DRAFT_SCALES (at most all but the last)."""
    return min(DEFAULT_DRAFT_SCALES, num_scales - 1) if draft_scales is None else draft_scales


def check_drafts(drafts: int, draft_scales: int, search: int, num_scales: int) -> bool:
    """Whether Pipeline.generate drafts (drafts > 0); raises VatError for drafts that are not more than
    the samples it keeps, or draft scales outside 1 .. num_scales - 1."""
    if int(drafts) != drafts or drafts < 0:
        raise VatError(f"drafts must be a whole number (0: none), got {drafts}")
    if drafts == 0:
        return False
    if drafts <= search:
        raise VatError(f"drafts ({drafts}) must be more than the samples kept and finished (search {search})")
    if int(draft_scales) != draft_scales or not 1 <= draft_scales < num_scales:
        raise VatError(f"draft scales must be 1 to {num_scales - 1} (of {num_scales}), got {draft_scales}")
    return True


class _ScaleCounter:
    """progress(done, total) over the scales of every batch a generation samples."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self, done: int, total: int) -> None:  # NextScaleGPT.generate's on_scale
        self.done += 1
        self.progress(self.done, self.total)


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A local folder as it is; otherwise a Hugging Face hub id, downloaded (or taken from the
    local hub cache when offline). Raises VatError naming what was tried."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    name = str(checkpoint)
    if path.exists() or name.count("/") != 1:
        raise VatError(f"checkpoint {name!r} is not a folder (and not a hub id like 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name))
    except Exception as exc:  # offline, unknown repo, no huggingface_hub: say which
        raise VatError(f"checkpoint {name!r} is not a local folder and could not be fetched from the hub: {exc}") from exc


# The parts of a checkpoint folder, each NAME_config.json beside NAME.safetensors (vat.models.checkpoint.part_files),
# NAME as VAT, NextScaleGPT and ConditionEncoders save themselves: MeshCodec needs the first, Pipeline all three.
CODEC_PARTS = ("tokenizer",)
PIPELINE_PARTS = ("tokenizer", "generator", "conditioning")


def missing_files(folder: str | os.PathLike, parts: tuple[str, ...] = PIPELINE_PARTS) -> list[str]:
    """The files of `parts` that checkpoint `folder` lacks; nothing is loaded."""
    return [name for part in parts for name in part_files(part) if not (Path(folder) / name).is_file()]


def read_tokenizer_config(folder: str | os.PathLike) -> TokenizerConfig:
    """The tokenizer's config in checkpoint `folder`, as VAT.from_pretrained reads it, without the weights."""
    path = Path(folder) / part_files("tokenizer")[0]
    try:
        return TokenizerConfig.from_dict(json.loads(path.read_text()))
    except (OSError, TypeError, ValueError) as exc:
        raise VatError(f"{path} is not a readable tokenizer config: {exc}") from exc


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


Encoded = Tokens  # what MeshCodec.encode returned before Tokens (the name stays for code that uses it)


class MeshCodec:
    """The tokenizer as a 3D codec. Meshes are normalised to the unit cube before encoding; the file
    keeps where the mesh was (its Placement), and decode() puts the decoded mesh back there."""

    def __init__(self, tokenizer: VAT, device: str | torch.device | None = None, generator=None):
        self.device = torch.device(device) if device is not None else default_device()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.config = tokenizer.config
        self.fingerprint = tokenizer.fingerprint()
        self.prior = None  # what entropy-codes the tokens (vat.entropy.GeneratorPrior); None: raw tokens only
        if generator is not None:
            self.use_prior(generator)

    def use_prior(self, generator) -> None:
        """Entropy-code the tokens with `generator`'s unconditional probabilities (vat.entropy)."""
        from vat.entropy import GeneratorPrior

        c = generator.config
        if (c.scale_sides, c.vocabulary, c.latent_channels) != \
                (self.config.scale_sides, self.config.codebook_size, self.config.latent_channels):
            raise VatError("the generator was not trained on this tokenizer's tokens "
                           "(scales, codebook size or channels differ): use the folder they were saved in together")
        self.prior = GeneratorPrior(generator, self.tokenizer.quantizer)

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> "MeshCodec":
        """The tokenizer of a checkpoint folder, with its generator as the entropy coder's prior when it has one."""
        from vat.models.gpt import NextScaleGPT

        folder = resolve_checkpoint(checkpoint)
        has_generator = (folder / part_files("generator")[1]).is_file()
        generator = NextScaleGPT.from_pretrained(folder) if has_generator else None
        return cls(VAT.from_pretrained(folder), device, generator)

    @property
    def num_scales(self) -> int:
        return len(self.config.scale_sides)

    def tokens_at(self, scales: int) -> int:
        return sum(s * s for s in self.config.scale_sides[:scales])

    def encode(self, mesh: trimesh.Trimesh, scales: int | None = None, seed: int = 0, search: int = 1,
               max_bytes: int | None = None, raw: bool | None = None, refine: int = 0,
               refine_schedule: str = "full", average: int = 1) -> Tokens:
        """Tokens of `mesh` (any placement; it is normalised first, and the file stores where it was) and
        its .vat bytes (`data`; entropy-coded or bit-packed: `raw` as in write()).
        `scales` keeps only the first scales: a smaller file of a coarser shape; `max_bytes` keeps the
        longest prefix of scales whose file fits in that many bytes (VatError when even scale 1 does not).
        `search` > 1: encode that many samplings of the surface (seeds seed, seed + 1, ...) and keep the
        tokens whose decoded occupancy agrees best (IoU) with the mesh's own inside/outside at points
        drawn for this check (SEARCH_QUERIES, their own seed): the encoder has the mesh, so it can try
        its candidates as a video encoder tries its modes. Same file size, slower encoding.
        `refine` > 0: then fit the kept candidate's latent to the mesh for up to that many steps
        (vat.refine), keeping the refined tokens only where they do better on the same check;
        `refine_schedule` picks what the steps fit (vat.refine.SCHEDULES; "full": the full decode).
        `average` = A > 1: each candidate's latent is the mean of the encoder's latents of A samplings of the
        surface (candidate k: seeds seed + k, seed + k + search, ...; A = 1 is seed + k alone), quantised
        once: an estimate of the shape's latent with less of one sampling's noise, at the same file size."""
        from vat.metrics import protocol_queries
        from vat.refine import check_schedule, refine_tokens

        for name, value, least in (("search", search, 1), ("refine", refine, 0), ("average", average, 1)):
            if int(value) != value or value < least:
                raise VatError(f"{name} must be a whole number of at least {least}, got {value}")
        search, refine, average = int(search), int(refine), int(average)
        check_schedule(refine_schedule)
        scales = check_scales(scales, self.num_scales)
        normalized, transform = normalize_mesh(mesh)
        placement = Placement.from_transform(transform)
        samples = [sample_surface(normalized, self.config.num_points, seed + k + j * search)
                   for k in range(search) for j in range(average)]  # candidate k's samplings, in a row
        to = dict(device=self.device, dtype=torch.float32)
        with torch.no_grad():
            z = self.tokenizer.mean_latent(torch.as_tensor(np.stack([p for p, _ in samples]), **to),
                                           torch.as_tensor(np.stack([n for _, n in samples]), **to), average)
            idx = self.tokenizer.quantize(z)
        check = None
        if search > 1 or refine > 0:
            check = protocol_queries(normalized, *SEARCH_QUERIES, seed=seed + SEARCH_SEED_OFFSET)
        best = self._best_candidate(check, idx[:scales], scales) if search > 1 else 0
        indices, refined = [i[best].cpu().numpy() for i in idx], None
        if refine > 0:
            refined = refine_tokens(self, normalized, z[best:best + 1], refine, seed, check,
                                    schedule=refine_schedule)
            indices = refined.indices
        indices = indices[:scales]
        if max_bytes is not None:
            indices, data = self.fit(indices, max_bytes, placement, raw)
        else:
            data = self.write(indices, placement, raw)
        return Tokens(indices, self, placement=placement, raw=raw, refined=refined, written=data)

    def write(self, indices: list[np.ndarray], placement: Placement | None = None,
              raw: bool | None = None) -> bytes:
        """The .vat bytes of a token list (a prefix of the scales) and the mesh's placement (None: the
        unit cube). raw=None: entropy-coded with the prior when the codec has one and that is smaller than
        the bit-packed tokens (a prior can be worse than none), else bit-packed; True: bit-packed; False:
        entropy-coded."""
        def write(prior):
            return encode_tokens(indices, self.config.scale_sides, self.config.bits_per_token, self.fingerprint,
                                 placement, prior)

        if raw is False and self.prior is None:
            raise VatError("entropy coding needs a prior: this codec has no generator (a checkpoint folder with "
                           "generator.safetensors gives it one)")
        plain = None if raw is False else write(None)
        if raw or self.prior is None:
            return plain
        coded = write(self.prior)
        return coded if plain is None or len(coded) < len(plain) else plain

    def fit(self, indices: list[np.ndarray], max_bytes: int, placement: Placement | None = None,
            raw: bool | None = None) -> tuple[list[np.ndarray], bytes]:
        """The longest prefix of scales of `indices` whose file fits in `max_bytes`, and that file."""
        for scales in range(len(indices), 0, -1):
            data = self.write(indices[:scales], placement, raw)
            if len(data) <= max_bytes:
                return indices[:scales], data
        raise VatError(f"even the first scale takes {len(data)} bytes, more than the {max_bytes} asked for")

    @torch.no_grad()
    def _best_candidate(self, queries: dict, idx: list[torch.Tensor], scales: int) -> int:
        """The candidate (row of idx) whose decoded occupancy has the highest IoU with the mesh's at the
        check `queries`."""
        from vat.metrics import iou

        fns = self.occupancy_fns([[i[k].cpu().numpy() for i in idx] for k in range(idx[0].shape[0])], scales)
        return int(np.argmax([iou(fn(queries["points"]) > 0, queries["inside"]) for fn in fns]))

    def read(self, data: bytes) -> list[np.ndarray]:
        """Token indices from .vat bytes made by this tokenizer (CodecError otherwise)."""
        return list(self.read_file(data).indices)

    def read_file(self, data: bytes) -> TokenFile:
        """The whole .vat file (tokens, placement, ...) from bytes made by this tokenizer (CodecError otherwise)."""
        tokens = decode_tokens(data, expected_fingerprint=self.fingerprint, codebook_size=self.config.codebook_size,
                               prior=self.prior)
        if tokens.scale_sides != self.config.scale_sides:
            raise VatError(f"the .vat file's scales {tokens.scale_sides} are not this tokenizer's {self.config.scale_sides}")
        return tokens

    def decode(self, data: bytes, scales: int | None = None, resolution: int = 256, placement: bool = True,
               progress: bool = False) -> trimesh.Trimesh:
        """The mesh of .vat bytes, from the first `scales` scales; back where the encoded mesh was when the
        file stores its placement and `placement` is True, else in the unit cube."""
        tokens = self.read_file(data)
        mesh = self.decode_mesh(list(tokens.indices), scales=scales, resolution=resolution, progress=progress)
        return tokens.placement.apply(mesh) if placement and tokens.placement is not None else mesh

    def occupancy_fn(self, indices: list[np.ndarray], scales: int | None = None) -> OccupancyFn:
        """Occupancy logits (> 0 inside) as a function of points [N, 3], from the first `scales` scales."""
        return self.occupancy_fns([indices], scales)[0]

    @torch.no_grad()
    def occupancy_fns(self, candidates: list[list[np.ndarray]], scales: int | None = None) -> list[OccupancyFn]:
        """occupancy_fn of each token list, their decoder planes decoded SAMPLE_BATCH at a time (on 2 CPU
        cores a batch of 8 costs 1.4x one shape, not 8x)."""
        if not candidates:
            return []
        scales = check_scales(scales, min(len(indices) for indices in candidates))
        fns = []
        for start in range(0, len(candidates), SAMPLE_BATCH):
            batch = candidates[start:start + SAMPLE_BATCH]
            idx = [torch.as_tensor(np.stack([np.asarray(indices[s]) for indices in batch]), dtype=torch.long,
                                   device=self.device) for s in range(scales)]
            planes = self.tokenizer.decode_indices(idx)
            rows = [level.shape[0] // len(batch) for level in planes]  # a triplane level has 3 rows per shape
            fns += [self._logits_fn([level[b * r:(b + 1) * r] for level, r in zip(planes, rows)], scales)
                    for b in range(len(batch))]
        return fns

    def _logits_fn(self, planes: list[torch.Tensor], scales: int) -> OccupancyFn:
        @torch.no_grad()
        def logits(points_N3: np.ndarray) -> np.ndarray:
            out = []
            for start in range(0, len(points_N3), QUERY_BATCH):
                chunk = torch.as_tensor(points_N3[start:start + QUERY_BATCH], dtype=torch.float32, device=self.device)
                out.append(self.tokenizer.query(planes, chunk[None], scales)[0].float().cpu().numpy())
            return np.concatenate(out) if out else np.zeros(0, np.float32)

        return logits

    def decode_mesh(self, indices: list[np.ndarray], scales: int | None = None, resolution: int = 256,
                    clean: bool = True, progress: bool = False) -> trimesh.Trimesh:
        """The mesh decoded from the first `scales` scales (all stored ones by default)."""
        mesh, _ = extract_mesh(self.occupancy_fn(indices, scales), resolution=resolution, level=0.0, progress=progress)
        return postprocess(mesh) if clean else mesh


# ---------------------------------------------------------------------------- image/text -> 3D


class Pipeline:
    """Image and/or text -> VAT tokens (next-scale generator) -> mesh (the tokenizer's decoder).

    A checkpoint folder holds the tokenizer, the generator and the condition encoders (each a
    NAME_config.json beside NAME.safetensors)."""

    def __init__(self, codec: MeshCodec, generator, encoders, device: str | torch.device | None = None,
                 sampling: SamplingConfig | dict | None = None):
        from vat.models.gpt import NextScaleGPT

        self.codec = codec
        if codec.prior is None:  # also checks that the generator was trained on this tokenizer's tokens
            codec.use_prior(generator)
        # generate()'s defaults: `sampling` (sampling_config.json when loaded; a dict updates the defaults)
        if not isinstance(sampling, SamplingConfig):
            sampling = DEFAULT_SAMPLING.replace(**(sampling or {}))
        self.sampling = sampling
        self.device = codec.device if device is None else torch.device(device)
        self.generator: NextScaleGPT = generator.to(self.device).eval()
        self.encoders = encoders.to(self.device).eval()

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> "Pipeline":
        from vat.models.conditioning import ConditionEncoders
        from vat.models.gpt import NextScaleGPT

        folder = resolve_checkpoint(checkpoint)
        tokenizer = VAT.from_pretrained(folder)
        generator = NextScaleGPT.from_pretrained(folder)
        codec = MeshCodec(tokenizer, device, generator)
        return cls(codec, generator, ConditionEncoders.from_pretrained(folder), codec.device,
                   SamplingConfig.read(folder))

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
        """The three parts into one folder (what from_pretrained reads), by default in float16:
        how a training run's OUT/final becomes a small folder to ship."""
        self.codec.tokenizer.save_pretrained(directory, dtype)
        self.generator.save_pretrained(directory, dtype)
        self.encoders.save_pretrained(directory, dtype)
        self.sampling.save(directory)

    def sampling_with(self, **overrides) -> SamplingConfig:
        """The sampling settings generate() uses: the pipeline's (self.sampling), with the
        `overrides` that are not None."""
        return self.sampling.replace(**overrides)

    @property
    def num_scales(self) -> int:
        return self.codec.num_scales

    @torch.no_grad()
    def generate(self, image=None, text: str | None = None, seed: int = 0, cfg: float | None = None,
                 cfg_schedule: str | None = None, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, temperature_last: float | None = None, preprocess: bool = True,
                 foreground_ratio: float = DEFAULT_PREPROCESS.foreground_ratio,
                 remove_background: str = DEFAULT_PREPROCESS.remove_background, resolution: int = 256,
                 search: int = 1, drafts: int = 0, draft_scales: int | None = None,
                 progress=None) -> Generation:
        """Tokens of every scale for an image (path, bytes, PIL or array) and/or a text prompt.
        Sampling settings left None are the pipeline's (`self.sampling`: the checkpoint's
        sampling_config.json, else DEFAULT_SAMPLING). `progress(done_scales, total_scales)` is
        called after each scale. Meshes are decoded lazily (`Generation.mesh(scales)`).

        `search` = K > 1 (needs an image) samples seeds seed .. seed + K - 1 and keeps the sample whose
        outline, from its best view, overlaps the image's foreground the most (`outline_score`): the
        samples are drawn SAMPLE_BATCH at a time (one seed per row) and each is decoded on a coarse grid.
        The result's `seed` is the kept sample's, so generate(seed=result.seed) gives it again without
        the search; its `samples` are every sample drawn (vat.tokens.Sample: seed, tokens, outline score, best
        view, coarse occupancy), and `result.choose(seed)` is another of them. `progress(done, total)` then
        counts the scales of each batch.

        `drafts` = M > `search` (needs an image too) first samples only the first `draft_scales` scales (default
        DEFAULT_DRAFT_SCALES, at most all but the last) of
        seeds seed .. seed + M - 1, scores those coarse shapes' outlines (on a DRAFT_GRID^3 grid) and
        finishes only the `search` seeds that fit best, which the outline search then ranks: many samples'
        coarse shapes, where the image is read least, for the price of few. Each kept seed is sampled from
        its first scale, so generate(seed=result.seed) still gives the result."""
        from vat.geometry.silhouette import outline_fits
        from vat.preprocess import load_image, preprocess_image

        sampling = self.sampling_with(cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k,
                                      top_p=top_p, temperature_last=temperature_last).to_dict()

        text = (text or "").strip() or None
        if image is None and text is None:
            raise VatError("give an image, a text prompt, or both")
        if int(search) != search or search < 1:
            raise VatError(f"search must be a positive whole number of samples, got {search}")
        if search > 1 and image is None:
            raise VatError("search picks the sample that fits the image's outline: it needs an image")
        draft_scales = resolve_draft_scales(draft_scales, self.num_scales)
        drafting = check_drafts(drafts, draft_scales, search, self.num_scales)
        if drafting and image is None:
            raise VatError("drafts are kept by how well their outline fits the image: they need an image")
        timings, input_image, method, mask, warning = {}, None, None, None, ""
        start = time.perf_counter()
        if image is not None:
            loaded = load_image(image)
            if preprocess:
                done = preprocess_image(loaded, foreground_ratio=foreground_ratio, remove_background=remove_background)
                input_image, method, mask, warning = done.image, done.method, done.mask, done.warning
            else:
                input_image, method = loaded.convert("RGB"), "none"
                if loaded.mode == "RGBA":
                    mask = np.asarray(loaded.getchannel("A"), dtype=np.float32) / 255.0
            if (search > 1 or drafting) and mask is None:
                raise VatError("search needs the object's outline: leave preprocessing on or give an RGBA image")
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        image_tokens, text_vector = self.encoders.encode(images=[input_image] if input_image is not None else None,
                                                         texts=[text] if text is not None else None)
        timings["condition"] = time.perf_counter() - start

        settings = dict(text=text, **sampling, preprocess=preprocess, foreground_ratio=foreground_ratio,
                        remove_background=remove_background, search=int(search))
        seeds = list(range(seed, seed + int(search)))
        batches = math.ceil(len(seeds) / SAMPLE_BATCH)  # the scales progress counts: drafts', then the finished
        total = (math.ceil(drafts / SAMPLE_BATCH) * int(draft_scales) if drafting else 0) + batches * self.num_scales
        counter = None if progress is None else _ScaleCounter(progress, total)
        if drafting:
            start = time.perf_counter()
            drafted = self._sample(image_tokens, text_vector, list(range(seed, seed + int(drafts))), sampling,
                                   counter, scales=int(draft_scales))
            timings["draft"] = time.perf_counter() - start
            start = time.perf_counter()
            scores = self.outline_scores(drafted, mask, scales=int(draft_scales), grid=DRAFT_GRID)
            seeds = sorted(seed + int(k) for k in np.argsort(-scores, kind="stable")[:int(search)])
            timings["draft_search"] = time.perf_counter() - start
            settings.update(drafts=int(drafts), draft_scales=int(draft_scales))
        start = time.perf_counter()
        candidates = self._sample(image_tokens, text_vector, seeds if search > 1 or drafting else seed, sampling,
                                  counter)
        timings["sample"] = time.perf_counter() - start
        best, samples = 0, []
        if search > 1:
            start = time.perf_counter()
            volumes = self.occupancy_volumes(candidates)
            scores, views = outline_fits(volumes, mask)
            best = int(np.argmax(scores))
            settings["outline_score"] = float(scores[best])
            samples = [Sample(s, tokens, float(score), (float(view[0]), float(view[1])), volume)
                       for s, tokens, score, view, volume in zip(seeds, candidates, scores, views, volumes)]
            timings["search"] = time.perf_counter() - start
        return Generation(candidates[best], self.codec, seed=seeds[best], settings=settings, timings=timings,
                          input_image=input_image, preprocess_method=method, resolution=resolution,
                          preprocess_warning=warning, samples=samples)

    def _sample(self, image_tokens, text_vector, seed: int | list[int], sampling: dict, counter=None,
                scales: int | None = None) -> list[list[np.ndarray]]:
        """Each seed's tokens (the first `scales` scales, else all), SAMPLE_BATCH seeds to a batch (one seed
        per row); an int seed: one sample, drawn as generate(seed=...) alone draws it."""
        rows = seed if isinstance(seed, list) else [seed]
        out = []
        for first in range(0, len(rows), SAMPLE_BATCH):
            batch = rows[first:first + SAMPLE_BATCH]
            idx = self.generator.generate(self.codec.tokenizer.quantizer, image_tokens=image_tokens, text=text_vector,
                                          seed=batch if isinstance(seed, list) else seed, scales=scales,
                                          on_scale=None if counter is None else counter.step, **sampling)
            out += [[i[k].cpu().numpy() for i in idx] for k in range(len(batch))]
        return out

    def occupancy_volumes(self, candidates: list[list[np.ndarray]], scales: int | None = None,
                          grid: int = OUTLINE_GRID) -> list[np.ndarray]:
        """Each candidate's occupancy (bool [grid, grid, grid]) from its first `scales` scales (else all), at
        the points of a grid^3 grid (vat.geometry.extract.grid_points), found coarse to fine from half that."""
        return [evaluate_grid(fn, grid, 0.0, coarse_resolution=grid // 2, batch_size=QUERY_BATCH)[0] > 0
                for fn in self.codec.occupancy_fns(candidates, scales)]

    def outline_scores(self, candidates: list[list[np.ndarray]], mask_HW: np.ndarray, scales: int | None = None,
                       grid: int = OUTLINE_GRID, volumes: list[np.ndarray] | None = None) -> np.ndarray:
        """For each candidate's tokens (their first `scales` scales, else all), the IoU of its outline
        (occupancy_volumes, each occupied point standing for a cube of one cell, seen from the best view of
        vat.geometry.silhouette's grid) with the foreground mask; -1 for a candidate with no occupied point.
        `volumes`: the candidates' occupancy_volumes on this grid, if already made."""
        from vat.geometry.silhouette import outline_scores

        volumes = self.occupancy_volumes(candidates, scales, grid) if volumes is None else volumes
        return outline_scores(volumes, mask_HW)

    @torch.no_grad()
    def generate_unconditional(self, seed: int = 0, temperature: float | None = None, top_k: int | None = None,
                               top_p: float | None = None, resolution: int = 256,
                               temperature_last: float | None = None) -> Generation:
        """Tokens sampled from the null condition (what the generator makes of no input; no guidance,
        there is nothing to guide towards): the floor a conditional generation must beat. Settings
        left None are the pipeline's."""
        sampling = self.sampling_with(temperature=temperature, top_k=top_k, top_p=top_p,
                                      temperature_last=temperature_last).to_dict()
        sampling = {k: sampling[k] for k in UNGUIDED_SAMPLING}
        start = time.perf_counter()
        idx = self.generator.generate(self.codec.tokenizer.quantizer, seed=seed, **sampling)
        timings = {"sample": time.perf_counter() - start}
        settings = dict(text=None, cfg=0.0, **sampling)
        return Generation([i[0].cpu().numpy() for i in idx], self.codec, seed=seed, settings=settings,
                          timings=timings, resolution=resolution)
