"""Fit a trained tokenizer's surface levels on training shapes, without training: one occupancy-logit
level per decoded prefix of scales (vat.training.tokenizer_eval.calibrate_surface, what a training run does when it
exports). Only tokenizer_config.json changes; the weights, the tokens and the fingerprint stay, so a
generator trained on this tokenizer's tokens stays valid.

    python train/calibrate_tokenizer.py --checkpoint checkpoints --data data/train --shapes 64

rewrites the folder's tokenizer_config.json in place (or writes a copy of the folder with --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch

from vat.data import write_atomic
from vat.errors import VatError
from vat.models.tokenizer import VAT, SurfaceLevels, TokenizerConfig
from vat.training.tokenizer_data import ShapeSamples
from vat.training.tokenizer_eval import calibrate_surface

log = logging.getLogger("calibrate_tokenizer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="folder with tokenizer_config.json and tokenizer.safetensors")
    parser.add_argument("--data", required=True, help="training shards (prepare_data.py output, searched "
                                                      "recursively); never the held-out split")
    parser.add_argument("--shapes", type=int, default=64, help="training shapes to fit on, spread over the set")
    parser.add_argument("--out", help="write a copy of the folder here (default: rewrite the checkpoint in place)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    source = Path(args.checkpoint)
    try:
        model = VAT.from_pretrained(source)
    except VatError as exc:
        raise SystemExit(str(exc)) from exc
    shapes = ShapeSamples(args.data, model.config.num_points, 0, 0)  # SystemExit when it holds none
    levels = calibrate_surface(model, shapes, args.shapes, torch.device("cpu"), bf16=False, quantized=True)
    log.info("surface levels on %d training shapes, per decoded prefix of scales: %s (before: %s)",
             min(args.shapes, len(shapes)), " ".join(f"{v:.2f}" for v in levels),
             " ".join(f"{model.surface_level(s):.2f}" for s in range(1, len(levels) + 1)))
    target = Path(args.out) if args.out else source
    if target.resolve() != source.resolve():
        shutil.copytree(source, target, dirs_exist_ok=True)
    config_path = target / "tokenizer_config.json"
    config = TokenizerConfig.from_dict(json.loads(config_path.read_text()))  # v1 flat or typed; written typed
    config.surface = SurfaceLevels.fitted(levels, len(config.scale_sides))
    text = json.dumps(config.to_dict(), indent=2) + "\n"
    write_atomic(config_path, lambda f: f.write(text.encode()))
    if VAT.from_pretrained(target).fingerprint() != model.fingerprint():  # cannot happen: levels are decoder-only
        raise SystemExit("the fingerprint changed; the folder was not meant to")
    log.info("wrote %s", config_path)
    return levels


if __name__ == "__main__":
    main()
