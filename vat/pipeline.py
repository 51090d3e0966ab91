"""Pipelines over trained models: the VAT mesh codec (mesh -> tokens -> .vat -> mesh per scale).
Image/text generation joins it once the generator lands."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from vat.codec import decode_tokens, encode_tokens
from vat.errors import VatError
from vat.geometry.extract import GRID_BOUND, OccupancyFn, evaluate_grid, extract_mesh, grid_points, postprocess
from vat.geometry.io import normalize_mesh
from vat.geometry.sampling import sample_surface
from vat.models.tokenizer import VAT

QUERY_BATCH = 65_536
# Encoder-side search (MeshCodec.encode(search=K)): the candidates are checked against the mesh's own
# inside/outside at this many uniform and near-surface points, drawn from seed + SEARCH_SEED_OFFSET (never
# the evaluation protocol's queries of the same seed).
SEARCH_QUERIES = (10_000, 10_000)
DEFAULT_SEARCH = 8  # what `vat encode`, `vat eval-recon` and the demo use (the library's default is 1: fast)
SEARCH_SEED_OFFSET = 0x5EA4C4
# Generator-side search (Pipeline.generate(search=K)): K samples (seeds seed .. seed + K - 1), drawn
# SAMPLE_BATCH at a time, each decoded on an OUTLINE_GRID^3 grid (coarse to fine from OUTLINE_COARSE^3: 3.7x
# fewer queries than the dense grid, the same kept sample on the four examples we checked); the one whose
# outline best fits the input's foreground mask from some view of vat.geometry.silhouette's grid is kept.
OUTLINE_GRID = 48
OUTLINE_COARSE = 24
SAMPLE_BATCH = 16  # samples drawn in one batch (one seed per row); also the decoder planes' batch
DEFAULT_GENERATE_SEARCH = 8  # what `vat generate`, `vat eval-gen` and the demo use (the library's default is 1)


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


# Sampling settings of a generator: these defaults, overridden by the checkpoint's sampling_config.json
# (the setting chosen for that generator on its validation split; see the model card), overridden by
# the caller's arguments.
# temperature_last: the temperature at the last scale, reached linearly from `temperature` at the first
# (vat.models.gpt.scale_temperature); None keeps `temperature` at every scale (files without the key load so).
SAMPLING_DEFAULTS = {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "temperature_last": None, "top_k": 0,
                     "top_p": 0.0}
SAMPLING_KINDS = {"cfg": float, "cfg_schedule": str, "temperature": float, "temperature_last": float, "top_k": int,
                  "top_p": float}
SAMPLING_CONFIG = "sampling_config.json"
UNGUIDED_SAMPLING = ("temperature", "temperature_last", "top_k", "top_p")  # what an unconditional sample uses


def check_sampling(settings: dict) -> dict:
    """`settings` (a subset of SAMPLING_DEFAULTS' keys, None meaning unset) checked and typed;
    raises VatError on an unknown key or a value out of range."""
    unknown = set(settings) - set(SAMPLING_DEFAULTS)
    if unknown:
        raise VatError(f"unknown sampling setting(s) {sorted(unknown)}; known: {sorted(SAMPLING_DEFAULTS)}")
    valid = {"cfg": lambda v: v >= 0, "cfg_schedule": lambda v: v in ("linear", "constant"),
             "temperature": lambda v: v > 0, "temperature_last": lambda v: v > 0, "top_k": lambda v: v >= 0,
             "top_p": lambda v: 0 <= v <= 1}
    out = {}
    for key, value in settings.items():
        if value is None:
            continue
        kind = SAMPLING_KINDS[key]
        try:
            typed = kind(value)
        except (TypeError, ValueError):
            raise VatError(f"sampling setting {key}={value!r} is not a {kind.__name__}") from None
        if (kind is float and not np.isfinite(typed)) or (kind is int and typed != value) or not valid[key](typed):
            raise VatError(f"sampling setting {key}={value!r} is out of range")
        out[key] = typed
    return out


def read_sampling(folder: str | os.PathLike) -> dict:
    """SAMPLING_DEFAULTS updated by FOLDER/sampling_config.json when there is one."""
    path = Path(folder) / SAMPLING_CONFIG
    if not path.is_file():
        return dict(SAMPLING_DEFAULTS)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VatError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(stored, dict):
        raise VatError(f"{path}: expected a JSON object of sampling settings")
    return {**SAMPLING_DEFAULTS, **check_sampling(stored)}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Encoded:
    indices: list[np.ndarray]  # per stored scale: int64 [side * side]
    data: bytes  # the .vat file

    @property
    def num_tokens(self) -> int:
        return sum(len(i) for i in self.indices)


class MeshCodec:
    """The tokenizer as a 3D codec. Meshes are normalised to the unit cube before encoding, and
    decoded meshes come back in that unit cube."""

    def __init__(self, tokenizer: VAT, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.config = tokenizer.config
        self.fingerprint = tokenizer.fingerprint()

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> "MeshCodec":
        return cls(VAT.from_pretrained(resolve_checkpoint(checkpoint)), device)

    @property
    def num_scales(self) -> int:
        return len(self.config.scale_sides)

    def tokens_at(self, scales: int) -> int:
        return sum(s * s for s in self.config.scale_sides[:scales])

    def _check_scales(self, scales: int | None, available: int) -> int:
        scales = available if scales is None else scales
        if not 1 <= scales <= available:
            raise VatError(f"scale must be between 1 and {available}, got {scales}")
        return scales

    def encode(self, mesh: trimesh.Trimesh, scales: int | None = None, seed: int = 0, search: int = 1) -> Encoded:
        """Tokens of `mesh` (any placement; it is normalised first) and its .vat bytes.
        `scales` keeps only the first scales: a smaller file of a coarser shape.
        `search` > 1: encode that many samplings of the surface (seeds seed, seed + 1, ...) and keep the
        tokens whose decoded occupancy agrees best (IoU) with the mesh's own inside/outside at points
        drawn for this check (SEARCH_QUERIES, their own seed): the encoder has the mesh, so it can try
        its candidates as a video encoder tries its modes. Same file size, slower encoding."""
        if search < 1:
            raise VatError(f"search must be at least 1, got {search}")
        scales = self._check_scales(scales, self.num_scales)
        normalized, _ = normalize_mesh(mesh)
        samples = [sample_surface(normalized, self.config.num_points, seed + k) for k in range(search)]
        to = dict(device=self.device, dtype=torch.float32)
        idx = self.tokenizer.encode(torch.as_tensor(np.stack([p for p, _ in samples]), **to),
                                    torch.as_tensor(np.stack([n for _, n in samples]), **to))[:scales]
        best = self._best_candidate(normalized, idx, scales, seed) if search > 1 else 0
        indices = [i[best].cpu().numpy() for i in idx]
        data = encode_tokens(indices, self.config.scale_sides, self.config.bits_per_token, self.fingerprint)
        return Encoded(indices, data)

    @torch.no_grad()
    def _best_candidate(self, normalized: trimesh.Trimesh, idx: list[torch.Tensor], scales: int, seed: int) -> int:
        """The candidate (row of idx) whose decoded occupancy has the highest IoU with the mesh's."""
        from vat.metrics import iou, protocol_queries

        queries = protocol_queries(normalized, *SEARCH_QUERIES, seed=seed + SEARCH_SEED_OFFSET)
        fns = self.occupancy_fns([[i[k].cpu().numpy() for i in idx] for k in range(idx[0].shape[0])], scales)
        return int(np.argmax([iou(fn(queries["points"]) > 0, queries["inside"]) for fn in fns]))

    def read(self, data: bytes) -> list[np.ndarray]:
        """Token indices from .vat bytes made by this tokenizer (CodecError otherwise)."""
        tokens = decode_tokens(data, expected_fingerprint=self.fingerprint, codebook_size=self.config.codebook_size)
        if tokens.scale_sides != self.config.scale_sides:
            raise VatError(f"the .vat file's scales {tokens.scale_sides} are not this tokenizer's {self.config.scale_sides}")
        return list(tokens.indices)

    def occupancy_fn(self, indices: list[np.ndarray], scales: int | None = None) -> OccupancyFn:
        """Occupancy logits (> 0 inside) as a function of points [N, 3], from the first `scales` scales."""
        return self.occupancy_fns([indices], scales)[0]

    @torch.no_grad()
    def occupancy_fns(self, candidates: list[list[np.ndarray]], scales: int | None = None) -> list[OccupancyFn]:
        """occupancy_fn of each token list, their decoder planes decoded SAMPLE_BATCH at a time (on 2 CPU
        cores a batch of 8 costs 1.4x one shape, not 8x)."""
        if not candidates:
            return []
        scales = self._check_scales(scales, min(len(indices) for indices in candidates))
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


@dataclass
class Generation:
    """What `Pipeline.generate` returns: the tokens of every scale, the preprocessed input, the
    timings, and meshes decoded on demand (one per number of scales, cached)."""

    indices: list[np.ndarray]  # per scale, int64 [side * side], coarse to fine
    codec: "MeshCodec"
    seed: int
    settings: dict
    timings: dict  # seconds: preprocess, condition, sample; decode_s<S> as meshes are decoded
    input_image: "object | None" = None  # PIL.Image the model saw (RGB on white), None for text only
    preprocess_method: str | None = None  # alpha | rembg | grabcut | builtin | none
    resolution: int = 256
    _meshes: dict = None
    preprocess_warning: str = ""  # the segmented foreground looks wrong (vat.preprocess.Preprocessed.warning)

    @property
    def num_scales(self) -> int:
        return len(self.indices)

    def tokens_at(self, scales: int | None = None) -> int:
        return self.codec.tokens_at(scales or self.num_scales)

    def vat(self, scales: int | None = None) -> bytes:
        """The .vat file of the first `scales` scales (all by default)."""
        scales = self.codec._check_scales(scales, self.num_scales)
        return encode_tokens(self.indices[:scales], self.codec.config.scale_sides, self.codec.config.bits_per_token,
                             self.codec.fingerprint)

    def mesh(self, scales: int | None = None, resolution: int | None = None) -> trimesh.Trimesh:
        """The mesh decoded from the first `scales` scales (cached); in the unit cube."""
        scales = self.codec._check_scales(scales, self.num_scales)
        resolution = resolution or self.resolution
        if self._meshes is None:
            self._meshes = {}
        key = (scales, resolution)
        if key not in self._meshes:
            start = time.perf_counter()
            self._meshes[key] = self.codec.decode_mesh(self.indices, scales=scales, resolution=resolution)
            self.timings[f"decode_s{scales}_r{resolution}"] = time.perf_counter() - start
        return self._meshes[key]


class Pipeline:
    """Image and/or text -> VAT tokens (next-scale generator) -> mesh (the tokenizer's decoder).

    A checkpoint folder holds the tokenizer, the generator and the condition encoders (each a
    NAME_config.json beside NAME.safetensors)."""

    def __init__(self, codec: MeshCodec, generator, encoders, device: str | torch.device | None = None,
                 sampling: dict | None = None):
        from vat.models.gpt import NextScaleGPT

        self.codec = codec
        # generate()'s defaults: SAMPLING_DEFAULTS updated by `sampling` (sampling_config.json when loaded)
        self.sampling = {**SAMPLING_DEFAULTS, **check_sampling(sampling or {})}
        self.device = codec.device if device is None else torch.device(device)
        self.generator: NextScaleGPT = generator.to(self.device).eval()
        self.encoders = encoders.to(self.device).eval()
        if (generator.config.scale_sides, generator.config.vocabulary, generator.config.latent_channels) != \
                (codec.config.scale_sides, codec.config.codebook_size, codec.config.latent_channels):
            raise VatError("the generator was not trained on this tokenizer's tokens "
                           "(scales, codebook size or channels differ): use the folder they were saved in together")

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str | torch.device | None = None) -> "Pipeline":
        from vat.models.conditioning import ConditionEncoders
        from vat.models.gpt import NextScaleGPT

        folder = resolve_checkpoint(checkpoint)
        codec = MeshCodec(VAT.from_pretrained(folder), device)
        return cls(codec, NextScaleGPT.from_pretrained(folder), ConditionEncoders.from_pretrained(folder), codec.device,
                   read_sampling(folder))

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
        """The three parts into one folder (what from_pretrained reads), by default in float16:
        how a training run's OUT/final becomes a small folder to ship."""
        self.codec.tokenizer.save_pretrained(directory, dtype)
        self.generator.save_pretrained(directory, dtype)
        self.encoders.save_pretrained(directory, dtype)
        (Path(directory) / SAMPLING_CONFIG).write_text(json.dumps(self.sampling, indent=2) + "\n")

    def sampling_with(self, **overrides) -> dict:
        """The sampling settings generate() uses: the pipeline's (self.sampling), with the
        `overrides` that are not None."""
        return {**self.sampling, **check_sampling(overrides)}

    @property
    def num_scales(self) -> int:
        return self.codec.num_scales

    @torch.no_grad()
    def generate(self, image=None, text: str | None = None, seed: int = 0, cfg: float | None = None,
                 cfg_schedule: str | None = None, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, temperature_last: float | None = None, preprocess: bool = True,
                 foreground_ratio: float = 0.85, remove_background: str = "auto", resolution: int = 256,
                 search: int = 1, progress=None) -> Generation:
        """Tokens of every scale for an image (path, bytes, PIL or array) and/or a text prompt.
        Sampling settings left None are the pipeline's (`self.sampling`: the checkpoint's
        sampling_config.json, else SAMPLING_DEFAULTS). `progress(done_scales, total_scales)` is
        called after each scale. Meshes are decoded lazily (`Generation.mesh(scales)`).

        `search` = K > 1 (needs an image) samples seeds seed .. seed + K - 1 and keeps the sample whose
        outline, from its best view, overlaps the image's foreground the most (`outline_score`): the
        samples are drawn SAMPLE_BATCH at a time (one seed per row) and each is decoded on a coarse grid.
        The result's `seed` is the kept sample's, so generate(seed=result.seed) gives it again without
        the search. `progress(done, total)` then counts the scales of each batch."""
        from vat.preprocess import load_image, preprocess_image

        sampling = self.sampling_with(cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k,
                                      top_p=top_p, temperature_last=temperature_last)

        text = (text or "").strip() or None
        if image is None and text is None:
            raise VatError("give an image, a text prompt, or both")
        if int(search) != search or search < 1:
            raise VatError(f"search must be a positive whole number of samples, got {search}")
        if search > 1 and image is None:
            raise VatError("search picks the sample that fits the image's outline: it needs an image")
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
            if search > 1 and mask is None:
                raise VatError("search needs the object's outline: leave preprocessing on or give an RGBA image")
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        image_tokens, text_vector = self.encoders.encode(images=[input_image] if input_image is not None else None,
                                                         texts=[text] if text is not None else None)
        timings["condition"] = time.perf_counter() - start

        start = time.perf_counter()
        candidates, batches = [], range(0, int(search), SAMPLE_BATCH)
        for b, first in enumerate(batches):
            seeds = list(range(seed + first, seed + min(first + SAMPLE_BATCH, int(search))))
            on_scale = None if progress is None else (lambda s, n, b=b: progress(b * n + s, len(batches) * n))
            idx = self.generator.generate(self.codec.tokenizer.quantizer, image_tokens=image_tokens, text=text_vector,
                                          seed=seeds if search > 1 else seed, on_scale=on_scale, **sampling)
            candidates += [[i[k].cpu().numpy() for i in idx] for k in range(len(seeds))]
        timings["sample"] = time.perf_counter() - start
        settings = dict(text=text, **sampling, preprocess=preprocess, foreground_ratio=foreground_ratio,
                        remove_background=remove_background, search=int(search))
        best = 0
        if search > 1:
            start = time.perf_counter()
            scores = self.outline_scores(candidates, mask)
            best = int(np.argmax(scores))
            settings["outline_score"] = float(scores[best])
            timings["search"] = time.perf_counter() - start
        return Generation(candidates[best], self.codec, seed + best, settings, timings, input_image, method,
                          resolution, preprocess_warning=warning)

    def outline_scores(self, candidates: list[list[np.ndarray]], mask_HW: np.ndarray) -> np.ndarray:
        """For each candidate's tokens, the IoU of its outline (occupancy at the points of an OUTLINE_GRID^3
        grid, each standing for a cube of one cell, seen from the best view of vat.geometry.silhouette's
        grid) with the foreground mask; -1 for a candidate with no occupied point."""
        from vat.geometry.silhouette import best_overlap, frame_mask, project_outlines, shell_cells

        target = frame_mask(mask_HW)
        axis = grid_points(OUTLINE_GRID)
        scores = np.full(len(candidates), -1.0)
        for k, fn in enumerate(self.codec.occupancy_fns(candidates)):
            volume, _ = evaluate_grid(fn, OUTLINE_GRID, 0.0, coarse_resolution=OUTLINE_COARSE, batch_size=QUERY_BATCH)
            cells = shell_cells(volume > 0)
            if len(cells):
                scores[k] = best_overlap(target, project_outlines(axis[cells], 2 * GRID_BOUND / OUTLINE_GRID))[0]
        return scores

    @torch.no_grad()
    def generate_unconditional(self, seed: int = 0, temperature: float | None = None, top_k: int | None = None,
                               top_p: float | None = None, resolution: int = 256,
                               temperature_last: float | None = None) -> Generation:
        """Tokens sampled from the null condition (what the generator makes of no input; no guidance,
        there is nothing to guide towards): the floor a conditional generation must beat. Settings
        left None are the pipeline's."""
        sampling = self.sampling_with(temperature=temperature, top_k=top_k, top_p=top_p,
                                      temperature_last=temperature_last)
        sampling = {k: sampling[k] for k in UNGUIDED_SAMPLING}
        start = time.perf_counter()
        idx = self.generator.generate(self.codec.tokenizer.quantizer, seed=seed, **sampling)
        timings = {"sample": time.perf_counter() - start}
        settings = dict(text=None, cfg=0.0, **sampling)
        return Generation([i[0].cpu().numpy() for i in idx], self.codec, seed, settings, timings,
                          resolution=resolution)
