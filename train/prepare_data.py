r"""Turn meshes into training shards: surface points + normals and labelled occupancy queries.

    python train/prepare_data.py --out /data/vat/train --meshes ~/objaverse --procedural 10000 \
        --families 1000 --augment 2 --pybullet --sweethome3d --collected data/collected --workers 16 \
        --num-shards 100 --shard-index $SLURM_ARRAY_TASK_ID
    python train/prepare_data.py --out /data/vat/heldout --sweethome3d --split heldout

Items are sorted by id and shard I of N takes items[I::N]; its chunks of --chunk-size items are
written as sIIII-of-NNNN-cCCCCCC.{jsonl,npz} (format in vat/data.py), bad meshes are listed in
errors-sIIII-of-NNNN.jsonl, counts and timings in manifest-sIIII-of-NNNN.json. A re-run skips
complete chunks.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from vat import data
from vat.data import SampleConfig
from vat.errors import VatError

log = logging.getLogger("prepare_data")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    # libigl sizes its thread pool on first use; with a process per core, more threads only contend.
    os.environ.setdefault("IGL_NUM_THREADS", str(threads))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder for shards, manifest and errors")
    sources = p.add_argument_group("sources (any combination)")
    sources.add_argument("--meshes", type=Path, action="append", default=[],
                         help="a folder searched recursively for mesh files (repeatable)")
    sources.add_argument("--procedural", type=int, default=0, metavar="N", help="N procedural shapes (seeds 0..N-1)")
    sources.add_argument("--families", type=int, default=0, metavar="N",
                         help="N procedural objects of each family of vat.geometry.families (chairs, tables, ...)")
    sources.add_argument("--augment", type=int, default=0, metavar="K",
                         help="K reshaped copies (scaled per axis, maybe mirrored) of every real training mesh "
                              "outside the validation split")
    sources.add_argument("--augment-only", action="store_true",
                         help="write only the --augment copies, not the meshes they copy (when those are prepared "
                              "in another folder already)")
    sources.add_argument("--pybullet", action="store_true", help="pybullet_data/random_urdfs (1,000 objects, zlib)")
    sources.add_argument("--sweethome3d", action="store_true", help="Debian sweethome3d-furniture catalogues")
    sources.add_argument("--sweethome3d-dir", type=Path, default=data.SWEETHOME3D_DIR)
    sources.add_argument("--collected", type=Path, action="append", default=[],
                         help="a folder train/collect_meshes.py wrote (its kept, unique meshes; repeatable)")
    sources.add_argument("--cache-dir", type=Path, default=None, help="where .sh3f catalogues are unzipped")
    sources.add_argument("--holdout-library", default=data.DEFAULT_HOLDOUT_LIBRARY,
                         help="Sweet Home 3D library kept out of the train split ('' for none)")
    sources.add_argument("--split", choices=("train", "heldout", "validation"), default="train",
                         help="write only items of this split (heldout: the held-out library's pieces; "
                              "validation: only the train split's validation shapes, vat.data.in_validation)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--surface-points", type=int, default=SampleConfig.surface_points, help="paper: 80000")
    sampling.add_argument("--uniform-queries", type=int, default=SampleConfig.uniform_queries)
    sampling.add_argument("--near-queries", type=int, default=SampleConfig.near_queries)
    sampling.add_argument("--bound", type=float, default=SampleConfig.bound,
                          help="uniform queries fill [-bound, bound]^3")
    sampling.add_argument("--seed", type=int, default=SampleConfig.seed, help="mixed with each item's id")
    sampling.add_argument("--timeout", type=float, default=SampleConfig.timeout, help="seconds per mesh (0: none)")
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=int, default=None, help="processes (default: the usable cores)")
    run.add_argument("--chunk-size", type=int, default=64, help="meshes per shard file")
    run.add_argument("--num-shards", type=int, default=1, help="split the sorted items into N interleaved parts")
    run.add_argument("--shard-index", type=int, default=0, help="which part this job writes (0..N-1)")
    run.add_argument("--limit", type=int, default=None, help="only the first N items (sorted by id)")
    args = p.parse_args(argv)
    args.workers = args.workers or _cores()
    if not (0 <= args.shard_index < args.num_shards):
        p.error("--shard-index must be in 0..--num-shards-1")
    if not (args.meshes or args.procedural or args.families or args.pybullet or args.sweethome3d or args.collected):
        p.error("name at least one source: --meshes, --procedural, --families, --pybullet, --sweethome3d or --collected")
    if args.augment < 0 or args.families < 0 or args.procedural < 0:
        p.error("--procedural, --families and --augment take a count >= 0")
    if args.augment_only and args.augment < 1:
        p.error("--augment-only needs --augment K with K >= 1")
    return args


def gather_items(args: argparse.Namespace) -> list[data.MeshItem]:
    """This job's items: every source, filtered to --split, sorted, limited, then items[I::N]."""
    items = [item for root in args.meshes for item in data.folder_items(root)]
    items += [item for root in args.collected for item in data.collected_items(root)]
    if args.pybullet:
        items += data.pybullet_items()
    if args.sweethome3d:
        items += data.sweethome3d_items(args.sweethome3d_dir, args.cache_dir, args.holdout_library or None)
    copies = data.augmented_items(items, args.augment)
    items = copies if args.augment_only else items + copies
    items += data.procedural_items(args.procedural) + data.family_items(args.families)
    if args.split == "validation":  # a folder of the validation split alone, e.g. to validate the generator on
        items = [i for i in items if i.split == "train" and data.in_validation(i.id)]
    else:
        items = [i for i in items if i.split == args.split]
    items = sorted(items, key=lambda i: i.id)
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise SystemExit("two meshes have the same id (relative path): give folders that do not overlap")
    return items[: args.limit][args.shard_index :: args.num_shards]


