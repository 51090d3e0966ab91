r"""How the generator-side search should pick among its samples: every sample of each piece scored, so that
any rule for keeping one can be compared with the others and with the best pick (run it with the repository
on the path: `PYTHONPATH=. python scripts/selection_study.py ...`, or after `pip install -e .`).

For each mesh of --meshes (sorted by path, at most --limit) the view eval-gen renders (view 0, 512 px) is the
input; seeds SEED .. SEED+K-1 are sampled one by one with the checkpoint's sampling settings (the samples
`vat generate --search K` draws), and each sample gets
- `outline`: its outline's fit to the image (Pipeline.outline_scores, what the search keeps by);
- `consensus`: how near it is to the other samples (consensus_scores on the same volumes);
- `pmi` and `pmi_coarse`: how much more likely the image makes its tokens than no input does
  (pmi_scores over all scales, and over the first --coarse-scales);
- `f_score`, `f_score_005`, `chamfer`: the mesh decoded at --resolution, ICP-aligned and scored against the
  piece as eval-gen scores it (vat.metrics.compare_meshes).
Beside them, per mesh, `fused_top3` and `fused_all`: the F-scores (@0.01, @0.05) of one mesh made from several
samples, their occupancy probabilities averaged (the 3 with the best outlines, and all of them).
`--variants` adds the outline score computed other ways (VARIANTS), and `--reuse EARLIER.jsonl` takes the
F-scores from an earlier run's rows of the same seeds, so that a second pass scores only the new rules.
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
import torch
from tqdm.auto import tqdm

from vat.errors import VatError
from vat.evaluate import EVAL_GEN_VIEW_SEED, mesh_files
from vat.geometry.extract import extract_mesh, postprocess
from vat.geometry.io import load_mesh
from vat.geometry.render import load_for_render, render_views
from vat.geometry.silhouette import GRID_AZIMUTHS, GRID_ELEVATIONS, SILHOUETTE_SIDE, outline_scores, shell_cells
from vat.metrics import compare_meshes
from vat.models.gpt import condition_pmi
from vat.pipeline import OUTLINE_GRID, SAMPLE_BATCH, Pipeline
from vat.preprocess import preprocess_image

SCORES = ("outline", "consensus", "pmi", "pmi_coarse")
# --variants: the outline score computed other ways (a finer occupancy grid, a finer grid of views, a finer
# comparison square), each (grid, azimuths, elevations, side)
VARIANTS = {"outline_g64": (64, GRID_AZIMUTHS, GRID_ELEVATIONS, SILHOUETTE_SIDE),
            "outline_views": (OUTLINE_GRID, np.arange(0.0, 360.0, 7.5), np.array([-5.0, 5.0, 15.0, 25.0, 35.0]),
                              SILHOUETTE_SIDE),
            "outline_side128": (OUTLINE_GRID, GRID_AZIMUTHS, GRID_ELEVATIONS, 128)}
COPIED = ("f_score", "f_score_005", "chamfer", "fused_top3", "fused_all")  # what --reuse takes from a row


def consensus_scores(volumes: list[np.ndarray], points: int = 2048, seed: int = 0) -> np.ndarray:
    """For each occupancy volume (occupancy_volumes of one input's samples), minus its mean Chamfer-L1 distance
    to the others: the surface cells of each, scaled so that their bounding box's longer side is 1 and
    centred (as the evaluation normalises each mesh), at most `points` of them. The sample nearest the others
    is the one the samples agree on (minimum Bayes risk); -inf for an empty volume."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    clouds = []
    for volume in volumes:
        cells = shell_cells(volume).astype(np.float64)
        if len(cells) == 0:
            clouds.append(None)
            continue
        if len(cells) > points:
            cells = cells[rng.choice(len(cells), points, replace=False)]
        low, high = cells.min(0), cells.max(0)
        clouds.append((cells - (low + high) / 2) / max(float((high - low).max()), 1.0))
    trees = [None if c is None else cKDTree(c) for c in clouds]
    n = len(volumes)
    distance = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            if clouds[i] is not None and clouds[j] is not None:
                distance[i, j] = distance[j, i] = (trees[j].query(clouds[i])[0].mean() +
                                                   trees[i].query(clouds[j])[0].mean()) / 2
    scores = np.full(n, -np.inf)
    for i in range(n):
        others = distance[i][np.isfinite(distance[i])]
        if clouds[i] is not None:
            scores[i] = -others.mean() if len(others) else 0.0
    return scores


@torch.no_grad()
def pmi_scores(pipeline: Pipeline, candidates: list[list[np.ndarray]], image_tokens: torch.Tensor,
               scales: int | None = None) -> np.ndarray:
    """vat.models.gpt.condition_pmi of each candidate's tokens (all scales given; the mean over the first
    `scales`) given the image tokens (batch 1, as pipeline.encoders.encode gives them), SAMPLE_BATCH at a time."""
    out = []
    for start in range(0, len(candidates), SAMPLE_BATCH):
        batch = candidates[start:start + SAMPLE_BATCH]
        idx = [torch.as_tensor(np.stack([np.asarray(c[s]) for c in batch]), dtype=torch.long, device=pipeline.device)
               for s in range(pipeline.num_scales)]
        out.append(condition_pmi(pipeline.generator, pipeline.codec.tokenizer.quantizer, idx, image_tokens, None,
                                 scales).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def mesh_row(pipeline: Pipeline, path: Path, args: argparse.Namespace, earlier: dict | None = None) -> dict:
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
           "pmi": pmi_scores(pipeline, candidates, image_tokens).tolist(),
           "pmi_coarse": pmi_scores(pipeline, candidates, image_tokens, scales=args.coarse_scales).tolist()}
    if args.variants:
        by_grid = {OUTLINE_GRID: volumes}
        for name, (grid, azimuths, elevations, side) in VARIANTS.items():
            if grid not in by_grid:
                by_grid[grid] = pipeline.occupancy_volumes(candidates, grid=grid)
            row[name] = outline_scores(by_grid[grid], done.mask, azimuths, elevations, side).tolist()
    if earlier is not None and earlier["seeds"] == row["seeds"]:
        return {**row, **{key: earlier[key] for key in COPIED}}
    mesh = load_mesh(path)
    scores = [sample_scores(mesh, g, args) for g in samples]
    for key in ("f_score", "f_score_005", "chamfer"):
        row[key] = [float(s[key]) for s in scores]
    fns = pipeline.codec.occupancy_fns(candidates)
    for name, kept in (("fused_top3", np.argsort(-np.asarray(row["outline"]), kind="stable")[:3]),
                       ("fused_all", range(len(fns)))):
        row[name] = fused_scores(mesh, [fns[k] for k in kept], args)
    return row


def sample_scores(mesh, generation, args: argparse.Namespace) -> dict:
    """compare_meshes of the piece and a sample's mesh (F-scores 0 for a sample with no surface)."""
    try:
        decoded = generation.mesh()
    except VatError:  # no surface at all
        decoded = None
    if decoded is None or not len(decoded.faces):
        return {"f_score": 0.0, "f_score_005": 0.0, "chamfer": float("nan")}
    return compare_meshes(mesh, decoded, icp=True, normalize="each", seed=args.seed)


def fused_scores(mesh, fns, args: argparse.Namespace) -> list[float]:
    """F-score@0.01 and @0.05 of the mesh where the mean occupancy probability of `fns` is above 1/2."""
    def mean_probability(points):
        return np.mean([1.0 / (1.0 + np.exp(-fn(points))) for fn in fns], axis=0) - 0.5

    try:
        fused = postprocess(extract_mesh(mean_probability, resolution=args.resolution)[0])
    except VatError:  # no surface
        return [0.0, 0.0]
    score = compare_meshes(mesh, fused, icp=True, normalize="each", seed=args.seed)
    return [float(score["f_score"]), float(score["f_score_005"])]


def ranks(values: list[float]) -> np.ndarray:
    """0 for the best (highest) value."""
    return np.argsort(np.argsort(-np.asarray(values), kind="stable"), kind="stable")


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    scores = [k for k in (*SCORES, *VARIANTS) if all(k in r for r in rows)]
    rules = {"seed alone": lambda r: 0, **{f"best {k}": (lambda r, k=k: int(np.argmax(r[k]))) for k in scores},
             **{f"outline + {k} ranks": (lambda r, k=k: int(np.argmin(ranks(r["outline"]) + ranks(r[k]) +
                                                                   1e-3 * ranks(r["outline"]))))
                for k in ("consensus", "pmi", "pmi_coarse")},
             "best F-score (ceiling)": lambda r: int(np.argmax(r["f_score"]))}
    out = {}
    for name, rule in rules.items():
        kept = [rule(r) for r in rows]
        out[name] = {key: float(np.mean([r[key][k] for r, k in zip(rows, kept)])) for key in ("f_score", "f_score_005")}
    for name in ("fused_top3", "fused_all"):
        if all(name in r for r in rows):
            out[name.replace("_", " ")] = {key: float(np.mean([r[name][i] for r in rows]))
                                           for i, key in enumerate(("f_score", "f_score_005"))}
    out["mean of all samples"] = {key: float(np.mean([np.mean(r[key]) for r in rows]))
                                  for key in ("f_score", "f_score_005")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints")
    p.add_argument("--meshes", required=True, metavar="DIR")
    p.add_argument("--limit", type=int)
    p.add_argument("--samples", type=int, default=8, metavar="K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coarse-scales", type=int, default=7, metavar="S", help="scales of pmi_coarse (default 7)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--jsonl", required=True, metavar="OUT.jsonl")
    p.add_argument("--variants", action="store_true", help="also the outline score computed other ways (VARIANTS)")
    p.add_argument("--reuse", metavar="EARLIER.jsonl",
                   help="take the F-scores of a mesh's samples from this earlier run (same seeds) instead of "
                        "decoding and scoring them again")
    args = p.parse_args(argv)
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    out = Path(args.jsonl)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    seen = {r["mesh"] for r in rows}
    earlier = {}
    if args.reuse:
        earlier = {r["mesh"]: r for r in map(json.loads, Path(args.reuse).read_text().splitlines())}
    with out.open("a") as f:
        for path in tqdm(mesh_files(args.meshes, args.limit), desc="selection", unit="mesh"):
            if str(path) not in seen:
                rows.append(mesh_row(pipeline, path, args, earlier.get(str(path))))
                f.write(json.dumps(rows[-1]) + "\n")
                f.flush()
    print(f"| rule ({len(rows)} meshes, {args.samples} samples each) | F@0.01 | F@0.05 |\n|---|---|---|")
    for name, means in summary(rows).items():
        print(f"| {name} | {means['f_score']:.3f} | {means['f_score_005']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
