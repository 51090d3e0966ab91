r"""Per-scale refinement schedules (vat.refine.SCHEDULES) compared on a few meshes (run it with the repository
on the path: `PYTHONPATH=. python scripts/refine_schedules.py ...`, or after `pip install -e .`).

Each mesh (every --every-th file of --meshes, sorted by path, at most --limit) is encoded with the encoder
search and no refinement ("none"), then once with --refine steps under each schedule; for each prefix of
scales the file of that prefix is written (entropy-coded where smaller, placement included), decoded into
the unit cube at --resolution and scored (F-score@0.01, Chamfer-L1 against the normalised mesh). Prints one
JSON line per mesh and schedule, then the means as a Markdown table; writes both to --json.

    python scripts/refine_schedules.py --meshes /work/data/val-meshes/geometry --every 14 --limit 4 \
        --resolution 128 --prefixes 7,10 --json schedules.json
    # split over processes with --start/--limit, then merge: --from-json a.json b.json --json all.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vat.evaluate import mesh_files
from vat.geometry.io import load_mesh, normalize_mesh
from vat.metrics import chamfer_fscore
from vat.pipeline import DEFAULT_SEARCH, MeshCodec
from vat.refine import DEFAULT_REFINE, SCHEDULES


def mesh_rows(codec: MeshCodec, path: Path, args: argparse.Namespace) -> list[dict]:
    """One row per variant ("none" and each schedule): bytes, F-score and Chamfer of each prefix, and the
    refinement's account. Token lists seen before (a refinement not kept) reuse their scores."""
    original = load_mesh(path)
    unit, _ = normalize_mesh(original)
    rows, scored = [], {}
    for variant in ("none", *args.schedules):
        refine = 0 if variant == "none" else args.refine
        encoded = codec.encode(original, search=args.search, refine=refine, seed=args.seed,
                               refine_schedule="full" if variant == "none" else variant)
        row = {"mesh": path.name, "variant": variant}
        if encoded.refined is not None:
            r = encoded.refined
            row.update(kept=r.kept, steps=r.steps, iou_before=r.iou_before, iou_after=r.iou_after)
        for s in args.prefixes:
            key = (s, b"".join(np.asarray(i, np.int64).tobytes() for i in encoded.indices[:s]))
            if key not in scored:
                mesh = codec.decode_mesh(encoded.indices, scales=s, resolution=args.resolution)
                scored[key] = chamfer_fscore(unit, mesh, seed=args.seed)
            row.update({f"bytes_{s}": len(encoded.vat(s)), f"f_score_{s}": scored[key]["f_score"],
                        f"chamfer_{s}": scored[key]["chamfer"]})
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], prefixes: list[int]) -> str:
    """Means over the meshes, one line per variant: bytes and F@0.01 of each prefix, refinements kept."""
    head = "| variant | " + " | ".join(f"{s} scales: F@0.01 | bytes" for s in prefixes) + " | kept |"
    lines = [head, "|" + "---|" * (2 * len(prefixes) + 2)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = [variant]
        for s in prefixes:
            cells += [f"{np.mean([r[f'f_score_{s}'] for r in mine]):.3f}", f"{np.mean([r[f'bytes_{s}'] for r in mine]):.0f}"]
        cells.append("-" if variant == "none" else f"{sum(r['kept'] for r in mine)}/{len(mine)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints"))
    parser.add_argument("--meshes", help="folder of meshes (searched recursively, sorted by path)")
    parser.add_argument("--from-json", nargs="+", metavar="JSON", help="instead: merge the rows of earlier runs")
    parser.add_argument("--every", type=int, default=1, help="take every N-th file (default: all)")
    parser.add_argument("--start", type=int, default=0, help="skip this many of the selected meshes (after --every)")
    parser.add_argument("--limit", type=int, help="at most this many meshes (after --every and --start)")
    parser.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated, of: " + ", ".join(SCHEDULES))
    parser.add_argument("--prefixes", default="7,10", help="numbers of scales stored, comma-separated")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--search", type=int, default=DEFAULT_SEARCH)
    parser.add_argument("--refine", type=int, default=DEFAULT_REFINE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    args.prefixes = [int(s) for s in args.prefixes.split(",")]
    args.schedules = args.schedules.split(",")
    if unknown := [s for s in args.schedules if s not in SCHEDULES]:
        parser.error(f"unknown schedule(s) {', '.join(unknown)}; choose from {', '.join(SCHEDULES)}")
    if args.every < 1 or args.start < 0:
        parser.error("--every must be at least 1 and --start at least 0")
    if args.from_json:
        rows = [row for f in args.from_json for row in json.loads(Path(f).read_text())["rows"]]
        Path(args.json).write_text(json.dumps({"rows": rows, "from": args.from_json}, indent=1) + "\n")
        print(markdown(rows, args.prefixes))
        return
    if not args.meshes:
        parser.error("give --meshes (or --from-json)")
    codec = MeshCodec.from_pretrained(args.checkpoint)
    rows = []
    for path in mesh_files(args.meshes)[::args.every][args.start:][:args.limit]:
        rows += mesh_rows(codec, path, args)
        Path(args.json).write_text(json.dumps({"rows": rows, "args": {k: v for k, v in vars(args).items()}},
                                              indent=1) + "\n")
    print(markdown(rows, args.prefixes))


if __name__ == "__main__":
    main()
