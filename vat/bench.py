"""Measurements behind `vat bench`: coarse-to-fine against dense mesh extraction on the analytic
bench shape (queries, seconds, and the Chamfer-L1 difference of the two meshes), generator
sampling with and without the kv-cache, the tokenizer as a codec (mesh -> .vat -> mesh),
end-to-end image-to-mesh time, and the demo's memory over many generates and sessions (a soak)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from vat.errors import VatError
from vat.geometry.analytic import bench_shape_sdf
from vat.geometry.extract import extract_mesh
from vat.metrics import chamfer_fscore
from vat.sampling_config import DEFAULT_SAMPLING


def bench_machine() -> dict:
    """What the timings ran on: the CPU's name, torch's threads and version, and whether bfloat16 is fast
    here (vat.models.layers.fast_bf16: the codec's refinement autocasts to it only then)."""
    import platform

    from vat.models.layers import fast_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "cpu_fast_bf16": fast_bf16(torch.device("cpu"))}


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
                   cfg: float = DEFAULT_SAMPLING.cfg) -> dict:
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
    """Seconds to encode `mesh` (normalise, sample the surface, encode, write the .vat bytes, entropy coding
    included) as `vat encode` does, with the default encoder-side search and refinement (encode_s), with the
    search alone (encode_search_s) and with one sampling (encode_one_s), to decode
    those bytes back to a mesh at `resolution` (read and entropy-decode, decode the field, extract, put back in
    place: decode_s) and to read the tokens alone (read_s); best of `repeats`."""
    from vat.ui import DEFAULT_AVERAGE, DEFAULT_REFINE, DEFAULT_SEARCH

    encode = partial(codec.encode, mesh, average=DEFAULT_AVERAGE)
    encoded = encode(search=DEFAULT_SEARCH, refine=DEFAULT_REFINE)
    decoded = codec.decode(encoded.data, resolution=resolution)
    return {"encode_s": _best_of(lambda: encode(search=DEFAULT_SEARCH, refine=DEFAULT_REFINE), repeats),
            "encode_search_s": _best_of(lambda: encode(search=DEFAULT_SEARCH), repeats),
            "encode_one_s": _best_of(encode, repeats), "search": DEFAULT_SEARCH,
            "average": DEFAULT_AVERAGE, "refine": DEFAULT_REFINE,
            "refine_steps": encoded.refined.steps if encoded.refined else 0,
            "decode_s": _best_of(lambda: codec.decode(encoded.data, resolution=resolution), repeats),
            "read_s": _best_of(lambda: codec.read(encoded.data), repeats),
            "bytes": len(encoded.data), "raw_bytes": len(codec.write(encoded.indices, encoded.placement, raw=True)),
            "entropy_coded": encoded.entropy_coded, "resolution": resolution, "faces": len(decoded.faces)}


def bench_image_to_mesh(pipeline, image, resolution: int = 256, seed: int = 0, repeats: int = 1) -> dict:
    """End-to-end seconds from an image to a mesh (preprocess, condition, sample, decode at
    `resolution`) with the demo's generator-side search (image_to_mesh_s, DEFAULT_GENERATE_SEARCH
    samples) and with one sample (image_to_mesh_one_s), best of `repeats`, with the stage timings of
    the best searched run."""
    from vat.pipeline import DEFAULT_GENERATE_SEARCH

    out = {}
    for key, search in (("image_to_mesh_one_s", 1), ("image_to_mesh_s", DEFAULT_GENERATE_SEARCH)):
        best, timings = float("inf"), {}
        for _ in range(repeats):
            start = time.perf_counter()
            generation = pipeline.generate(image=image, seed=seed, resolution=resolution, search=search)
            mesh = generation.mesh()
            total = time.perf_counter() - start
            if total < best:
                best, timings = total, dict(generation.timings)
        out[key] = best
    return {**out, "search": DEFAULT_GENERATE_SEARCH, "faces": len(mesh.faces), "resolution": resolution,
            **{f"stage_{k}_s": v for k, v in timings.items()}}


def bench_models(checkpoint) -> tuple["object", str]:
    """The pipeline to time and what its weights are: the checkpoint's when it has a generator,
    else the tiny presets with random weights (same architecture and cost as a trained tiny model;
    the timings hold, the meshes mean nothing)."""
    from vat.models.checkpoint import part_files
    from vat.models.conditioning import PRESETS as CONDITION_PRESETS
    from vat.models.conditioning import ConditionEncoders
    from vat.models.gpt import PRESETS as GENERATOR_PRESETS
    from vat.models.gpt import NextScaleGPT
    from vat.models.tokenizer import PRESETS as TOKENIZER_PRESETS
    from vat.models.tokenizer import VAT
    from vat.pipeline import MeshCodec, Pipeline

    if Path(checkpoint).is_dir() and (Path(checkpoint) / part_files("generator")[1]).is_file():
        return Pipeline.from_pretrained(checkpoint), f"trained ({checkpoint})"
    torch.manual_seed(0)
    tokenizer = VAT(TOKENIZER_PRESETS["tiny"])
    generator = NextScaleGPT(GENERATOR_PRESETS["tiny"].matching(tokenizer.config))
    return (Pipeline(MeshCodec(tokenizer), generator, ConditionEncoders(CONDITION_PRESETS["tiny"])),
            "random (tiny presets; no generator in the checkpoint)")


