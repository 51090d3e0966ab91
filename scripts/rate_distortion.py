r"""Rate-distortion of the .vat codec beside Draco and a voxel grid at the same bytes (run it with the
repository on the path: `PYTHONPATH=. python scripts/rate_distortion.py ...`, or after `pip install -e .`).

Each mesh (in its file's placement, as `vat encode` takes it) is encoded once without and once with the
refinement (both with the default encoder search); for each prefix of scales the file of that prefix is
written (entropy-coded where smaller, placement included), decoded into the unit cube and scored on the
protocol (F-score@0.01, Chamfer-L1 against the normalised mesh); Draco and the voxel grid get the bytes of
the unrefined prefix's file. Writes the items and the per-prefix means as JSON and, with --plot, the
bytes-vs-F-score figure.

    python scripts/rate_distortion.py --meshes /work/data/heldout-meshes/geometry --limit 12 \
        --resolution 128 --json rd.json --plot docs/rate-distortion.png
    python scripts/rate_distortion.py --from-json rd-a.json rd-b.json --json rd.json --plot rd.png  # merge runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vat.baselines import draco_at_budget, voxel_at_budget
from vat.evaluate import mesh_files
from vat.geometry.io import load_mesh, normalize_mesh
from vat.metrics import chamfer_fscore
from vat.pipeline import DEFAULT_SEARCH, MeshCodec
from vat.refine import DEFAULT_REFINE


def mesh_item(codec: MeshCodec, path: Path, prefixes: list[int], resolution: int, refine: int, seed: int) -> dict:
    original = load_mesh(path)
    unit, _ = normalize_mesh(original)
    item = {"mesh": str(path), "prefixes": {}}
    variants = {"vat": codec.encode(original, search=DEFAULT_SEARCH, seed=seed),
                "vat_refined": codec.encode(original, search=DEFAULT_SEARCH, refine=refine, seed=seed)}
    for s in prefixes:
        row = {}
        for name, encoded in variants.items():
            data = encoded.vat(s)
            assert [a.tolist() for a in codec.read(data)] == [a.tolist() for a in encoded.indices[:s]]
            scores = chamfer_fscore(unit, codec.decode_mesh(encoded.indices, scales=s, resolution=resolution), seed=seed)
            row.update({f"{name}_bytes": len(data), f"{name}_f_score": scores["f_score"],
                        f"{name}_chamfer": scores["chamfer"]})
        for name, result in (("draco", draco_at_budget(unit, row["vat_bytes"], seed=seed)),
                             ("voxel", voxel_at_budget(unit, row["vat_bytes"]))):
            row[f"{name}_bytes"] = result.bytes if result else None
            row[f"{name}_f_score"] = result.detail["f_score"] if result else 0.0
            row[f"{name}_chamfer"] = result.detail["chamfer"] if result else None
        item["prefixes"][s] = row
        print(json.dumps({"mesh": path.name, "scales": s, **{k: round(v, 4) if isinstance(v, float) else v
                                                              for k, v in row.items()}}), flush=True)
    return item


def summarize(items: list[dict], prefixes: list[int]) -> dict:
    """Per prefix: the mean of every number over the meshes (None counts as missing, a baseline's F-score as 0
    where it does not fit the bytes), how many meshes Draco fits, and how many meshes .vat beats Draco and the
    voxel grid on."""
    out = {}
    for s in prefixes:
        rows = [i["prefixes"][s] for i in items]
        mean = {k: float(np.mean(values)) if (values := [r[k] for r in rows if r[k] is not None]) else None
                for k in rows[0]}
        mean["draco_fits"] = sum(r["draco_bytes"] is not None for r in rows)  # meshes Draco fits at all
        mean["meshes"] = len(rows)
        for variant in ("vat", "vat_refined"):
            for base in ("draco", "voxel"):
                mean[f"{variant}_beats_{base}"] = sum(r[f"{variant}_f_score"] > r[f"{base}_f_score"] for r in rows)
        out[s] = mean
    return out


def plot(summary: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, label, style in (("vat_refined", ".vat (search + refinement)", "o-"), ("vat", ".vat (search)", "o--"),
                               ("draco", "Draco at the same bytes", "s-"), ("voxel", "voxel grid at the same bytes", "^-")):
        budget = "vat" if name in ("draco", "voxel") else name  # a baseline is drawn at the bytes it was given
        ax.plot([summary[s][f"{budget}_bytes"] for s in summary], [summary[s][f"{name}_f_score"] for s in summary],
                style, label=label)
    for s in summary:
        ax.annotate(str(s), (summary[s]["vat_refined_bytes"], summary[s]["vat_refined_f_score"]),
                    textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("bytes per mesh (mean; .vat points labelled by scales stored)")
    ax.set_ylabel("F-score@0.01 (mean)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def markdown(summary: dict) -> str:
    """The per-prefix means as a Markdown table."""
    lines = ["| scales | .vat bytes | F@0.01 | Chamfer | refined: bytes | F@0.01 | Chamfer | Draco: fits | F@0.01 | "
             "Chamfer | voxel bytes | F@0.01 | Chamfer |", "|" + "---|" * 13]

    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    for s, m in summary.items():
        cells = [str(s)]
        for name in ("vat", "vat_refined", "draco", "voxel"):
            size = f"{m['draco_fits']}/{m['meshes']}" if name == "draco" else number(m[f"{name}_bytes"], 0)
            cells += [size, number(m[f"{name}_f_score"], 3), number(m[f"{name}_chamfer"], 4)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints"))
    parser.add_argument("--meshes", help="folder of meshes to measure")
    parser.add_argument("--from-json", nargs="+", metavar="JSON",
                        help="instead: merge the items of earlier runs' JSON files, summarise and plot them")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--prefixes", help="numbers of scales stored, comma-separated (default 4,6,7,8,9,10; "
                        "with --from-json, those every merged item has)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--refine", type=int, default=DEFAULT_REFINE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args()
    prefixes = [int(s) for s in (args.prefixes or "4,6,7,8,9,10").split(",")]
    if args.from_json:
        runs = [json.loads(Path(f).read_text()) for f in args.from_json]
        items = [item for run in runs for item in run["items"]]
        for item in items:
            item["prefixes"] = {int(k): v for k, v in item["prefixes"].items()}
        common = sorted(set.intersection(*(set(item["prefixes"]) for item in items)))
        if args.prefixes is None:
            prefixes = common
        elif missing := sorted(set(prefixes) - set(common)):
            parser.error(f"--prefixes {args.prefixes}: not every merged item has {missing} (they share {common})")
        summary = summarize(items, prefixes)
        Path(args.json).write_text(json.dumps({"summary": summary, "items": items, "meshes": len(items),
                                               "resolution": runs[0]["resolution"], "refine": runs[0]["refine"]},
                                              indent=2) + "\n")
        print(markdown(summary))
        if args.plot:
            plot(summary, args.plot, f"{len(items)} held-out meshes, marching cubes at {runs[0]['resolution']}^3")
        return
    codec = MeshCodec.from_pretrained(args.checkpoint)
    items, start = [], time.perf_counter()
    for path in mesh_files(args.meshes, args.limit):
        items.append(mesh_item(codec, path, prefixes, args.resolution, args.refine, args.seed))
        summary = summarize(items, prefixes)
        Path(args.json).write_text(json.dumps({"summary": summary, "items": items, "meshes": len(items),
                                               "resolution": args.resolution, "refine": args.refine,
                                               "seconds": time.perf_counter() - start}, indent=2) + "\n")
    if args.plot:
        plot(summary, args.plot, f"{len(items)} held-out meshes, marching cubes at {args.resolution}^3")


if __name__ == "__main__":
    main()
