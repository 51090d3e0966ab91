"""Measurements behind `vat bench`: coarse-to-fine against dense mesh extraction on the analytic
bench shape (queries, seconds, and the Chamfer-L1 difference of the two meshes), generator
sampling with and without the kv-cache, the tokenizer as a codec (mesh -> .vat -> mesh), and
end-to-end image-to-mesh time."""

from __future__ import annotations

import time

import torch

from vat.geometry.analytic import bench_shape_sdf
from vat.geometry.extract import extract_mesh
from vat.metrics import chamfer_fscore


def bench_extraction(resolution: int = 256, coarse_resolution: int = 32) -> dict:
    """Extract the bench shape densely and coarse-to-fine at `resolution`; the ratios are dense
    over coarse-to-fine, the Chamfer difference is the protocol's Chamfer-L1 between the meshes."""
    sdf = bench_shape_sdf()

    def occupancy(points):
        return -sdf(points)

    dense_mesh, dense = extract_mesh(occupancy, resolution, method="dense")
    c2f_mesh, c2f = extract_mesh(
        occupancy, resolution, method="coarse_to_fine", coarse_resolution=coarse_resolution
    )
    return {
        "extract_query_ratio": dense.queries / c2f.queries,
        "extract_chamfer_diff": chamfer_fscore(dense_mesh, c2f_mesh)["chamfer"],
        "extract_time_ratio": dense.seconds / c2f.seconds,
        "resolution": resolution,
        "coarse_resolution": coarse_resolution,
        "dense_queries": dense.queries,
        "coarse_to_fine_queries": c2f.queries,
        "dense_seconds": dense.seconds,
        "coarse_to_fine_seconds": c2f.seconds,
        "faces": len(c2f_mesh.faces),
    }


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_sampling(generator, quantizer, image_tokens=None, text=None, repeats: int = 3, seed: int = 0,
                   cfg: float = 1.5) -> dict:
    """Seconds to sample every scale once with the kv-cache (each step feeds only the new scale)
    and without it (each step re-runs the whole prefix); best of `repeats`. Both must give the
    same tokens: the cache changes the cost, never the result."""
    def run(use_cache: bool):
        return generator.generate(quantizer, image_tokens=image_tokens, text=text, cfg=cfg, seed=seed,
                                  use_cache=use_cache)

    same = all(torch.equal(a, b) for a, b in zip(run(True), run(False)))
    cached = _best_of(lambda: run(True), repeats)
    uncached = _best_of(lambda: run(False), repeats)
    return {"sample_cached_s": cached, "sample_uncached_s": uncached, "kv_cache_speedup": uncached / cached,
            "kv_cache_same_tokens": same, "tokens": sum(s * s for s in generator.config.scale_sides)}


def bench_codec(codec, mesh, resolution: int = 256, repeats: int = 3) -> dict:
    """Seconds to encode `mesh` (normalise, sample the surface, encode, write the .vat bytes) and to
    decode those bytes back to a mesh at `resolution` (read, decode the field, extract); best of
    `repeats`."""
    encoded = codec.encode(mesh)
    decoded = codec.decode_mesh(codec.read(encoded.data), resolution=resolution)
    return {"encode_s": _best_of(lambda: codec.encode(mesh), repeats),
            "decode_s": _best_of(lambda: codec.decode_mesh(codec.read(encoded.data), resolution=resolution), repeats),
            "bytes": len(encoded.data), "resolution": resolution, "faces": len(decoded.faces)}


def bench_image_to_mesh(pipeline, image, resolution: int = 256, seed: int = 0, repeats: int = 1) -> dict:
    """End-to-end seconds from an image to a mesh (preprocess, condition, sample, decode at
    `resolution`), best of `repeats`, with the stage timings of the best run."""
    best, timings = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        generation = pipeline.generate(image=image, seed=seed, resolution=resolution)
        mesh = generation.mesh()
        total = time.perf_counter() - start
        if total < best:
            best, timings = total, dict(generation.timings)
    return {"image_to_mesh_s": best, "faces": len(mesh.faces), "resolution": resolution,
            **{f"stage_{k}_s": v for k, v in timings.items()}}


def bench_models(checkpoint) -> tuple["object", str]:
    """The pipeline to time and what its weights are: the checkpoint's when it has a generator,
    else the tiny presets with random weights (same architecture and cost as a trained tiny model;
    the timings hold, the meshes mean nothing)."""
    from pathlib import Path

    from vat.models.conditioning import PRESETS as CONDITION_PRESETS
    from vat.models.conditioning import ConditionEncoders
    from vat.models.gpt import PRESETS as GENERATOR_PRESETS
    from vat.models.gpt import NextScaleGPT
    from vat.models.tokenizer import PRESETS as TOKENIZER_PRESETS
    from vat.models.tokenizer import VAT
    from vat.pipeline import MeshCodec, Pipeline

    if Path(checkpoint).is_dir() and (Path(checkpoint) / "generator.safetensors").is_file():
        return Pipeline.from_pretrained(checkpoint), f"trained ({checkpoint})"
    torch.manual_seed(0)
    tokenizer = VAT(TOKENIZER_PRESETS["tiny"])
    generator = NextScaleGPT(GENERATOR_PRESETS["tiny"].matching(tokenizer.config))
    return (Pipeline(MeshCodec(tokenizer), generator, ConditionEncoders(CONDITION_PRESETS["tiny"])),
            "random (tiny presets; no generator in the checkpoint)")
