r"""How the generator-side search should pick among its samples: every sample of each piece scored, so that
any rule for keeping one can be compared with the others and with the best pick (run it with the repository
on the path: `PYTHONPATH=. python scripts/selection_study.py ...`, or after `pip install -e .`).

For each mesh of --meshes (sorted by path, at most --limit) the view eval-gen renders (view 0, 512 px) is the
input; seeds SEED .. SEED+K-1 are sampled one by one with the checkpoint's sampling settings (the samples
`vat generate --search K` draws), and each sample gets
- `outline`: its outline's fit to the image (Pipeline.outline_scores, what the search keeps by);
- `consensus`: how near it is to the other samples (vat.pipeline.consensus_scores on the same volumes);
- `pmi` and `pmi_coarse`: how much more likely the image makes its tokens than no input does
  (Pipeline.pmi_scores over all scales, and over the first --coarse-scales);
- `f_score`, `f_score_005`, `chamfer`: the mesh decoded at --resolution, ICP-aligned and scored against the
  piece as eval-gen scores it (vat.metrics.compare_meshes).
Writes one JSON line per mesh to --jsonl (a rerun skips the meshes already there), then prints, for each rule
(seed SEED alone; the best of each score; the sum of the outline's rank and another score's; the best
F-score: the ceiling), the mean F-score@0.01 and @0.05 of the kept samples.

    python scripts/selection_study.py --checkpoint checkpoints --meshes data/val-meshes/textured --samples 8 \
        --resolution 128 --jsonl selection.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vat.evaluate import EVAL_GEN_VIEW_SEED, mesh_files
from vat.geometry.io import load_mesh
from vat.geometry.render import load_for_render, render_views
from vat.metrics import compare_meshes
from vat.pipeline import Pipeline, consensus_scores
from vat.preprocess import preprocess_image

SCORES = ("outline", "consensus", "pmi", "pmi_coarse")


def mesh_row(pipeline: Pipeline, path: Path, args: argparse.Namespace) -> dict:
    view = render_views(load_for_render(path), views=1, size=512, seed=EVAL_GEN_VIEW_SEED)[0]
    done = preprocess_image(view.rgba)
    image_tokens, _ = pipeline.encoders.encode(images=[done.image])
    samples = [pipeline.generate(image=view.rgba, seed=args.seed + k, resolution=args.resolution)
               for k in range(args.samples)]
    candidates = [g.indices for g in samples]
    volumes = pipeline.occupancy_volumes(candidates)
    row = {"mesh": str(path), "seeds": [g.seed for g in samples],
           "outline": pipeline.outline_scores(candidates, done.mask, volumes=volumes).tolist(),
           "consensus": consensus_scores(volumes).tolist(),
           "pmi": pipeline.pmi_scores(candidates, image_tokens).tolist(),
           "pmi_coarse": pipeline.pmi_scores(candidates, image_tokens, scales=args.coarse_scales).tolist()}
    mesh = load_mesh(path)
    scores = [compare_meshes(mesh, g.mesh(), icp=True, normalize="each", seed=args.seed) if len(g.mesh().faces)
              else {"f_score": 0.0, "f_score_005": 0.0, "chamfer": float("nan")} for g in samples]
    for key in ("f_score", "f_score_005", "chamfer"):
        row[key] = [float(s[key]) for s in scores]
    return row


def ranks(values: list[float]) -> np.ndarray:
    """0 for the best (highest) value."""
    return np.argsort(np.argsort(-np.asarray(values), kind="stable"), kind="stable")


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    rules = {"seed alone": lambda r: 0, **{f"best {k}": (lambda r, k=k: int(np.argmax(r[k]))) for k in SCORES},
             **{f"outline + {k} ranks": (lambda r, k=k: int(np.argmin(ranks(r["outline"]) + ranks(r[k]) +
                                                                   1e-3 * ranks(r["outline"]))))
                for k in ("consensus", "pmi", "pmi_coarse")},
             "best F-score (ceiling)": lambda r: int(np.argmax(r["f_score"]))}
    out = {}
    for name, rule in rules.items():
        kept = [rule(r) for r in rows]
        out[name] = {key: float(np.mean([r[key][k] for r, k in zip(rows, kept)])) for key in ("f_score", "f_score_005")}
    out["mean of all samples"] = {key: float(np.mean([np.mean(r[key]) for r in rows])) for key in ("f_score", "f_score_005")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints")
    p.add_argument("--meshes", required=True, metavar="DIR")
    p.add_argument("--limit", type=int)
    p.add_argument("--samples", type=int, default=8, metavar="K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coarse-scales", type=int, default=7, metavar="S", help="scales of pmi_coarse (default 7)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--jsonl", required=True, metavar="OUT.jsonl")
    args = p.parse_args(argv)
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    out = Path(args.jsonl)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    seen = {r["mesh"] for r in rows}
    with out.open("a") as f:
        for path in tqdm(mesh_files(args.meshes, args.limit), desc="selection", unit="mesh"):
            if str(path) not in seen:
                rows.append(mesh_row(pipeline, path, args))
                f.write(json.dumps(rows[-1]) + "\n")
                f.flush()
    print(f"| rule ({len(rows)} meshes, {args.samples} samples each) | F@0.01 | F@0.05 |\n|---|---|---|")
    for name, means in summary(rows).items():
        print(f"| {name} | {means['f_score']:.3f} | {means['f_score_005']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
