r"""The data-scaling table: generator runs that differ only in their training data (or in their size),
compared at the same steps by their validation numbers (teacher-forced loss, the loss with another
piece's image, retrieval of each piece by its own image), against the number of shapes each trained on
and against training time (steps x the run's median seconds a step). Writes OUT.md, OUT.json and OUT.png.

    python train/data_scaling.py --runs old=runs/gen-old new=runs/gen-new --out docs/data-scaling

Each run's numbers come from its TensorBoard log (val/ tags of train/train_generator.py, and
time/step_seconds, whose median leaves out the windows where the machine stalled); its shape count from
its train_config.json's data folder (good shapes, less the validation split when the run held it out),
its size (width x depth) from the same file.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from vat import data
from vat.training.curves import finish_axes, read_scalars, save_figure

# (TensorBoard tag, column title, format)
COLUMNS = (("val/loss", "loss (nats/token)", "{:.3f}"),
           ("val/loss_mismatched", "loss, another piece's image", "{:.3f}"),
           ("val/acc", "token accuracy", "{:.3f}"),
           ("val/retrieval_top1", "retrieval top-1", "{:.3f}"),
           ("val/retrieval_rank", "retrieval mean rank", "{:.1f}"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER",
                   help="train/train_generator.py output folders, one per data set")
    p.add_argument("--out", required=True, type=Path, help="writes OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)
    runs = []
    for text in args.runs:
        name, sep, folder = text.partition("=")
        if not sep or not name or not (Path(folder) / "train_config.json").is_file():
            p.error(f"--runs takes NAME=FOLDER with a train_config.json of train/train_generator.py, got {text!r}")
        runs.append((name, Path(folder)))
    args.runs = runs
    return args


def run_config(run: Path) -> dict:
    """The run's train_config.json ({"train": ..., "generator": ...}); a clear error if it is not one."""
    try:
        config = json.loads((run / "train_config.json").read_text())
        config["train"]["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{run}/train_config.json is not a train/train_generator.py config: {exc}") from exc
    return config


def training_shapes(config: dict) -> int:
    """The good shapes of the run's data folder, less the validation split if the run left it out."""
    config = config["train"]
    held_out = config.get("hold_out_validation", False)
    return sum(1 for path in data.list_chunks(config["data"]) for record in data.chunk_records(path)
               if record["ok"] and not (held_out and data.in_validation(record["id"])))


def model_size(config: dict) -> str:
    """width x depth of the run's generator (its train_config.json), or "-" when it does not say."""
    generator = config.get("generator") or {}
    return f"{generator['width']} x {generator['depth']}" if {"width", "depth"} <= set(generator) else "-"


def collect(runs: list[tuple[str, Path]]) -> list[dict]:
    records = []
    for name, run in runs:
        scalars = read_scalars(run) if (run / "tb").is_dir() else {}
        steps = sorted(scalars.get("val/loss", {}))
        rows = [{"step": step, **{tag: scalars[tag][step] for tag, *_ in COLUMNS if step in scalars.get(tag, {})}}
                for step in steps]
        seconds = list(scalars.get("time/step_seconds", {}).values())
        config = run_config(run)
        records.append({"name": name, "run": str(run), "shapes": training_shapes(config), "model": model_size(config),
                        "seconds_per_step": statistics.median(seconds) if seconds else None, "rows": rows})
    return records


def table(records: list[dict]) -> str:
    lines = ["| run | training shapes | model | s/step | step | " + " | ".join(t for _, t, _ in COLUMNS) + " |",
             "|---|---|---|---|---|" + "---|" * len(COLUMNS)]
    for record in records:
        pace = f"{record['seconds_per_step']:.2f}" if record["seconds_per_step"] else "-"
        for row in record["rows"]:
            cells = [fmt.format(row[tag]) if tag in row else "-" for tag, _, fmt in COLUMNS]
            lines.append(f"| {record['name']} | {record['shapes']:,} | {record['model']} | {pace} | {row['step']:,} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def common_step(records: list[dict]) -> int | None:
    """The last step every run has validated at."""
    shared = set.intersection(*({row["step"] for row in r["rows"]} for r in records)) if records else set()
    return max(shared) if shared else None


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_shapes = len({r["shapes"] for r in records}) > 1  # the last panel only when the data differ
    fig, axes = plt.subplots(1, 4 if by_shapes else 3, figsize=(20 if by_shapes else 15, 4.2))
    for ax, (tag, title) in zip(axes[:2], (("val/loss", "validation loss (nats/token)"),
                                           ("val/retrieval_top1", "validation retrieval top-1"))):
        for record in records:
            points = [(row["step"], row[tag]) for row in record["rows"] if tag in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{record['name']} ({record['shapes']:,} shapes, "
                                                         f"{record['model']})")
        finish_axes(ax, title, "training steps (8 shapes each)")
    ax = axes[2]
    for record in records:
        points = [(row["step"] * record["seconds_per_step"] / 3600, row["val/loss"]) for row in record["rows"]
                  if "val/loss" in row and record["seconds_per_step"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=record["name"])
    finish_axes(ax, "validation loss against training time", "hours (steps x median s/step)")
    step = common_step(records)
    if by_shapes and step is not None:
        ax = axes[3]
        rows = sorted(((r["shapes"], next(row for row in r["rows"] if row["step"] == step)) for r in records),
                      key=lambda pair: pair[0])
        for tag, title in (("val/loss", "loss"), ("val/loss_mismatched", "loss, another piece's image")):
            points = [(shapes, row[tag]) for shapes, row in rows if tag in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=title)
        ax.set_xscale("log")
        finish_axes(ax, f"at step {step:,}: loss against training shapes", "training shapes")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    records = collect(args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = table(records)
    args.out.with_suffix(".md").write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    plot(records, args.out.with_suffix(".png"))
    print(text)
    return records