def _check_same_config(manifest: Path, config: SampleConfig) -> None:
    # Resuming skips complete chunks, so mixing sample counts or seeds in one folder must fail loudly.
    if not manifest.is_file():
        return
    before = json.loads(manifest.read_text())["sample_config"]
    now = asdict(config)
    if {k: v for k, v in before.items() if k != "timeout"} != {k: v for k, v in now.items() if k != "timeout"}:
        raise SystemExit(f"{manifest.parent} was prepared with {before}, not {now}: choose another --out")


def main(argv: list[str] | None = None) -> dict:
    """Prepare this job's chunks; returns the summary it also writes to the manifest."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trimesh").setLevel(logging.WARNING)  # one INFO line per triangulated file
    config = SampleConfig(args.surface_points, args.uniform_queries, args.near_queries, args.bound,
                          args.seed, args.timeout)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tag = f"s{args.shard_index:04d}-of-{args.num_shards:04d}"

    _check_same_config(out / f"manifest-{tag}.json", config)

    try:
        items = gather_items(args)
    except (OSError, VatError) as exc:  # a missing folder or catalogue: say so, no traceback
        raise SystemExit(f"prepare_data: {exc}") from exc
    chunks = [items[k : k + args.chunk_size] for k in range(0, len(items), args.chunk_size)]
    names = [f"{tag}-c{c:06d}" for c in range(len(chunks))]
    todo = [c for c, chunk in enumerate(chunks)
            if not data.chunk_complete(out / f"{names[c]}.npz", [i.id for i in chunk])]
    log.info("%s: %d items in %d chunks, %d already done; preparing the rest with %d workers",
             tag, len(items), len(chunks), len(chunks) - len(todo), args.workers)

    start = time.perf_counter()
    records = prepare_chunks(out, [(names[c], chunks[c]) for c in todo], config, args.workers,
                             out / f"errors-{tag}.jsonl")
    seconds = time.perf_counter() - start

    good = [r for r in records if r["ok"]]
    rate = len(good) / seconds if seconds > 0 else 0.0
    cores = max(1, min(args.workers, len(records)))
    cpu_per_mesh = sum(r["cpu_seconds"] for r in good) / max(len(good), 1)
    all_records = [r for name in names for r in data.chunk_records(out / f"{name}.npz")]
    summary = {
        "format_version": data.SHARD_FORMAT_VERSION,
        "split": args.split,
        "num_shards": args.num_shards,
        "shard_index": args.shard_index,
        "items": len(items),
        "chunks": names,
        "ok": sum(r["ok"] for r in all_records),
        "bad": sum(not r["ok"] for r in all_records),
        "this_run": {
            "ok": len(good), "bad": len(records) - len(good), "chunks_skipped": len(chunks) - len(todo),
            "workers": args.workers, "seconds": round(seconds, 3), "meshes_per_second": round(rate, 3),
            "meshes_per_second_per_core": round(rate / cores, 3),
            "cpu_seconds_per_mesh": round(cpu_per_mesh, 3),
        },
        "sample_config": asdict(config),
        "array_dtypes": {k: v.__name__ for k, v in data.ARRAY_DTYPES.items()},
        "sources": {"meshes": [str(m) for m in args.meshes], "procedural": args.procedural,
                    "families_per_family": args.families, "augment_copies": args.augment,
                    "pybullet": args.pybullet, "sweethome3d": args.sweethome3d,
                    "collected": [str(c) for c in args.collected],
                    "holdout_library": args.holdout_library},
        "licences": sorted({r["licence"] or "unknown" for r in all_records if r["ok"]}),
    }
    data.write_atomic(out / f"manifest-{tag}.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    log.info("%s: %d ok, %d bad this run in %.1f s: %.2f meshes/s, %.2f meshes/s/core, %.2f CPU s/mesh "
             "(totals: %d ok, %d bad)", tag, len(good), len(records) - len(good), seconds, rate, rate / cores,
             cpu_per_mesh, summary["ok"], summary["bad"])
    return summary


def prepare_chunks(out: Path, chunks: list[tuple[str, list[data.MeshItem]]], config: SampleConfig,
                   workers: int, errors_path: Path) -> list[dict]:
    """Sample every item of the named chunks (in parallel), write each chunk as it completes,
    append bad items to errors_path; returns the records of every item attempted."""
    work = [item for _, items in chunks for item in items]
    process = functools.partial(data.process_item, config=config)
    pool = None
    if workers > 1 and len(work) > 1:
        # Fresh workers now and then, so a leak in a mesh library cannot grow without bound.
        threads = max(1, _cores() // workers)
        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (threads,), maxtasksperchild=500)
        results = pool.imap(process, work, chunksize=1)  # ordered, so chunks fill one after another
    else:
        results = map(process, work)
    done = []
    try:
        with tqdm(total=len(work), unit="mesh", mininterval=2) as bar, \
                open(errors_path, "a", encoding="utf-8") as errors:
            for name, items in chunks:
                records, samples = [], []
                for _ in items:
                    record, sample = next(results)
                    records.append(record)
                    samples.append(sample)
                    if sample is None:
                        log.warning("skipped %s: %s", record["id"], record["error"])
                        errors.write(json.dumps({k: record[k] for k in ("id", "path", "error")}) + "\n")
                    bar.update()
                data.write_chunk(out, name, records, samples)
                errors.flush()
                done += records
    finally:
        if pool is not None:
            pool.terminate()
    return done


if __name__ == "__main__":
    main()
