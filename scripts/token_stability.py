r"""How much a mesh's tokens depend on which surface points the encoder reads (run it with the repository on
the path: `PYTHONPATH=. python scripts/token_stability.py ...`, or after `pip install -e .`).

Each mesh of --meshes (sorted by path, at most --limit) is encoded twice with one sampling and no search or
refinement (`MeshCodec.encode`), from disjoint seeds, for each --average A: seeds 0 .. A-1 against A .. 2A-1.
Prints, per A, the share of tokens the two encodings have in common at each scale and over all tokens (1: the
tokens are a function of the shape; low: of the sampling too). The generator learns one encoding per training
shape, so this is how much of its target is the sampling's noise (`train/prepare_generator_data.py
--token-average`). Writes the per-mesh shares to --json.

    python scripts/token_stability.py --meshes data/val-meshes/geometry --limit 20 --averages 1,4 --json s.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vat.evaluate import mesh_files
from vat.geometry.io import load_mesh
from vat.pipeline import MeshCodec


def equal_shares(codec: MeshCodec, mesh, average: int) -> list[float]:
    """Per scale, the share of equal tokens between the encodings of seeds 0.. and average.. ."""
    first, second = (codec.encode(mesh, seed=seed, average=average, raw=True).indices  # raw: no entropy coding
                     for seed in (0, average))
    return [float(np.mean(a == b)) for a, b in zip(first, second, strict=True)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints", help="checkpoint folder (default: the shipped one)")
    p.add_argument("--meshes", required=True, help="folder of meshes")
    p.add_argument("--limit", type=int, help="the first N meshes only")
    p.add_argument("--averages", default="1,4", help="comma-separated values of --average to compare (default 1,4)")
    p.add_argument("--json", type=Path, help="write the per-mesh shares here")
    args = p.parse_args(argv)
    averages = [int(a) for a in args.averages.split(",")]
    if not averages or min(averages) < 1:
        p.error(f"--averages must be whole numbers of at least 1, got {args.averages!r}")
    codec = MeshCodec.from_pretrained(args.checkpoint)
    tokens = np.array([s * s for s in codec.config.scale_sides], dtype=float)
    shares: dict[int, list[list[float]]] = {a: [] for a in averages}
    names = []
    for path in mesh_files(args.meshes, args.limit):
        mesh = load_mesh(path)
        names.append(path.name)
        for a in averages:
            shares[a].append(equal_shares(codec, mesh, a))
    summary = {}
    for a in averages:
        per_scale = np.mean(shares[a], axis=0)
        overall = float(np.mean(np.array(shares[a]) @ (tokens / tokens.sum())))
        summary[a] = {"per_scale": [round(float(v), 4) for v in per_scale], "all_tokens": round(overall, 4)}
        print(f"average {a}: equal tokens {overall:.3f} of all; per scale "
              + " ".join(f"{v:.3f}" for v in per_scale))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": {str(a): v for a, v in summary.items()}, "meshes": names,
                                         "shares": {str(a): v for a, v in shares.items()}}, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
