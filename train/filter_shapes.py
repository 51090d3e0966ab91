r"""The paper's data filter: score every prepared shape with a trained tokenizer and leave out of
training the shapes it reconstructs at an IoU near 0 (usually a broken inside/outside, not a hard shape).

    python train/filter_shapes.py --data data/train --tokenizer checkpoints --min-iou 0.05

For each prepared folder (a folder holding shards of train/prepare_data.py) it writes
`tokenizer-iou.jsonl` (id and IoU per shape, the tokens of all scales decoded at the shape's stored
queries, inside = label > 0.5) and `excluded-ids.txt` (the ids under --min-iou), which
`vat.data.ShardDataset` and train/prepare_generator_data.py honour. A re-run scores only the shapes
not scored yet (by id) and rewrites the exclusions from all scores with the given threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vat import data, metrics
from vat.errors import VatError
from vat.models.tokenizer import VAT

log = logging.getLogger("filter_shapes")
SCORES = "tokenizer-iou.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="prepared folder(s) of train/prepare_data.py")
    p.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer folder (e.g. checkpoints)")
    p.add_argument("--min-iou", type=float, default=0.05, help="shapes scored below are excluded")
    p.add_argument("--queries", type=int, default=8192,
                   help="stored queries scored per shape (a fixed random subset of the uniform and near ones)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="the draw of each shape's surface points")
    return p.parse_args(argv)


def prepared_folders(root: Path) -> list[Path]:
    """The folders under `root` (itself included) that hold chunks directly."""
    return sorted({path.parent for path in data.list_chunks(root)})


@torch.no_grad()
def score_shapes(model: VAT, shapes: list[dict], seed: int = 0, queries: int = 0) -> list[float]:
    """IoU of each shape's reconstruction from all its tokens at its stored queries (label > 0.5 inside;
    `queries` > 0: a random subset of that many)."""
    n = model.config.num_points
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(s["surface_points"]), n, replace=False) for s in shapes]
    stored = len(shapes[0]["query_points"])
    chosen = np.sort(rng.choice(stored, queries, replace=False)) if 0 < queries < stored else np.arange(stored)
    points = torch.from_numpy(np.stack([s["surface_points"][i] for s, i in zip(shapes, picks)]).astype(np.float32))
    normals = torch.from_numpy(np.stack([s["surface_normals"][i] for s, i in zip(shapes, picks)]).astype(np.float32))
    planes = model.decode_indices(model.encode(points, normals))
    points_BQ3 = torch.from_numpy(np.stack([s["query_points"][chosen] for s in shapes]).astype(np.float32))
    logits = model.query(planes, points_BQ3).float().numpy()
    return [metrics.iou(logits[b] > 0, shapes[b]["query_occupancy"][chosen].astype(np.float32) > 0.5)
            for b in range(len(shapes))]


def filter_folder(model: VAT, folder: Path, min_iou: float, batch_size: int, seed: int, queries: int) -> dict:
    """Score the folder's unscored shapes, then rewrite its exclusions; returns its counts."""
    scores_path = folder / SCORES
    scores = {}
    if scores_path.is_file():
        scores = {r["id"]: r["iou"] for r in map(json.loads, scores_path.read_text().splitlines()) if r}
    todo = [(path, row, r) for path in sorted(folder.glob("*.npz")) if path.with_suffix(".jsonl").is_file()
            for row, r in enumerate(r for r in data.chunk_records(path) if r["ok"]) if r["id"] not in scores]
    with open(scores_path, "a", encoding="utf-8") as out, \
            tqdm(total=len(todo), unit="shape", desc=folder.name, mininterval=2) as bar:
        for path in sorted({p for p, _, _ in todo}):
            arrays, _ = data.read_chunk(path)
            rows = [(row, r) for p, row, r in todo if p == path]
            for k in range(0, len(rows), batch_size):
                batch = rows[k : k + batch_size]
                shapes = [{key: value[row] for key, value in arrays.items()} for row, _ in batch]
                for (_, record), iou in zip(batch, score_shapes(model, shapes, seed, queries)):
                    scores[record["id"]] = round(float(iou), 4)
                    out.write(json.dumps({"id": record["id"], "iou": scores[record["id"]]}) + "\n")
                out.flush()
                bar.update(len(batch))
    excluded = sorted(i for i, iou in scores.items() if iou < min_iou)
    text = "".join(f"{i}\n" for i in excluded)
    data.write_atomic(folder / data.EXCLUDED_IDS, lambda f: f.write(text.encode()))
    values = np.array(list(scores.values())) if scores else np.zeros(0)
    return {"folder": str(folder), "shapes": len(scores), "excluded": len(excluded),
            "mean_iou": round(float(values.mean()), 4) if len(values) else None}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model = VAT.from_pretrained(args.tokenizer).float().eval()
    except (OSError, VatError) as exc:
        raise SystemExit(f"filter_shapes: {exc}") from exc
    folders = prepared_folders(args.data)
    if not folders:
        raise SystemExit(f"{args.data} holds no shards of train/prepare_data.py")
    summary = [filter_folder(model, folder, args.min_iou, args.batch_size, args.seed, args.queries) for folder in folders]
    for row in summary:
        log.info("%s: %d shapes, %d excluded (IoU < %g), mean IoU %s", row["folder"], row["shapes"],
                 row["excluded"], args.min_iou, row["mean_iou"])
    return summary


if __name__ == "__main__":
    main()
