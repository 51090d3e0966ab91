"""The paper's tokenizer ablations at one budget: every arm is trained by train/train_tokenizer.py with
the same options (only its switch differs), then scored on held-out meshes with `vat eval-recon`'s
protocol. Prints a Markdown table and writes OUT/ablation.json.

    python train/ablate_tokenizer.py --out runs/ablation --meshes data/heldout-meshes/geometry --limit 24 \\
        --arms baseline,residual-vq,pooling -- \\
        --data data/train --val-data data/val-sh3d --preset tiny --steps 1200 --phase1-steps 800 --lr 1e-3

Everything after `--` goes to train_tokenizer.py for every arm (each in OUT/ARM, so an interrupted
ablation resumes: finished arms are neither retrained nor re-scored); `--model-override`s there apply
to every arm, and the arm's own switch comes last. An arm is one of ARMS by name, or one of your own
as NAME=PRESET[+field=value...] (vat.training.arms, as in train/learning_curves.py).
"""

from __future__ import annotations

import hashlib
import json
import logging

from vat.models.checkpoint import part_files
from vat.training.arms import Arm, arms_parser, check_meshes, parse_arms, score_tokenizer, train_arm
from vat.training.run import FINAL

log = logging.getLogger("ablate_tokenizer")

# The paper's switches (section 6.3): each arm changes one TokenizerConfig field of the baseline.
ARMS = {
    "baseline": [],  # in-context compression, VVQ, triplane decoder
    "residual-vq": ["quantizer=residual-vq"],  # no Gaussian: plain multi-scale residual VQ
    "pooling": ["compression=pooling"],
    "q-former": ["compression=q-former"],
    "cross-attention": ["decoder=cross-attention"],
}
COLUMNS = (("bytes", "bytes", "{:.0f}"), ("iou", "IoU", "{:.3f}"), ("cs_iou", "CS-IoU", "{:.3f}"),
           ("f_score", "F-score", "{:.3f}"), ("chamfer", "Chamfer", "{:.4f}"), ("near_acc", "Near-Acc", "{:.3f}"))


def parse_args(argv: list[str] | None):
    p = arms_parser(__doc__, "baseline,residual-vq,pooling")
    p.add_argument("--meshes", required=True, help="held-out meshes to score (as for vat eval-recon)")
    p.add_argument("--limit", type=int, help="score only the first N meshes")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes grid (protocol: 256)")
    p.add_argument("--seed", type=int, default=0)
    return parse_arms(p, argv, named=ARMS)


def run_arm(arm: Arm, args, train_args: list[str]) -> dict:
    """Train (or resume) one arm, then score it; a score of the same weights and settings is reused."""
    out = args.out / arm.name
    summary = train_arm(arm, args.out, train_args)
    weights = out / FINAL / part_files("tokenizer")[1]
    scored = out / "eval-recon.json"
    settings = {"meshes": str(args.meshes), "limit": args.limit, "resolution": args.resolution, "seed": args.seed,
                "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    try:
        previous = json.loads(scored.read_text())
    except (OSError, ValueError):  # not scored yet, or a cut-off write: score again
        previous = {}
    if isinstance(previous, dict) and previous.get("settings") == settings:
        return previous
    result = score_tokenizer(out / FINAL, args.meshes, args.limit, args.resolution, seed=args.seed)
    record = {"arm": arm.name, "preset": arm.preset, "overrides": arm.overrides, "settings": settings,
              "step": summary["step"], "val": summary.get("val", {}), "summary": result["summary"],
              "items": result["items"]}
    scored.write_text(json.dumps(record, indent=1) + "\n")
    return record


def paired(reference: dict, record: dict, key: str = "cs_iou") -> str:
    """Per mesh, how often the first arm beats this one on `key`, over the meshes both scored."""
    ours = {item["mesh"]: item[key] for item in reference["items"] if key in item}
    pairs = [(ours[item["mesh"]], item[key]) for item in record["items"] if key in item and item["mesh"] in ours]
    return f"{sum(a > b for a, b in pairs)} of {len(pairs)}"


def table(records: list[dict]) -> str:
    first = records[0]["arm"]
    head = ("| arm | switch | steps | " + " | ".join(title for _, title, _ in COLUMNS)
            + f" | {first} higher CS-IoU | failed |")
    rows = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    for r in records:
        s = r["summary"]
        cells = [fmt.format(s[key]) if key in s else "-" for key, _, fmt in COLUMNS]
        versus = "-" if r is records[0] else paired(records[0], r)
        switch = ", ".join([*([f"preset={r['preset']}"] if r.get("preset") else []), *r["overrides"]]) or "-"
        rows.append(f"| {r['arm']} | {switch} | {r['step']} | " + " | ".join(cells)
                    + f" | {versus} | {s['failed']} of {s['meshes']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, train_args = parse_args(argv)
    check_meshes(args.meshes, args.limit)
    records = [run_arm(arm, args, train_args) for arm in args.arms]
    text = table(records)
    (args.out / "ablation.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "items"} for r in records], indent=1) + "\n")
    (args.out / "ablation.md").write_text(text + "\n")
    print(text)
    return records
