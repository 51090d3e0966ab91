r"""Learning curves: train tokenizer designs ("arms") on the same budget and compare them by held-out
numbers against steps and against seconds of training, as a Markdown table, a JSON file and a PNG
plot (OUT/curves.{md,json,png}).

    python train/learning_curves.py --out runs/curves --arms paper=tiny,grid=tiny-grid --parallel -- \
        --data data/train --val-data data/heldout-sh3d --steps 1500 --phase1-steps 1000 --val-every 250 \
        --fresh-shapes 16 --snapshot-every 250 --batch-size 8 --lr 1e-3 --workers 0
    python train/learning_curves.py --out runs/curves --arms paper=tiny,grid=tiny-grid --report-only \
        --meshes data/heldout-meshes/geometry --limit 8

An arm is NAME=PRESET with optional model overrides after it: `grid-wide=tiny-grid+plane_channels=32`.
Everything after `--` goes to train/train_tokenizer.py for every arm (each in OUT/NAME, so an
interrupted comparison resumes). `--parallel` trains the arms at the same time, the CPU threads split
between them, so their seconds are measured under the same conditions. The curves come from each
run's TensorBoard log: held-out IoU and BCE (val/), the same on queries of training shapes that
training never saw (fresh/, with --fresh-shapes), seconds of training (time/). With --meshes, the
snapshots (--snapshot-every) are also scored on held-out meshes with eval-recon's protocol (F-score).

The ladder's first rung, `--one-shape`, fits the decoder and a free latent (no encoder) to one
training shape and reports IoU on its held-back queries and the surface it extracts: a decoder that
cannot interpolate one shape smoothly will not generalise. The second rung is an arm trained on 64
shapes (`--max-shapes 64 --fresh-shapes 64`), the third the held-out numbers of any arm.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vat import data, metrics
from vat.errors import VatError
from vat.models.tokenizer import VAT
from vat.training.arms import arms_parser, check_meshes, parse_arms, score_tokenizer, train_arms
from vat.training.options import parse_override
from vat.training.run import SNAPSHOTS
from vat.training.tokenizer import TrainConfig
from vat.training.tokenizer_data import ShapeSamples

log = logging.getLogger("learning_curves")

# (TensorBoard tag, column title); the held-out IoU is the quantised one once phase 2 has started.
CURVES = (("val/iou_unquantized", "held-out IoU (unquantised)"), ("val/iou", "held-out IoU"),
          ("val/bce_unquantized", "held-out BCE (unquantised)"), ("fresh/iou_unquantized", "fresh-query IoU"),
          ("time/train_seconds", "train seconds"))


def parse_args(argv: list[str] | None):
    p = arms_parser(__doc__, "paper=tiny,grid=tiny-grid")
    p.add_argument("--parallel", action="store_true", help="train the arms at the same time, threads split")
    p.add_argument("--report-only", action="store_true", help="no training: table and plot from the runs as they are")
    p.add_argument("--meshes", help="held-out meshes: score each arm's snapshots (F-score, eval-recon's protocol)")
    p.add_argument("--limit", type=int, default=8, help="score the first N meshes (with --meshes)")
    p.add_argument("--resolution", type=int, default=128, help="marching-cubes grid for the snapshot scores")
    p.add_argument("--one-shape", metavar="SHARDS", help="the ladder's first rung on the first shape of this folder")
    p.add_argument("--one-shape-steps", type=int, default=500)
    args, train_args = parse_arms(p, argv)
    if args.meshes:
        check_meshes(args.meshes, args.limit)
    return args, train_args


# ---------------------------------------------------------------------------- reading the runs


def read_scalars(run: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from a run's TensorBoard log (the last value of a step wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, dict[int, float]] = {}
    for events in sorted((run / "tb").glob("events.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                tags.setdefault(tag, {})[event.step] = event.value
    return tags


def score_snapshots(run: Path, args) -> dict[int, dict]:
    """eval-recon's summary (F-score, Chamfer, IoU) of each snapshot on the first --limit meshes,
    cached next to the snapshot."""
    scores = {}
    for snapshot in sorted((run / SNAPSHOTS).glob("step-*")):
        step = int(snapshot.name.split("-")[1])
        cache = snapshot / f"eval-recon-{args.limit}-{args.resolution}.json"
        if cache.is_file():
            scores[step] = json.loads(cache.read_text())
            continue
        summary = score_tokenizer(snapshot, args.meshes, args.limit, args.resolution)["summary"]
        data.write_atomic(cache, lambda f: f.write(json.dumps(summary).encode()))
        scores[step] = summary
    return scores


def collect(args) -> list[dict]:
    records = []
    for arm in args.arms:
        run = args.out / arm.name
        scalars = read_scalars(run) if (run / "tb").is_dir() else {}
        scores = score_snapshots(run, args) if args.meshes else {}
        steps = sorted(set(scalars.get("time/train_seconds", {})) | set(scores))
        rows = []
        for step in steps:
            row = {"step": step, **{tag: scalars[tag][step] for tag, _ in CURVES if step in scalars.get(tag, {})}}
            if step in scores:
                row.update({f"mesh/{k}": scores[step][k] for k in ("f_score", "iou", "chamfer") if k in scores[step]})
            rows.append(row)
        records.append({"arm": arm.name, "preset": arm.preset, "overrides": arm.overrides, "rows": rows})
    return records


def table(records: list[dict]) -> str:
    columns = [*CURVES, ("mesh/f_score", "F-score (meshes)"), ("mesh/iou", "IoU (meshes)")]
    used = [(tag, title) for tag, title in columns if any(tag in row for r in records for row in r["rows"])]
    lines = ["| arm | step | " + " | ".join(title for _, title in used) + " |", "|---|---|" + "---|" * len(used)]
    for record in records:
        for row in record["rows"]:
            cells = [("{:.0f}" if tag.startswith("time/") else "{:.3f}").format(row[tag]) if tag in row else "-"
                     for tag, _ in used]
            lines.append(f"| {record['arm']} | {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val/iou_unquantized", "steps", "held-out IoU (unquantised)"),
              ("val/iou_unquantized", "seconds", "held-out IoU (unquantised)"),
              ("val/bce_unquantized", "steps", "held-out BCE (unquantised)"),
              ("fresh/iou_unquantized", "steps", "fresh-query IoU, training shapes"),
              ("val/iou", "steps", "held-out IoU (quantised)"), ("mesh/f_score", "steps", "F-score@0.01, held-out meshes")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (tag, x_axis, title) in zip(axes.flat, panels):
        for record in records:
            points = [(row["step"] if x_axis == "steps" else row.get("time/train_seconds"), row[tag])
                      for row in record["rows"] if tag in row]
            points = [p for p in points if p[0] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=record["arm"])
        finish_axes(ax, title, "training steps" if x_axis == "steps" else "seconds of training")
    save_figure(fig, path)


def finish_axes(ax, title: str, xlabel: str) -> None:
    """Title, x label, a light grid and a legend when anything was drawn."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---------------------------------------------------------------------------- the ladder's first rung


