"""Arms of one comparison of tokenizer designs, shared by train/ablate_tokenizer.py and
train/learning_curves.py: every arm is a run of train/train_tokenizer.py in OUT/NAME with the same
options (everything after `--`) and its own preset and model overrides last.

An arm is NAME=PRESET[+FIELD=VALUE...], e.g. `grid-wide=tiny-grid+plane_channels=32`, or the NAME of
an arm the runner defines (train/ablate_tokenizer.py's ARMS: their overrides on the shared preset)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

from vat.errors import VatError
from vat.evaluate import evaluate_reconstruction, mesh_files
from vat.models.tokenizer import PRESETS, VAT
from vat.pipeline import MeshCodec
from vat.training import tokenizer
from vat.training.options import parse_override

log = logging.getLogger("arms")

SYNTAX = "NAME=PRESET[+field=value...]"


@dataclasses.dataclass
class Arm:
    name: str
    preset: str | None  # None: the shared options' --preset (or the default)
    overrides: list[str]  # TokenizerConfig FIELD=VALUE, applied after the shared ones

    @classmethod
    def parse(cls, text: str, named: dict[str, list[str]] | None = None) -> "Arm":
        """An arm of `text` (see the module); a bare NAME must be a key of `named`."""
        name, sep, spec = text.partition("=")
        if not sep:
            if name in (named or {}):
                return cls(name, None, list(named[name]))
            known = f" or one of {', '.join(named)}" if named else ""
            raise ValueError(f"unknown arm {text!r}: an arm is {SYNTAX}{known}")
        preset, *overrides = spec.split("+")
        if not name or preset not in PRESETS:
            raise ValueError(f"an arm is {SYNTAX}, PRESET one of {', '.join(PRESETS)}; got {text!r}")
        for override in overrides:
            parse_override(override)
        return cls(name, preset, overrides)

    def train_args(self, out: Path) -> list[str]:
        """train_tokenizer.py's options of this arm (after the shared ones): preset, overrides, OUT/NAME."""
        preset = ["--preset", self.preset] if self.preset else []
        return [*preset, *(f"--model-override={o}" for o in self.overrides), "--out", str(out / self.name)]


def arms_parser(description: str, default_arms: str) -> argparse.ArgumentParser:
    """The options both runners have: --out (a run folder per arm goes there) and --arms."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="one run folder per arm goes here")
    p.add_argument("--arms", default=default_arms, help=f"comma-separated arms, each {SYNTAX}")
    return p


def parse_arms(p: argparse.ArgumentParser, argv: list[str] | None,
               named: dict[str, list[str]] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """(the runner's options with args.arms a list of Arm, the shared train_tokenizer.py options after
    `--`); a bad arm or a per-arm option among the shared ones ends in p.error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, train_args = p.parse_args(argv[:split]), argv[split + 1:]
    try:
        args.arms = [Arm.parse(a.strip(), named) for a in args.arms.split(",") if a.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if not args.arms:
        p.error("no arms given")
    if len({a.name for a in args.arms}) != len(args.arms):
        p.error("arm names must differ")
    per_arm = ["--out", *(["--preset"] if any(a.preset for a in args.arms) else [])]
    if any(a == flag or a.startswith(flag + "=") for a in train_args for flag in per_arm):
        p.error(f"{' and '.join(per_arm)} {'are' if len(per_arm) > 1 else 'is'} set per arm; pass the rest after --")
    return args, train_args


def check_meshes(meshes: str, limit: int | None) -> None:
    """Stop before hours of training, not after, when the meshes to score are not there."""
    try:
        mesh_files(meshes, limit)
    except VatError as exc:
        raise SystemExit(f"--meshes: {exc}") from None


def train_arm(arm: Arm, out: Path, train_args: list[str]) -> dict:
    """Train (or resume) one arm in this process; train_tokenizer's summary."""
    log.info("arm %s: %s", arm.name, " ".join(arm.train_args(out)))
    return tokenizer.main([*train_args, *arm.train_args(out)])


def train_arms(arms: list[Arm], out: Path, train_args: list[str], parallel: bool = False) -> None:
    """Train every arm, one after the other, or with `parallel` at the same time in processes of their
    own with the CPU threads split between them (their seconds then measured under the same
    conditions; each logs to OUT/NAME.log)."""
    if not parallel:
        for arm in arms:
            train_arm(arm, out, train_args)
        return
    threads = max(1, (os.cpu_count() or 1) // len(arms))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for arm in arms:
        log.info("arm %s (%d threads): %s", arm.name, threads, " ".join(arm.train_args(out)))
        with open(out / f"{arm.name}.log", "ab") as sink:
            procs.append(subprocess.Popen([sys.executable, "-m", tokenizer.__name__, *train_args, *arm.train_args(out)],
                                          env=env, stdout=sink, stderr=subprocess.STDOUT))
    failed = [arm.name for arm, proc in zip(arms, procs) if proc.wait() != 0]
    if failed:
        raise SystemExit(f"training failed for {', '.join(failed)}: see {out}/<arm>.log")


def score_tokenizer(folder: Path, meshes: str, limit: int | None, resolution: int, **options) -> dict:
    """eval-recon's protocol (no baselines) for the tokenizer in `folder` on the first `limit` meshes."""
    codec = MeshCodec(VAT.from_pretrained(folder))
    return evaluate_reconstruction(codec, meshes, limit=limit, resolution=resolution, baselines=False, **options)
