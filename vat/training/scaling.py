r"""The data-scaling table: runs of one stage that differ only in their training data (or in their size),
compared at the same steps by their validation numbers, against the number of shapes each trained on
and against training time (steps x the run's median seconds a step). Writes OUT.md, OUT.json and OUT.png.

    python train/data_scaling.py --runs old=runs/gen-old new=runs/gen-new --out docs/data-scaling
    python train/data_scaling.py --runs old=runs/tok-old new=runs/tok-new --out docs/data-scaling-tokenizer
    python train/data_scaling.py --runs w=runs/tok-w --earlier docs/data-scaling-tokenizer.json --out docs/more

Generator runs (train/train_generator.py) report the teacher-forced loss, the loss with another piece's
image and retrieval of each piece by its own image; tokenizer runs (train/train_tokenizer.py) the IoU
of the quantised and of the unquantised model and CS-IoU. Each run's numbers come from its TensorBoard
log (val/ tags, and time/step_seconds, whose median leaves out the windows where the machine stalled);
its shape count from its train_config.json's data folder (good shapes, less the validation split when
the run held it out), its size from the same file. `--earlier OUT.json` adds the runs of an earlier
output, whose folders need not be on this machine any more.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from vat import data
from vat.training.curves import finish_axes, read_scalars, save_figure


@dataclass(frozen=True)
class Stage:
    """What a stage's runs are compared by: the table's columns (TensorBoard tag, title, format), the tag
    logged at every validation (its steps are the rows), and the plot's panels: two against steps, the
    first also against hours, and `by_shapes` against the number of training shapes."""
    columns: tuple[tuple[str, str, str], ...]
    primary: str
    panels: tuple[tuple[str, str], ...]
    by_shapes: tuple[tuple[str, str], ...]


STAGES = {
    "generator": Stage(
        columns=(("val/loss", "loss (nats/token)", "{:.3f}"),
                 ("val/loss_mismatched", "loss, another piece's image", "{:.3f}"),
                 ("val/acc", "token accuracy", "{:.3f}"),
                 ("val/retrieval_top1", "retrieval top-1", "{:.3f}"),
                 ("val/retrieval_rank", "retrieval mean rank", "{:.1f}")),
        primary="val/loss",
        panels=(("val/loss", "validation loss (nats/token)"), ("val/retrieval_top1", "validation retrieval top-1")),
        by_shapes=(("val/loss", "loss"), ("val/loss_mismatched", "loss, another piece's image"))),
    "tokenizer": Stage(
        columns=(("val/iou", "IoU (tokens)", "{:.4f}"),
                 ("val/cs_iou", "CS-IoU", "{:.4f}"),
                 ("val/iou_unquantized", "IoU (unquantised)", "{:.4f}")),
        primary="val/iou_unquantized",
        panels=(("val/iou", "validation IoU (tokens)"), ("val/iou_unquantized", "validation IoU (unquantised)")),
        by_shapes=(("val/iou", "IoU (tokens)"), ("val/iou_unquantized", "IoU (unquantised)"))),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER",
                   help="train/train_generator.py or train/train_tokenizer.py output folders (one stage), "
                        "one per data set or model size")
    p.add_argument("--earlier", type=Path, action="append", default=[], metavar="OUT.json",
                   help="also the runs of an earlier output of this script (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="writes OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)
    for path in args.earlier:
        if not path.is_file():
            p.error(f"--earlier {path}: no such file")
    runs = []
    for text in args.runs:
        name, sep, folder = text.partition("=")
        if not sep or not name or not (Path(folder) / "train_config.json").is_file():
            p.error(f"--runs takes NAME=FOLDER with a train_config.json of a training script, got {text!r}")
        runs.append((name, Path(folder)))
    args.runs = runs
    return args


def run_config(run: Path) -> dict:
    """The run's train_config.json ({"train": ..., "generator": ...} or, of a tokenizer run, {"train": ...,
    "model": ...}); a clear error if it is not one."""
    try:
        config = json.loads((run / "train_config.json").read_text())
        config["train"]["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{run}/train_config.json is not a config of train/train_generator.py or "
                         f"train/train_tokenizer.py: {exc}") from exc
    return config


def stage_of(config: dict) -> str:
    """"tokenizer" for a train_tokenizer.py run (its config holds the tokenizer's "model"), else "generator"."""
    return "tokenizer" if "model" in config else "generator"


def training_shapes(config: dict) -> int:
    """The good shapes of the run's data folder, less those its excluded-ids files list (the paper's
    filter) and the validation split if the run left it out: what the run's data set held."""
    config = config["train"]
    held_out = config.get("hold_out_validation", False)
    return len(data.ShardDataset(config["data"], data.in_validation if held_out else None))


def model_size(config: dict) -> str:
    """width x depth of the run's generator, width W of its tokenizer (its train_config.json), or "-" when
    it does not say."""
    if stage_of(config) == "tokenizer":
        return f"width {config['model']['width']}" if "width" in (config["model"] or {}) else "-"
    generator = config.get("generator") or {}
    return f"{generator['width']} x {generator['depth']}" if {"width", "depth"} <= set(generator) else "-"


def collect(runs: list[tuple[str, Path]]) -> list[dict]:
    records = []
    for name, run in runs:
        config = run_config(run)
        kind = stage_of(config)
        stage = STAGES[kind]
        scalars = read_scalars(run) if (run / "tb").is_dir() else {}
        steps = sorted(scalars.get(stage.primary, {}))
        rows = [{"step": step, **{tag: scalars[tag][step] for tag, *_ in stage.columns if step in scalars.get(tag, {})}}
                for step in steps]
        seconds = list(scalars.get("time/step_seconds", {}).values())
        records.append({"name": name, "run": str(run), "stage": kind, "shapes": training_shapes(config),
                        "model": model_size(config), "seconds_per_step": statistics.median(seconds) if seconds else None,
                        "rows": rows})
    return records


def earlier(path: Path) -> list[dict]:
    """The runs of an earlier OUT.json of this script (a clear error if it is not one)."""
    try:
        records = json.loads(path.read_text())
        if not all(r["stage"] in STAGES and isinstance(r["rows"], list) and r["name"] and r["shapes"] >= 0
                   for r in records):
            raise ValueError("a run without stage, rows, name or shapes")
    except (ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"{path} is not an OUT.json of train/data_scaling.py ({exc})") from exc
    return records


def one_stage(records: list[dict]) -> list[dict]:
    stages = {r["stage"] for r in records}
    if len(stages) > 1:
        raise SystemExit(f"the runs mix {' and '.join(sorted(stages))}: compare one stage at a time")
    return records


def table(records: list[dict]) -> str:
    columns = STAGES[records[0]["stage"]].columns if records else ()
    lines = ["| run | training shapes | model | s/step | step | " + " | ".join(t for _, t, _ in columns) + " |",
             "|---|---|---|---|---|" + "---|" * len(columns)]
    for record in records:
        pace = f"{record['seconds_per_step']:.2f}" if record["seconds_per_step"] else "-"
        for row in record["rows"]:
            cells = [fmt.format(row[tag]) if tag in row else "-" for tag, _, fmt in columns]
            lines.append(f"| {record['name']} | {record['shapes']:,} | {record['model']} | {pace} | {row['step']:,} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(records: list[dict], out: Path, argv: list[str]) -> str:
    """OUT.md above its table: a title naming the runs, the command that wrote it, where they are described."""
    stage = records[0]["stage"] if records else "generator"
    command = " ".join(["python train/data_scaling.py", *map(shlex.quote, argv)])
    return (f"# {stage.capitalize()} runs compared: {', '.join(r['name'] for r in records)}\n\n"
            f"Validation numbers of each run at each of its validation steps, written by `{command}`; the plot is "
            f"[{out.name}.png]({out.name}.png). What the runs are and what they showed: docs/{stage}.md.\n\n")


def common_step(records: list[dict]) -> int | None:
    """The last step every run has validated at."""
    shared = set.intersection(*({row["step"] for row in r["rows"]} for r in records)) if records else set()
    return max(shared) if shared else None


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage = STAGES[records[0]["stage"]]
    by_shapes = len({r["shapes"] for r in records}) > 1  # the last panel only when the data differ
    fig, axes = plt.subplots(1, 4 if by_shapes else 3, figsize=(20 if by_shapes else 15, 4.2))
    for ax, (tag, title) in zip(axes[:2], stage.panels):
        for record in records:
            points = [(row["step"], row[tag]) for row in record["rows"] if tag in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{record['name']} ({record['shapes']:,} shapes, "
                                                         f"{record['model']})")
        finish_axes(ax, title, "training steps (8 shapes each)")
    ax = axes[2]
    tag, title = stage.panels[0]
    for record in records:
        points = [(row["step"] * record["seconds_per_step"] / 3600, row[tag]) for row in record["rows"]
                  if tag in row and record["seconds_per_step"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=record["name"])
    finish_axes(ax, f"{title} against training time", "hours (steps x median s/step)")
    step = common_step(records)
    if by_shapes and step is not None:
        ax = axes[3]
        rows = sorted(((r["shapes"], next(row for row in r["rows"] if row["step"] == step)) for r in records),
                      key=lambda pair: pair[0])
        for tag, title in stage.by_shapes:
            points = [(shapes, row[tag]) for shapes, row in rows if tag in row]
            if points:
                ax.plot(*zip(*points), marker="o", label=title)
        ax.set_xscale("log")
        finish_axes(ax, f"at step {step:,}: against training shapes", "training shapes")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    records = one_stage([record for path in args.earlier for record in earlier(path)] + collect(args.runs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = table(records)
    args.out.with_suffix(".md").write_text(header(records, args.out, argv) + text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")
    plot(records, args.out.with_suffix(".png"))
    print(text)
    return records
