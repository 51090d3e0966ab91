"""The command line both training scripts share: TrainConfig defaults, then --config JSON, then the
options; --model-override FIELD=VALUE entries."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vat.training.distributed import DEVICES


def parse_override(text: str) -> tuple[str, object]:
    """FIELD=VALUE of a --model-override; VALUE is JSON, or a bare word such as compression=pooling."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_source_weight(text: str) -> tuple[str, int]:
    """SOURCE=K of a --source-weight: K a whole number >= 1."""
    source, sep, value = text.partition("=")
    if not sep or not source or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected SOURCE=K with K a whole number >= 1, got {text!r}")
    return source, int(value)


def check_source_weights(weights: dict) -> None:
    """A TrainConfig's source_weights: {source: whole number >= 1} (ValueError otherwise)."""
    for source, k in weights.items():
        if not isinstance(source, str) or not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"source_weights maps a source to a whole number >= 1, got {source!r}: {k!r}")


def config_from_args(parser: argparse.ArgumentParser, argv: list[str] | None, config_cls, required: tuple[str, ...],
                     check=None):
    """The run's config: the dataclass defaults, then --config JSON, then the command line (the
    parser's defaults must be SUPPRESS); --model-override entries merge into the JSON's. Missing
    `required` options and invalid values end in parser.error (one line, no traceback)."""
    args = vars(parser.parse_args(argv))
    options = json.loads(args.pop("config").read_text()) if "config" in args else {}
    for key in ("model_overrides", "source_weights"):  # repeatable FIELD=VALUE options merge into the JSON's
        if key in args:
            options[key] = {**options.get(key, {}), **dict(args.pop(key))}
    options.update(args)
    missing = [name for name in required if name not in options]
    if missing:
        parser.error("missing " + ", ".join("--" + m for m in missing))
    try:
        config = config_cls(**options)
        if check is not None:
            check(config)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return config


# Options both scripts have (TrainConfig fields of the same name and meaning).
COMMON_OPTIMISATION = (
    ("steps", int, "total steps"), ("batch_size", int, "shapes per rank and step"),
    ("lr", float, "peak learning rate"), ("min_lr_ratio", float, "final lr / peak lr"),
    ("warmup_steps", int, "linear warm-up steps"), ("weight_decay", float, "AdamW weight decay"),
    ("grad_clip", float, "max gradient norm"), ("ema_decay", float, "EMA decay of the weights"),
)
COMMON_RUN = (
    ("val_every", int, "validate every N steps"), ("val_shapes", int, "at most N validation shapes"),
    ("save_every", int, "checkpoint every N steps"), ("log_every", int, "log every N steps"),
    ("workers", int, "data loader processes per rank"), ("seed", int, "seed of everything"),
)


def add_options(group, specs) -> None:
    """--some-field options (type, help) for TrainConfig fields, from (field, type, help) triples."""
    for name, kind, text in specs:
        group.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


def training_parser(description: str, folders: tuple[tuple[str, str], ...], presets, model_class: str):
    """The parser both training scripts start from: --config, the data folders, --out, and the groups
    model (--preset, --model-override), optimisation and run with the options they share. Defaults
    are SUPPRESS: the TrainConfig's own defaults apply (see config_from_args)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields (the command line wins)")
    for flag, text in folders:
        p.add_argument(flag, help=text)
    p.add_argument("--out", help="run folder (resumed when it holds a checkpoint)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(presets))
    model.add_argument("--model-override", dest="model_overrides", type=parse_override, action="append",
                       metavar="FIELD=VALUE", help=f"replace a {model_class} field, e.g. depth=4 (repeatable)")
    optim = p.add_argument_group("optimisation")
    add_options(optim, COMMON_OPTIMISATION)
    run = p.add_argument_group("run")
    add_options(run, COMMON_RUN)
    run.add_argument("--device", choices=DEVICES)
    run.add_argument("--hold-out-validation", action="store_true",
                     help="leave the validation split's shapes (vat.data.in_validation) out of training, "
                          "to validate and choose settings on them")
    run.add_argument("--source-weight", dest="source_weights", type=parse_source_weight, action="append",
                     metavar="SOURCE=K", help="list each shape of this source (a record's 'source', e.g. sweethome3d; "
                                              "its augmented copies too) K times per pass over the data (repeatable)")
    return p, model, optim, run
