r"""Write the meshes behind prepared shards as files, oriented as they were prepared (a Sweet Home 3D
piece's catalogue rotation applied), so the evaluation commands read exactly the shapes of a split:

    python train/export_meshes.py --data /data/vat/heldout --out /data/vat/heldout-meshes/geometry
    python train/export_meshes.py --data /data/vat/heldout --out /data/vat/heldout-meshes/textured --textured
    vat eval-recon --meshes /data/vat/heldout-meshes/geometry --json recon.json
    vat eval-gen --meshes /data/vat/heldout-meshes/textured --json gen.json
The validation split of the training libraries (for choosing sampling settings off the test split):
    python train/export_meshes.py --data /data/vat/train/sh3d --out /data/vat/val-meshes/textured --textured --validation

Geometry only (default): one binary PLY per shape (its size is the "input mesh bytes" of the
compression ratio). --textured: one GLB per shape with its materials and textures (what the
renderer draws, as the generator's training renders were drawn). Procedural shapes are written too.
Names are the shape ids with path separators replaced; existing files are kept (re-runs resume).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from tqdm import tqdm

from vat import data
from vat.training.renders import oriented_mesh

log = logging.getLogger("export_meshes")


def file_name(shape_id: str, suffix: str) -> str:
    """A portable file name for a shape id ("sh3d/KatorLegaz/chair" -> "sh3d_KatorLegaz_chair.ply")."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", shape_id).strip("._") or "shape"
    return stem + suffix


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="shard folder of train/prepare_data.py")
    p.add_argument("--out", required=True, type=Path, help="folder for the mesh files")
    p.add_argument("--textured", action="store_true", help="GLB with materials instead of geometry-only PLY")
    p.add_argument("--limit", type=int, help="only the first N shapes (in shard order)")
    p.add_argument("--validation", action="store_true",
                   help="only the validation split's shapes (vat.data.in_validation; train_generator.py "
                        "--hold-out-validation leaves them out of training)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trimesh").setLevel(logging.WARNING)
    records = [r for path in data.list_chunks(args.data) for r in data.chunk_records(path) if r["ok"]]
    if not records:
        raise SystemExit(f"{args.data} holds no prepared shapes")
    if args.validation:
        records = [r for r in records if data.in_validation(r["id"])]
        if not records:
            raise SystemExit(f"{args.data} holds no shapes of the validation split")
    records = records[:args.limit] if args.limit else records
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ".glb" if args.textured else ".ply"
    counts = {"written": 0, "kept": 0, "bad": 0}
    for record in tqdm(records, unit="mesh"):
        target = args.out / file_name(record["id"], suffix)
        if target.is_file():
            counts["kept"] += 1
            continue
        try:
            mesh = oriented_mesh(record, args.textured)
        except Exception as exc:  # one bad file must not stop the rest
            log.warning("skipped %s: %s", record["id"], exc)
            counts["bad"] += 1
            continue
        data.write_atomic(target, lambda f: f.write(mesh.export(file_type=suffix[1:])))
        counts["written"] += 1
    log.info("%(written)d written, %(kept)d already there, %(bad)d bad", counts)
    return counts


if __name__ == "__main__":
    main()