def fit_one_shape(preset: str, overrides: list[str], shards: str, steps: int, out: Path, seed: int = 0) -> dict:
    """Decoder + a free latent (no encoder, no quantiser) fitted to the first shape of `shards` on 90%
    of its queries; IoU on the other 10% and the surface extracted at 128^3 (faces, and the mean
    distance from the stored surface samples to it, a smooth fit has few faces and a small distance)."""
    from vat.geometry.extract import extract_mesh

    torch.manual_seed(seed)
    config = TrainConfig(data=shards, out=str(out), preset=preset,
                                         model_overrides=dict(parse_override(o) for o in overrides)).model_config()
    model = VAT(config)
    shapes = ShapeSamples(shards, config.num_points, 0, 0, reserve=0.1)
    item = shapes.shards[0]
    fresh = shapes.fresh_queries()
    seen = np.setdiff1d(np.arange(len(item["query_points"])), fresh)
    queries, labels = (torch.from_numpy(item[k].astype(np.float32)) for k in ("query_points", "query_occupancy"))
    latent = torch.nn.Parameter(torch.randn(1, config.num_latents, config.latent_channels) * 0.1)
    params = [latent, *model.from_latent.parameters(), *model.field.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        pick = torch.from_numpy(rng.choice(seen, min(4096, len(seen)), replace=False))
        logits = model.query(model.decode_features(latent), queries[pick][None])[0]
        loss = F.binary_cross_entropy_with_logits(logits, labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        planes = model.decode_features(latent)
        logits = model.query(planes, queries[fresh][None])[0]
        result = {"preset": preset, "overrides": overrides, "steps": steps, "train_bce": float(loss),
                  "fresh_iou": metrics.iou(logits.numpy() > 0, labels[fresh].numpy() > 0.5)}

        def field(points_N3: np.ndarray) -> np.ndarray:
            return model.query(planes, torch.from_numpy(points_N3.astype(np.float32))[None])[0].numpy()

        try:
            mesh, _ = extract_mesh(field, resolution=128)
        except VatError as exc:
            return {**result, "surface": str(exc)}
    out.mkdir(parents=True, exist_ok=True)
    mesh.export(out / "one-shape.ply")
    from scipy.spatial import cKDTree

    distance = cKDTree(mesh.sample(50_000)).query(item["surface_points"])[0]
    return {**result, "faces": int(len(mesh.faces)), "surface_to_mesh": float(distance.mean()),
            "mesh": str(out / "one-shape.ply")}


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, train_args = parse_args(argv)
    if args.one_shape:
        results = [fit_one_shape(arm.preset, arm.overrides, args.one_shape, args.one_shape_steps, args.out / arm.name)
                   for arm in args.arms]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "one-shape.json").write_text(json.dumps(results, indent=1) + "\n")
        for arm, result in zip(args.arms, results):
            print(arm.name, json.dumps(result))
        return results
    if not args.report_only:
        train_arms(args.arms, args.out, train_args, args.parallel)
    records = collect(args)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(records)
    (args.out / "curves.md").write_text(text + "\n")
    (args.out / "curves.json").write_text(json.dumps(records, indent=1) + "\n")
    plot(records, args.out / "curves.png")
    print(text)
    return records


if __name__ == "__main__":
    main()
