r"""The tokenizer on two shapes a person can judge by eye: a sphere (icosphere, radius 0.4) and a box with
a cylindrical hole through it (0.6 x 0.6 x 0.4, hole radius 0.15 along z). Each is put in the unit
cube as the evaluation protocol normalises (bounding box centred, longest side 1) and written to --out,
encoded to a .vat, decoded at 256^3 and scored as `vat eval-recon` scores reconstructions: F-score@0.01
and Chamfer-L1 of the decoded mesh against the shape in that same frame, with no alignment or
re-normalisation of the decoded mesh (the codec decodes into the unit cube). `vat encode` + `vat decode`
+ `vat compare SHAPE DECODED` on the written files give the same numbers.

    python scripts/test_shapes.py --checkpoint checkpoints --out test-shapes
    python scripts/coarse_to_fine.py --mesh test-shapes/box-with-hole.ply -o docs/tiny-grid-box-with-hole.png

Run it with vat importable: after `pip install -e .` (the README's install), or with the repository on the path
(`PYTHONPATH=. python scripts/test_shapes.py ...`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import trimesh

from vat.geometry.io import normalize_mesh
from vat.metrics import compare_meshes
from vat.pipeline import DEFAULT_SEARCH, MeshCodec


def test_shapes() -> dict[str, trimesh.Trimesh]:
    """The two shapes, watertight (the hole is a boolean difference through manifold3d)."""
    box = trimesh.creation.box((0.6, 0.6, 0.4))
    hole = trimesh.creation.cylinder(radius=0.15, height=1.0, sections=64)
    return {"icosphere": trimesh.creation.icosphere(subdivisions=4, radius=0.4),
            "box-with-hole": box.difference(hole)}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints", help="model folder (the tokenizer is used)")
    parser.add_argument("--out", required=True, help="folder for the shapes, their .vat files and decoded meshes")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes grid of the decoded mesh")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    codec = MeshCodec.from_pretrained(args.checkpoint)
    scores = {}
    for name, shape in test_shapes().items():
        mesh, _ = normalize_mesh(shape)
        mesh.export(out / f"{name}.ply")
        encoded = codec.encode(mesh, search=DEFAULT_SEARCH)  # as `vat encode` does
        (out / f"{name}.vat").write_bytes(encoded.data)
        decoded = codec.decode_mesh(codec.read(encoded.data), resolution=args.resolution)
        decoded.export(out / f"{name}-decoded.ply")
        score = compare_meshes(mesh, decoded)  # mesh is in the unit cube: "reference" leaves both as they are
        scores[name] = {"f_score": score["f_score"], "chamfer": score["chamfer"], "bytes": len(encoded.data)}
        print(f"{name}: F-score@0.01 {score['f_score']:.3f}  Chamfer-L1 {score['chamfer']:.5f}  "
              f"({len(encoded.data)} bytes, {len(decoded.faces):,} faces)")
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    main()
