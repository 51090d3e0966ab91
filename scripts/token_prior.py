r"""Small priors trained on the tokens, against the generator's unconditional pass, as the .vat entropy
coder's probabilities (issue 29, "Entropy coding": "the generator's unconditional pass, or a small prior
trained on the tokens; take whichever codes smaller on the validation split").

Count-based models of the tokens of each scale, trained on the tokens of train/prepare_generator_data.py
folders (the shipped tokenizer's plain encoder tokens):
- unigram: p(token | scale), add-a smoothed;
- position: p(token | scale, position on the scale's map);
- parent: p(token | scale, the token at the co-located cell of the scale before (nearest-cell upsampling));
- left / up: p(token | scale, the token before it on its row / column; coded token by token in raster order,
  which the decoder can follow);
- mixture: per scale, a linear mixture of the five with weights fitted (EM) on the tuning slice.
Each context model is smoothed towards the unigram of its scale, p = (c(ctx, x) + b p_uni(x)) / (c(ctx) + b),
with b chosen on a tuning slice of the training shapes (vat.data.in_validation's share; the validation
folders are never trained or tuned on), then the counts are refitted on all training shapes.

Bits are the information content under the integer probabilities the coder would use
(vat.entropy.quantized_probabilities, total 2^16), the generator's from MeshCodec.prior.bits on the same
tokens. Token sets to measure: prepared folders (--val, their stored tokens), and/or mesh files encoded
with the codec's defaults (--val-meshes; search 8, refinement 20: the tokens a .vat really holds), cached in
--tokens-cache.

    PYTHONPATH=. python scripts/token_prior.py --train data/gen --val data/gen-val --json prior.json
    PYTHONPATH=. python scripts/token_prior.py --train data/gen --val-meshes data/val-meshes/geometry --every 4 \
        --limit 15 --tokens-cache codec-tokens.npz --json prior-codec.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vat.data import base_id, chunk_records, excluded_ids, in_validation, list_chunks
from vat.entropy import PROBABILITY_TOTAL, quantized_probabilities

COMPONENTS = ("unigram", "position", "parent", "left", "up")
LEVELS = (("left", "up"), ("left", "up", "parent"))  # back-off levels over the mixture, each over the one before
SMOOTHING_GRID = tuple(4.0 ** k for k in range(-4, 8))  # 1/256 .. 16384


# ---------------------------------------------------------------- tokens


def read_tokens(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """[N, L] tokens and the shape ids of a train/prepare_generator_data.py folder (its subfolders too),
    leaving out the shapes of its excluded-ids.txt files, as generator training does."""
    excluded = excluded_ids(folder)
    rows, ids = [], []
    for path in list_chunks(folder):
        with np.load(path) as arrays:
            if "tokens" not in arrays.files:
                raise SystemExit(f"{path} holds no tokens: is {folder} a train/prepare_generator_data.py folder?")
            tokens = arrays["tokens"]
        records = [r for r in chunk_records(path) if r["ok"]]
        keep = [k for k, r in enumerate(records) if r["id"] not in excluded]
        rows.append(tokens[keep].astype(np.int64))
        ids += [records[k]["id"] for k in keep]
    if not ids:
        raise SystemExit(f"{folder} holds no tokens of train/prepare_generator_data.py")
    return np.concatenate(rows), ids


def split_scales(tokens_NL: np.ndarray, sides: tuple[int, ...]) -> list[np.ndarray]:
    """[N, S*S] per scale from [N, L] tokens laid scale after scale."""
    if tokens_NL.shape[1] != sum(s * s for s in sides):
        raise SystemExit(f"{tokens_NL.shape[1]} tokens a shape, but the scales {sides} make "
                         f"{sum(s * s for s in sides)}")
    return np.split(tokens_NL, np.cumsum([s * s for s in sides])[:-1], axis=1)


def parent_positions(side: int, coarser: int) -> np.ndarray:
    """For each cell of a side x side map (raster order), its co-located cell on the coarser map."""
    rows = np.arange(side) * coarser // side
    return (rows[:, None] * coarser + rows[None, :]).reshape(-1)


def contexts(component: str, scales: list[np.ndarray], s: int, vocabulary: int) -> tuple[np.ndarray, int]:
    """[N, S*S] context ids of scale s's tokens under `component`, and how many context values there are.
    Everything a context uses comes before the token in the coding order (scale by scale, raster order)."""
    n, cells = scales[s].shape
    side = math.isqrt(cells)
    if component == "unigram" or (component == "parent" and s == 0):
        return np.zeros((n, cells), np.int64), 1
    if component == "position":
        return np.broadcast_to(np.arange(cells), (n, cells)), cells
    if component == "parent":
        return scales[s - 1][:, parent_positions(side, math.isqrt(scales[s - 1].shape[1]))], vocabulary
    grid = scales[s].reshape(n, side, side)
    none = np.full((n, side, side), vocabulary, np.int64)  # the first of a row / column has none: its own value
    if component == "left":
        none[:, :, 1:] = grid[:, :, :-1]
    elif component == "up":
        none[:, 1:, :] = grid[:, :-1, :]
    else:
        raise ValueError(f"unknown component {component}")
    return none.reshape(n, cells), vocabulary + 1


# ---------------------------------------------------------------- the model


class SparseLevel:
    """One back-off level over a joint context (several COMPONENTS' contexts at once): sparse counts,
    p(x | ctx) = (c(ctx, x) + b p_below(x)) / (c(ctx) + b), p_below the level below (the mixture first)."""

    def __init__(self, parts: tuple[str, ...], vocabulary: int):
        self.parts, self.vocabulary = parts, vocabulary
        self.smoothing: dict[int, float] = {}
        self.pairs, self.pair_counts, self.keys, self.totals = {}, {}, {}, {}

    def key(self, scales: list[np.ndarray], s: int) -> np.ndarray:
        key = np.zeros(scales[s].size, np.int64)
        for part in self.parts:
            ctx, n = contexts(part, scales, s, self.vocabulary)
            key = key * n + ctx.reshape(-1)
        return key

    def fit(self, scales: list[np.ndarray], levels: int) -> None:
        for s in range(levels):
            key = self.key(scales, s)
            pairs = key * self.vocabulary + scales[s].reshape(-1)
            self.pairs[s], self.pair_counts[s] = np.unique(pairs, return_counts=True)
            self.keys[s], self.totals[s] = np.unique(key, return_counts=True)

    def _lookup(self, table: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(table, query), len(table) - 1)
        return np.where(table[at] == query, counts[at], 0)

    def of_tokens(self, key: np.ndarray, x: np.ndarray, below: np.ndarray, s: int) -> np.ndarray:
        c = self._lookup(self.pairs[s], self.pair_counts[s], key * self.vocabulary + x)
        b = self.smoothing[s]
        return (c + b * below) / (self._lookup(self.keys[s], self.totals[s], key) + b)

    def rows(self, key: np.ndarray, below_nV: np.ndarray, s: int) -> np.ndarray:
        pairs, counts = self.pairs[s], self.pair_counts[s]
        lo = np.searchsorted(pairs, key * self.vocabulary)
        length = np.searchsorted(pairs, (key + 1) * self.vocabulary) - lo
        row = np.repeat(np.arange(len(key)), length)
        at = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length) + np.repeat(lo, length)
        b = self.smoothing[s]
        out = b * below_nV
        out[row, pairs[at] % self.vocabulary] += counts[at]
        return out / (self._lookup(self.keys[s], self.totals[s], key) + b)[:, None]

    def size_arrays(self, s: int) -> dict[str, np.ndarray]:
        """The level's table as it could be stored: sorted (context, token) keys delta-coded, and counts."""
        deltas = np.diff(self.pairs[s], prepend=0)
        return {f"{'+'.join(self.parts)}{s}": deltas.astype(np.uint64 if deltas.max() >= 2 ** 32 else np.uint32),
                f"{'+'.join(self.parts)}{s}n": self.pair_counts[s].astype(np.uint32)}


class CountPrior:
    """Per scale, the components' counts, smoothing and mixture weights (see the module's text)."""

    def __init__(self, sides: tuple[int, ...], vocabulary: int, components: tuple[str, ...] = COMPONENTS,
                 levels: tuple[tuple[str, ...], ...] = LEVELS):
        self.sides, self.vocabulary, self.components = tuple(sides), vocabulary, tuple(components)
        self.levels = [SparseLevel(parts, vocabulary) for parts in levels]
        self.counts: dict[tuple[str, int], np.ndarray] = {}  # [contexts, V] int64
        self.totals: dict[tuple[str, int], np.ndarray] = {}  # [contexts]
        self.smoothing = {(c, s): 1.0 for c in self.components for s in range(len(sides))}
        self.weights = [np.full(len(self.components), 1.0 / len(self.components)) for _ in sides]

    def fit_counts(self, scales: list[np.ndarray]) -> "CountPrior":
        for s in range(len(self.sides)):
            for c in self.components:
                ctx, n = contexts(c, scales, s, self.vocabulary)
                flat = ctx.reshape(-1) * self.vocabulary + scales[s].reshape(-1)
                self.counts[c, s] = np.bincount(flat, minlength=n * self.vocabulary).reshape(n, self.vocabulary)
                self.totals[c, s] = self.counts[c, s].sum(axis=1)
        for level in self.levels:
            level.fit(scales, len(self.sides))
        return self

    def unigram(self, s: int) -> np.ndarray:
        counts = self.counts["unigram", s][0]
        a = self.smoothing["unigram", s]
        return (counts + a) / (counts.sum() + a * self.vocabulary)

    def component(self, c: str, s: int, ctx: np.ndarray, tokens: np.ndarray | None = None) -> np.ndarray:
        """p under component c of scale s: of `tokens` [n] when given, else full rows [n, V]."""
        base = self.unigram(s)
        if c == "unigram":
            return base[tokens] if tokens is not None else np.broadcast_to(base, (len(ctx), self.vocabulary))
        counts, b = self.counts[c, s], self.smoothing[c, s]
        totals = self.totals[c, s][ctx]
        if tokens is not None:
            return (counts[ctx, tokens] + b * base[tokens]) / (totals + b)
        return (counts[ctx] + b * base) / (totals + b)[:, None]

    def mixture(self, scales: list[np.ndarray], s: int) -> np.ndarray:
        """Full rows [N * S*S, V] of the mixture for scale s (tokens in row-major shape order)."""
        rows = 0.0
        for w, c in zip(self.weights[s], self.components):
            rows = rows + w * self.component(c, s, contexts(c, scales, s, self.vocabulary)[0].reshape(-1))
        return rows

    def predict(self, scales: list[np.ndarray], s: int, depth: int, tokens: bool = False) -> np.ndarray:
        """The mixture (depth 0) or the first `depth` back-off levels over it, for scale s of `scales`: full
        rows [n, V], or with `tokens` the probabilities [n] of the tokens there."""
        if tokens:
            p = self.weights[s] @ self.token_probabilities(scales, s)
        else:
            p = self.mixture(scales, s)
        for level in self.levels[:depth]:
            key = level.key(scales, s)
            p = level.of_tokens(key, scales[s].reshape(-1), p, s) if tokens else level.rows(key, p, s)
        return p

    def token_probabilities(self, scales: list[np.ndarray], s: int) -> np.ndarray:
        """[K, n] each component's probability of the tokens of scale s (flattened)."""
        x = scales[s].reshape(-1)
        return np.stack([self.component(c, s, contexts(c, scales, s, self.vocabulary)[0].reshape(-1), x)
                         for c in self.components])

    def tune(self, train: list[np.ndarray], tune: list[np.ndarray], em_steps: int = 50) -> "CountPrior":
        """Choose each smoothing (unigram first: the others back off to it) and the mixture weights on `tune`
        with counts of `train`; then the caller refits the counts on everything."""
        self.fit_counts(train)
        for s in range(len(self.sides)):
            x = tune[s].reshape(-1)
            for c in self.components:  # "unigram" is first
                ctx = contexts(c, tune, s, self.vocabulary)[0].reshape(-1)
                loss = {}
                for b in SMOOTHING_GRID:
                    self.smoothing[c, s] = b
                    loss[b] = -np.mean(np.log(self.component(c, s, ctx, x)))
                self.smoothing[c, s] = min(loss, key=loss.get)
            p_Kn = self.token_probabilities(tune, s)
            w = np.full(len(self.components), 1.0 / len(self.components))
            for _ in range(em_steps):
                r = w[:, None] * p_Kn
                w = (r / r.sum(axis=0)).mean(axis=1)
            self.weights[s] = w
            for depth, level in enumerate(self.levels):
                below, key = self.predict(tune, s, depth, tokens=True), level.key(tune, s)
                loss = {}
                for b in SMOOTHING_GRID:
                    level.smoothing[s] = b
                    loss[b] = -np.mean(np.log(level.of_tokens(key, x, below, s)))
                level.smoothing[s] = min(loss, key=loss.get)
        return self

    def size_bytes(self, depth: int = 0) -> int:
        """Bytes of the mixture with `depth` back-off levels stored compactly: each count table's nonzero
        entries (context, token, count) as uint32 in a compressed npz, plus the smoothing and weights."""
        buffer = io.BytesIO()
        arrays = {}
        for (c, s), counts in self.counts.items():
            if c != "unigram" and self.weights[s][self.components.index(c)] < 1e-6:
                continue  # a component the mixture does not use need not be stored
            ctx, tok = np.nonzero(counts)
            arrays[f"{c}{s}"] = np.stack([ctx.astype(np.uint32), tok.astype(np.uint32),
                                          counts[ctx, tok].astype(np.uint32)])
        for level in self.levels[:depth]:
            for s in range(len(self.sides)):
                arrays.update(level.size_arrays(s))
        arrays["smoothing"] = np.array(list(self.smoothing.values()), np.float32)
        arrays["weights"] = np.array(self.weights, np.float32)
        np.savez_compressed(buffer, **arrays)
        return len(buffer.getvalue())


def quantized_bits(rows_nV: np.ndarray, tokens: np.ndarray, total: int = PROBABILITY_TOTAL) -> np.ndarray:
    """Bits of each token under the integer probabilities the coder would use for these rows (the same
    quantisation as the generator prior: vat.entropy.quantized_probabilities of the log-probabilities)."""
    out = []
    for start in range(0, len(tokens), 4096):
        rows = rows_nV[start:start + 4096]
        q = quantized_probabilities(torch.from_numpy(np.log(rows).astype(np.float32)), total)
        chosen = q[np.arange(len(rows)), tokens[start:start + 4096]]
        out.append(np.log2(q.sum(axis=1)) - np.log2(chosen))
    return np.concatenate(out)


def prior_names(prior: CountPrior) -> list[str]:
    """The priors a CountPrior holds: each component alone, the mixture, and the mixture with 1, 2, ...
    back-off levels ("backoff:left+up", ...)."""
    return list(prior.components) + ["mixture"] + ["backoff:" + "+".join(level.parts) for level in prior.levels]


def rows_of(prior: CountPrior, name: str, scales: list[np.ndarray], s: int) -> np.ndarray:
    """Full rows [n, V] of prior `name` (see prior_names) for the tokens of scale s."""
    if name in prior.components:
        return np.asarray(prior.component(name, s, contexts(name, scales, s, prior.vocabulary)[0].reshape(-1)))
    return prior.predict(scales, s, prior_names(prior).index(name) - len(prior.components))


def bits_per_scale(prior: CountPrior, scales: list[np.ndarray], name: str = "mixture") -> list[float]:
    """Mean bits per token of each scale under prior `name`, quantised as the coder would."""
    return [float(quantized_bits(rows_of(prior, name, scales, s), scales[s].reshape(-1)).mean())
            for s in range(len(scales))]


# ---------------------------------------------------------------- measuring


def codec_tokens(codec, paths: list[Path], cache: Path | None, search: int, refine: int) -> np.ndarray:
    """[N, L] tokens of the meshes as `MeshCodec.encode(mesh, search=, refine=)` gives them (seed 0). With
    `cache` (an npz keyed by mesh name and options) the meshes already there are read, and each new mesh is
    added as soon as it is encoded, so a stopped run resumes."""
    from vat.geometry.io import load_mesh

    done: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            done = dict(zip(stored["keys"].tolist(), stored["tokens"].astype(np.int64)))
    for path in tqdm(paths, desc="encode (codec defaults)", unit="mesh"):
        key = f"{path.name}|search={search}|refine={refine}"
        if key not in done:
            encoded = codec.encode(load_mesh(path), search=search, refine=refine)
            done[key] = np.concatenate([np.asarray(i).reshape(-1) for i in encoded.indices]).astype(np.int64)
            if cache is not None:
                np.savez(cache, keys=np.array(list(done)), tokens=np.stack(list(done.values())).astype(np.int32))
    return np.stack([done[f"{p.name}|search={search}|refine={refine}"] for p in paths])


def generator_bits(codec, tokens_NL: np.ndarray, sides: tuple[int, ...]) -> list[float]:
    """Mean bits per token of each scale under the checkpoint's generator prior."""
    per_shape = []
    for row in tqdm(tokens_NL, desc="generator prior", unit="shape"):
        per_shape.append([float(b) for b in codec.prior.bits([a[0] for a in split_scales(row[None], sides)])])
    return np.mean(per_shape, axis=0).tolist()


def summary(bits: list[float], sides: tuple[int, ...]) -> dict:
    tokens = [s * s for s in sides]
    total = float(np.dot(bits, tokens))
    return {"bits_per_scale": [round(b, 4) for b in bits], "bits_per_token": round(total / sum(tokens), 4),
            "payload_bytes": round(total / 8, 1)}


def measure(name: str, tokens_NL: np.ndarray, prior: CountPrior, codec, args) -> dict:
    scales = split_scales(tokens_NL, prior.sides)
    result = {"shapes": len(tokens_NL), "priors": {}}
    names = args.priors.split(",") if args.priors else prior_names(prior) + ["generator"]
    for c in tqdm([n for n in names if n != "generator"], desc=f"count priors on {name}", unit="prior"):
        result["priors"][c] = summary(bits_per_scale(prior, scales, c), prior.sides)
    if codec is not None and "generator" in names:
        result["priors"]["generator"] = summary(generator_bits(codec, tokens_NL, prior.sides), prior.sides)
    return result


def table(result: dict) -> str:
    lines = ["| prior | " + " | ".join(str(k + 1) for k in range(len(next(iter(result["priors"].values()))
                                                                          ["bits_per_scale"])))
             + " | mean | bytes |", "|---" * 13 + "|"]
    for name, r in result["priors"].items():
        lines.append(f"| {name} | " + " | ".join(f"{b:.2f}" for b in r["bits_per_scale"]) +
                     f" | {r['bits_per_token']:.3f} | {r['payload_bytes']:.0f} |")
    return "\n".join(lines)


def in_tuning_slice(item_id: str, share: float = 0.1) -> bool:
    """A slice of the training shapes (by base id, about `share`) that chooses the smoothing and weights."""
    digest = hashlib.sha256(f"token-prior-tuning:{base_id(item_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") < share * 2 ** 64


def train_prior(folders: list[str], sides: tuple[int, ...], vocabulary: int,
                leave_out: set[str]) -> tuple[CountPrior, dict]:
    """The count prior of the tokens of `folders` minus the validation split (vat.data.in_validation, as
    train_generator.py --hold-out-validation leaves it out) and the ids in `leave_out`."""
    tokens, ids = zip(*(read_tokens(f) for f in folders))
    tokens, ids = np.concatenate(tokens), sum(ids, [])
    kept = np.array([not in_validation(i) and base_id(i) not in leave_out for i in ids])
    tokens, ids = tokens[kept], [i for i, k in zip(ids, kept) if k]
    held = np.array([in_tuning_slice(i) for i in ids])
    if held.all() or not held.any():
        raise SystemExit(f"{len(ids)} training shapes are too few to keep a tuning slice of them apart")
    prior = CountPrior(sides, vocabulary)
    started = time.time()
    prior.tune(split_scales(tokens[~held], sides), split_scales(tokens[held], sides))
    prior.fit_counts(split_scales(tokens, sides))
    info = {"train_shapes": len(ids), "left_out_shapes": int((~kept).sum()), "tuning_slice_shapes": int(held.sum()),
            "fit_seconds": round(time.time() - started, 1),
            "smoothing": {f"{c}/{s + 1}": b for (c, s), b in prior.smoothing.items()},
            "weights": {f"{s + 1}": dict(zip(prior.components, np.round(w, 4).tolist()))
                        for s, w in enumerate(prior.weights)},
            "level_smoothing": {"+".join(level.parts): {f"{s + 1}": b for s, b in level.smoothing.items()}
                                for level in prior.levels},
            "size_bytes": {name: prior.size_bytes(depth)
                           for depth, name in enumerate(prior_names(prior)[len(prior.components):])}}
    return prior, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", required=True,
                        help="train/prepare_generator_data.py folders whose tokens train the priors")
    parser.add_argument("--val", nargs="*", default=[], help="prepared folders whose stored tokens are measured")
    parser.add_argument("--val-every", type=int, default=1, help="measure every k-th shape of the --val folders")
    parser.add_argument("--priors", help="comma-separated priors to measure (default: all; see prior_names; "
                        "'generator' alone skips training the count priors)")
    parser.add_argument("--val-meshes", help="a folder of meshes, encoded with the codec and measured")
    parser.add_argument("--every", type=int, default=1, help="take every k-th mesh of --val-meshes")
    parser.add_argument("--limit", type=int, help="at most this many meshes of --val-meshes")
    parser.add_argument("--search", type=int, help="encoder search for --val-meshes (default: the codec's)")
    parser.add_argument("--refine", type=int, help="refinement steps for --val-meshes (default: the codec's)")
    parser.add_argument("--tokens-cache", type=Path, help="npz keeping the --val-meshes tokens between runs")
    parser.add_argument("--checkpoint", default="checkpoints", help="the tokenizer + generator folder")
    parser.add_argument("--no-generator", action="store_true", help="skip the generator prior's bits")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    args = parser.parse_args(argv)
    known = prior_names(CountPrior((1,), 2)) + ["generator"]
    if args.priors and set(args.priors.split(",")) - set(known):
        parser.error(f"--priors: choose among {', '.join(known)}")
    if not args.val and not args.val_meshes:
        parser.error("nothing to measure: give --val and/or --val-meshes")
    for folder in args.train:
        if any(Path(folder).resolve() == Path(v).resolve() for v in args.val):
            parser.error(f"{folder} is both a training and a validation folder")

    from vat.pipeline import MeshCodec

    torch.set_num_threads(1)
    codec = MeshCodec.from_pretrained(args.checkpoint, device="cpu")
    sides, vocabulary = tuple(codec.config.scale_sides), codec.config.codebook_size
    use_generator = codec.prior is not None and not args.no_generator
    val_sets = {folder: read_tokens(folder) for folder in args.val}  # all of them left out of training
    if args.priors == "generator":  # the count priors are not trained, only their scales are used
        prior, info = CountPrior(sides, vocabulary), {}
    else:
        leave_out = {base_id(i) for _, ids in val_sets.values() for i in ids}
        prior, info = train_prior(args.train, sides, vocabulary, leave_out)
    out = {"command": "scripts/token_prior.py", "args": {k: str(v) for k, v in vars(args).items()},
           "checkpoint_generator_bytes": (Path(args.checkpoint) / "generator.safetensors").stat().st_size
           if use_generator else None, "count_prior": info, "token_sets": {}}
    for folder, (tokens, _) in val_sets.items():
        tokens = tokens[::args.val_every]
        name = f"{folder} every {args.val_every} (stored tokens)"
        out["token_sets"][name] = measure(name, tokens, prior, codec if use_generator else None, args)
    if args.val_meshes:
        from vat.evaluate import mesh_files
        from vat.pipeline import DEFAULT_SEARCH
        from vat.refine import DEFAULT_REFINE

        search = DEFAULT_SEARCH if args.search is None else args.search
        refine = DEFAULT_REFINE if args.refine is None else args.refine
        paths = mesh_files(args.val_meshes)[::args.every][:args.limit]
        tokens = codec_tokens(codec, paths, args.tokens_cache, search, refine)
        name = f"{args.val_meshes} every {args.every} ({len(paths)}; codec tokens, search {search}, refine {refine})"
        out["token_sets"][name] = measure(name, tokens, prior, codec if use_generator else None, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    for name, result in out["token_sets"].items():
        print(f"\n{name}: {result['shapes']} shapes, bits per token by scale\n{table(result)}")
    print(f"\ncount priors {info.get('size_bytes')} bytes; generator "
          f"{out['checkpoint_generator_bytes'] or 0:,} bytes; wrote {args.json}")


if __name__ == "__main__":
    main()