def free_port() -> int:
    """A TCP port on localhost that nothing listens on (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (2^20 bytes), from Linux's /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise VatError(f"no resident memory figure for process {pid}")


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def bench_app_memory(app_path, checkpoint, image, generates: int = 20, sessions: int | None = None,
                     max_sessions: int | None = None, resolution: int = 128, start_timeout_s: float = 300.0) -> dict:
    """The demo's memory under use (a soak): launch `app_path` (app.py) in a process of its own, with a
    temporary folder of its own, and drive it through gradio_client as visitors' scripts would:
    `generates` meshes from `image` (a PIL image) in one session, then one in each of `sessions`
    new sessions (default: as many), at `resolution`. Reports RSS (MB) after the first mesh (models
    loaded) and after each phase, MB per generate, the growth per generate once the app holds as
    many sessions as it keeps (`max_sessions`, passed to the app; default: the app's own), and,
    after a SIGTERM, the files the app left behind."""
    from gradio_client import Client, handle_file

    sessions = generates if sessions is None else sessions
    with tempfile.TemporaryDirectory(prefix="vat-soak-") as folder:
        folder = Path(folder)
        temp = folder / "app-temp"  # the app's TMPDIR and gradio's cache: what it leaves is counted
        temp.mkdir()
        image_path = folder / "input.png"
        image.save(image_path)
        port = free_port()
        command = [sys.executable, str(app_path), "--port", str(port), "--checkpoint", str(checkpoint),
                   "--examples", str(folder / "no-examples")]
        if max_sessions is not None:
            command += ["--max-sessions", str(max_sessions)]
        env = dict(os.environ, TMPDIR=str(temp), GRADIO_TEMP_DIR=str(temp / "gradio"),
                   GRADIO_ANALYTICS_ENABLED="False")
        with open(folder / "app.log", "wb") as log:
            app = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        clients = []

        def client():
            clients.append(Client(url, verbose=False, analytics_enabled=False, download_files=False))
            return clients[-1]

        def generate(visitor, seed: int) -> float:
            visitor.predict(handle_file(str(image_path)), seed=seed, resolution=str(resolution), api_name="/generate")
            return _rss_mb(app.pid)

        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if app.poll() is not None:
                    raise VatError(f"the app exited ({app.returncode}) before serving: "
                                   + (folder / "app.log").read_text(errors="replace")[-2000:])
                try:
                    first = client()
                    break
                except Exception:  # not listening yet
                    if time.monotonic() > deadline:
                        raise VatError(f"the app did not serve {url} within {start_timeout_s:.0f} s") from None
                    time.sleep(1.0)
            started = _rss_mb(app.pid)
            loaded = generate(first, 0)
            one_session = [loaded] + [generate(first, seed) for seed in range(1, generates)]
            many = [one_session[-1]] + [generate(client(), seed) for seed in range(sessions)]
            temp_mb = _folder_mb(temp)
        finally:
            for visitor in clients:
                visitor.close()
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        left = [f for f in temp.rglob("*") if f.is_file()]
    # The first session is still open: after new session i the app holds i + 1, full from i = max_sessions - 1.
    full = many[max_sessions - 1:] if max_sessions is not None and max_sessions <= sessions else []
    return {"app_rss_started_mb": started, "app_rss_loaded_mb": loaded, "app_rss_one_session_mb": one_session[-1],
            "app_rss_sessions_mb": many[-1],
            "app_mb_per_generate_one_session": (one_session[-1] - loaded) / max(generates - 1, 1),
            "app_mb_per_generate_sessions": (many[-1] - many[0]) / max(sessions, 1),
            "app_mb_per_generate_full": (full[-1] - full[0]) / (len(full) - 1) if len(full) > 1 else None,
            "app_temp_mb": temp_mb, "app_files_left_after_sigterm": len(left), "app_exit_code": app.returncode,
            "generates": generates, "sessions": sessions, "max_sessions": max_sessions, "resolution": resolution}


def bench_image(path: str | None):
    """The bench's input image: the given file, else a render of the analytic bench shape."""
    from vat.preprocess import load_image

    if path:
        return load_image(path)
    from PIL import Image

    from vat.geometry.analytic import bench_shape_sdf
    from vat.geometry.extract import extract_mesh
    from vat.geometry.render import render_view

    mesh, _ = extract_mesh(lambda p: -bench_shape_sdf()(p), resolution=64)
    return Image.fromarray(render_view(mesh, 30.0, 15.0, size=512).rgba)
