"""scripts/token_prior.py: the count priors of the .vat tokens (issue 29, "Entropy coding"), on tiny
synthetic tokens whose dependencies are known."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from vat.entropy import PROBABILITY_TOTAL

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "token_prior.py"
SIDES, V = (1, 2, 4), 16


@pytest.fixture(scope="module")
def tp():
    return runpy.run_path(str(SCRIPT))


def synthetic(n: int, seed: int, tp) -> list[np.ndarray]:
    """Scale 1 uniform; each later token is its parent's token + 1 (mod V) with probability 0.9, else
    uniform: tokens that depend on their co-located parent and on nothing else."""
    rng = np.random.default_rng(seed)
    scales = [rng.integers(0, V, (n, 1))]
    for side, coarser in zip(SIDES[1:], SIDES):
        parent = scales[-1][:, tp["parent_positions"](side, coarser)]
        noise = rng.integers(0, V, parent.shape)
        scales.append(np.where(rng.random(parent.shape) < 0.9, (parent + 1) % V, noise))
    return scales


def fitted(tp, seed=0):
    prior = tp["CountPrior"](SIDES, V)
    prior.tune(synthetic(300, seed, tp), synthetic(100, seed + 1, tp))
    return prior.fit_counts(synthetic(400, seed + 2, tp))


def test_parent_context_codes_dependent_tokens_in_fewer_bits(tp):
    prior, fresh = fitted(tp), synthetic(200, 7, tp)
    unigram = tp["bits_per_scale"](prior, fresh, "unigram")
    parent = tp["bits_per_scale"](prior, fresh, "parent")
    mixture = tp["bits_per_scale"](prior, fresh, "mixture")
    assert unigram[1] == pytest.approx(4.0, abs=0.15)  # uniform over 16 symbols: log2 16 bits
    # ideal for a parent-dependent token: H = -0.9375 log2 0.9375 - 15 (1/160) log2(1/160) = 0.72 bits
    assert parent[1] < 1.0 and parent[2] < 1.0
    assert mixture[2] < 1.2 and prior.weights[2][prior.components.index("parent")] > 0.6  # EM finds the parent


def test_probabilities_are_distributions_and_quantise_like_the_coder(tp):
    prior, fresh = fitted(tp), synthetic(50, 9, tp)
    for name in tp["prior_names"](prior):
        for s in range(len(SIDES)):
            rows = tp["rows_of"](prior, name, fresh, s)
            assert rows.shape == (fresh[s].size, V) and np.allclose(rows.sum(axis=1), 1.0) and (rows > 0).all()
    for depth in range(len(prior.levels) + 1):  # full rows agree with the per-token path used for tuning
        rows = prior.predict(fresh, 2, depth)
        chosen = rows[np.arange(len(rows)), fresh[2].reshape(-1)]
        assert np.allclose(chosen, prior.predict(fresh, 2, depth, tokens=True))
    rows = tp["rows_of"](prior, "mixture", fresh, 2)
    bits = tp["quantized_bits"](rows, fresh[2].reshape(-1))
    ideal = -np.log2(rows[np.arange(len(rows)), fresh[2].reshape(-1)])
    assert np.abs(bits - ideal).mean() < 0.005 and np.abs(bits - ideal).max() < 0.1  # 2^16 levels lose little
    one_hot = np.full((1, V), 1e-30)
    one_hot[0, 3] = 1.0  # a token the model rules out still gets a code, at about 16 bits
    assert tp["quantized_bits"](one_hot, np.array([4]))[0] == pytest.approx(np.log2(PROBABILITY_TOTAL), abs=0.01)


def test_contexts_only_see_tokens_coded_before(tp):
    scales = synthetic(3, 11, tp)
    for component in tp["COMPONENTS"]:
        ctx, _ = tp["contexts"](component, scales, 2, V)
        for p in range(SIDES[2] ** 2):  # change token p of scale 3: contexts of tokens 0..p stay
            changed = [s.copy() for s in scales]
            changed[2][:, p] = (changed[2][:, p] + 5) % V
            assert (tp["contexts"](component, changed, 2, V)[0][:, :p + 1] == ctx[:, :p + 1]).all(), component


def test_script_measures_a_folder_against_the_generator(tiny_grid_checkpoint, tmp_path, monkeypatch, tp):
    """End to end on the tiny checkpoint: prepared folders of tokens in, per-scale bits of every prior
    and of the generator out; a validation folder that is also a training folder is refused."""
    from vat.models.tokenizer import VAT
    from vat.pipeline import MeshCodec
    from vat.shards import write_atomic

    config = VAT.from_pretrained(tiny_grid_checkpoint).config
    rng = np.random.default_rng(0)
    length = sum(s * s for s in config.scale_sides)
    for name, n in (("train", 40), ("val", 6)):
        folder = tmp_path / name
        folder.mkdir()
        records = "".join(json.dumps({"id": f"{name}/{k}", "ok": True}) + "\n" for k in range(n))
        (folder / "c0.jsonl").write_text(records)
        tokens = rng.integers(0, config.codebook_size, (n, length))
        write_atomic(folder / "c0.npz", lambda f: np.savez(f, tokens=tokens))
    out = tmp_path / "prior.json"
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                                      "--checkpoint", str(tiny_grid_checkpoint), "--json", str(out)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads(out.read_text())
    measured = next(iter(result["token_sets"].values()))
    assert measured["shapes"] == 6 and {"unigram", "mixture", "generator"} <= set(measured["priors"])
    assert all(len(p["bits_per_scale"]) == len(config.scale_sides) for p in measured["priors"].values())
    codec = MeshCodec.from_pretrained(tiny_grid_checkpoint, device="cpu")  # the generator's bits, shape by shape
    by_hand = np.mean([codec.prior.bits([a[0] for a in tp["split_scales"](row[None], config.scale_sides)])
                       for row in tokens], axis=0)
    assert measured["priors"]["generator"]["bits_per_scale"] == pytest.approx(by_hand, abs=1e-3)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--train", str(tmp_path / "val"), "--val", str(tmp_path / "val"),
                                      "--checkpoint", str(tiny_grid_checkpoint), "--json", str(out)])
    with pytest.raises(SystemExit):
        runpy.run_path(str(SCRIPT), run_name="__main__")
