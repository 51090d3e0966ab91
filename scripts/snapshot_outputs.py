"""Hashes of what the shipped checkpoint gives, for checking that a restructuring changed no output:
the tokenizer's fingerprint, the tokens, `.vat` bytes and meshes of four procedural shapes, and the
generated tokens, `.vat` bytes and meshes of three examples (seed 0). Run it on two checkouts and
compare the files:

    PYTHONPATH=. python scripts/snapshot_outputs.py after.json
    git worktree add /tmp/before <old commit>
    (cd /tmp/before && PYTHONPATH=. python /path/to/scripts/snapshot_outputs.py /tmp/before.json)
    diff /tmp/before.json after.json     # only the "vat" line (where the package was loaded) differs

Uses the checkout's own checkpoints/ and examples/ (the current folder), on the CPU, one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vat
from vat.geometry.procedural import random_shape
from vat.pipeline import Pipeline

EXAMPLES = ("office-chair", "bar-stool", "fire-hydrant")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def tokens_digest(indices) -> str:
    return digest(b"".join(np.asarray(i, np.int64).tobytes() for i in indices))


def mesh_digest(mesh) -> str:
    return digest(np.round(np.asarray(mesh.vertices), 6).tobytes() + np.asarray(mesh.faces, np.int64).tobytes())


def snapshot(root: Path) -> dict:
    torch.set_num_threads(1)
    pipeline = Pipeline.from_pretrained(root / "checkpoints", device="cpu")
    codec = pipeline.codec
    out = {"vat": vat.__file__, "fingerprint": codec.tokenizer.fingerprint().hex()}
    for seed in range(4):
        encoded = codec.encode(random_shape(seed).mesh)
        out[f"shape{seed}"] = {"tokens": tokens_digest(encoded.indices), "vat": digest(encoded.data),
                               "bytes": len(encoded.data),
                               "mesh_3_scales": mesh_digest(codec.decode_mesh(encoded.indices, 3, resolution=64)),
                               "mesh": mesh_digest(codec.decode_mesh(encoded.indices, resolution=96))}
    for name in EXAMPLES:
        generation = pipeline.generate(image=Image.open(root / "examples" / f"{name}.png"), seed=0, resolution=64)
        out[name] = {"tokens": tokens_digest(generation.indices), "mesh": mesh_digest(generation.mesh()),
                     "vat": digest(generation.vat())}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the JSON file to write")
    args = p.parse_args(argv)
    out = snapshot(Path.cwd())
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
