"""train/train_tokenizer.py: DDP lockstep under torchrun, resuming, the exported model, and an
overfit run of the real (quantised) tokenizer that must actually learn."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
import torch

from vat.models.tokenizer import VAT, SurfaceLevels, TokenizerConfig
from vat.training import ablation as ablate
from vat.training import curves
from vat.training import tokenizer as train_tokenizer
from vat.training.run import CHECKPOINT, FINAL, SNAPSHOTS
from vat.training.tokenizer_data import ShapeSamples
from vat.training.tokenizer_eval import calibrate_surface

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "train_tokenizer.py"

prepare_data = load_script("prepare_data")

MICRO_MODEL = [f"--model-override={o}" for o in (
    "width=32", "heads=2", "num_queries=16", "num_latents=16", "encoder_layers=1", "decoder_layers=1",
    "codebook_size=64", "triplane_tokens=4", "plane_channels=4", "mlp_hidden=16", "num_points=128")]
# Two phase-1 steps, then phase 2: the codebook is filled from latents at step 2 and, with a
# threshold above the average usage, dead codes are restarted at steps 3 and 4.
FAST = [*MICRO_MODEL, "--batch-size=2", "--uniform-queries=128", "--near-queries=128", "--phase1-steps=2",
        "--restart-every=1", "--restart-threshold=1.0", "--warmup-steps=1", "--workers=0", "--log-every=1"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    prepare_data.main(["--out", str(out), "--procedural", "4", "--workers", "1", "--surface-points", "2048",
                       "--uniform-queries", "2048", "--near-queries", "2048"])
    return out


@pytest.fixture
def one_thread():
    """Small models on a shared 2-core machine train several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_ddp_ranks_stay_identical_through_phase_two_and_restarts(shards, tmp_path):
    out = tmp_path / "run"
    # --standalone rendezvous on localhost:0, so the agent picks free ports itself.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
         "--data", str(shards), "--val-data", str(shards), "--out", str(out), "--steps", "4", "--val-every", "4",
         *FAST],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    restarted = {int(step): int(count) for step, count in
                 re.findall(r"step (\d+): .*codebook/restarted (\d+)", result.stderr + result.stdout)}
    assert restarted[3] == 64 and restarted[4] > 0  # the codebook fill, then a dead-code restart
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["step"] == 4
    digests = state["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "validation (EMA): iou" in result.stderr + result.stdout
    VAT.from_pretrained(out / FINAL)


@pytest.mark.slow
def test_single_process_exports_the_ema_model(shards, tmp_path, one_thread):
    out = tmp_path / "run"
    summary = train_tokenizer.main(["--data", str(shards), "--val-data", str(shards), "--out", str(out),
                                    "--steps", "3", *FAST])
    assert summary["step"] == 3 and set(summary["val"]) == {"iou", "acc", "bce", "iou_unquantized", "acc_unquantized", "bce_unquantized",
                                                               "cs_iou"}
    model = VAT.from_pretrained(out / FINAL)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0)  # the EMA weights, in float32
    assert model.config.width == 32 and (out / "train_config.json").is_file()
    assert any((out / "tb").iterdir())


def test_resume_continues_from_the_checkpoint(shards, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["--data", str(shards), "--out", str(out), *FAST]
    first = train_tokenizer.main([*args, "--steps", "3"])
    assert first["start_step"] == 0
    second = train_tokenizer.main([*args, "--steps", "6"])
    assert second["start_step"] == 3 and second["step"] == 6
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["step"] == 6
    # AdamW counted every update (the quantiser's since phase 2 began at step 2): the second run
    # started from the first one's optimizer state.
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {6, 4}
    with pytest.raises(SystemExit, match="other model settings"):
        train_tokenizer.main([*args, "--steps", "7", "--model-override", "mlp_hidden=8"])


def test_hold_out_validation_leaves_the_split_out_of_training(shards, tmp_path, monkeypatch, one_thread):
    """--hold-out-validation drops the shapes of vat.data.in_validation from the training draws (each kept
    shape still reads its own arrays), as train_generator.py's option does."""
    from vat import data

    every = ShapeSamples(shards, 128, 128, 128)
    ids = [r["id"] for r in every.shards.records]
    held = set(ids[1::2])
    kept = ShapeSamples(shards, 128, 128, 128, exclude=held.__contains__)
    assert [r["id"] for r in kept.shards.records] == [i for i in ids if i not in held]
    for i, record in enumerate(kept.shards.records):
        np.testing.assert_array_equal(kept.shards[i]["query_points"], every.shards[ids.index(record["id"])]["query_points"])
    args = ["--data", str(shards), "--steps", "1", *FAST, "--phase1-steps", "1"]
    monkeypatch.setattr(data, "in_validation", held.__contains__)
    assert train_tokenizer.main([*args, "--out", str(tmp_path / "a")])["train_shapes"] == len(ids)
    summary = train_tokenizer.main([*args, "--out", str(tmp_path / "b"), "--hold-out-validation"])
    assert summary["train_shapes"] == len(ids) - len(held)
    saved = (tmp_path / "b" / "train_config.json").read_text()
    assert '"hold_out_validation": true' in saved
    monkeypatch.setattr(data, "in_validation", lambda shape_id: True)
    with pytest.raises(SystemExit, match="outside the validation split"):
        train_tokenizer.main([*args, "--out", str(tmp_path / "c"), "--hold-out-validation"])


def test_augmentation_moves_a_box_with_its_labels_normals_and_uniform_cover():
    """A box's stored samples, augmented: framed again (longest side 1, centred), its proportions changed,
    every sure label (inside / outside) still true of the moved box, its normals still outward, and the
    uniform queries still fill the whole cube evenly (the part the moved cube leaves is filled empty)."""
    import trimesh

    from vat.geometry.io import normalize_mesh
    from vat.geometry.sampling import occupancy_queries, sample_surface
    from vat.training.tokenizer_data import Augmentation

    mesh, _ = normalize_mesh(trimesh.creation.box(extents=(1.0, 0.6, 0.4)))
    rng = np.random.default_rng(0)
    points, normals = sample_surface(mesh, 4096, rng)
    queries = occupancy_queries(mesh, 4096, 4096, 0.55, seed=rng)
    item = {"surface_points": points, "surface_normals": normals, "query_points": queries["points"],
            "query_sdf": queries["sdf"]}
    proportions = set()
    for seed in range(4):
        draw = np.random.default_rng(seed)
        out = Augmentation(0.55)(item, np.arange(0, 4096, 4), 4096, 4096 + np.arange(1024), 1024, draw)
        assert {k: v.shape for k, v in out.items()} == {"points": (1024, 3), "normals": (1024, 3),
                                                         "queries": (2048, 3), "occupancy": (2048,)}
        lo, hi = out["points"].min(0), out["points"].max(0)
        assert abs((hi - lo).max() - 1.0) < 0.01 and np.abs(lo + hi).max() < 0.01
        proportions.add(tuple(np.round((hi - lo) / (hi - lo).max(), 2)))
        inside = np.all(np.abs(out["queries"]) < (hi - lo) / 2, axis=1)
        sure = (out["occupancy"] == 0) | (out["occupancy"] == 1)
        assert sure.sum() > 1000 and np.array_equal(out["occupancy"][sure] == 1, inside[sure])
        assert np.all(np.sum(out["normals"] * out["points"], axis=1) > 0)
        uniform = out["queries"][:1024]
        assert np.abs(uniform).max() <= 0.55
        for axis in range(3):  # ten slabs of the cube along each axis, about 102 queries each
            counts = np.histogram(uniform[:, axis], bins=10, range=(-0.55, 0.55))[0]
            assert counts.min() > 60 and counts.max() < 150, counts
    assert len(proportions) == 4 and (1.0, 0.6, 0.4) not in proportions


def test_augment_option_draws_augmented_shapes_and_is_saved(shards, tmp_path, one_thread):
    """--augment: every training draw is moved (same arrays and sizes, other values, the same for the
    same seed), the option is saved with the run, and scoring still reads the shapes as stored."""
    plain = ShapeSamples(shards, 128, 128, 128)
    moved = ShapeSamples(shards, 128, 128, 128, augment=True)
    a, b = plain[(0, (0, 1))], moved[(0, (0, 1))]
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    assert not torch.equal(a["points"], b["points"])
    assert all(torch.equal(b[k], moved[(0, (0, 1))][k]) for k in b)
    out = tmp_path / "run"
    train_tokenizer.main(["--data", str(shards), "--out", str(out), "--steps", "2", *FAST, "--augment",
                          "--fresh-shapes", "2", "--val-every", "2"])
    assert json.loads((out / "train_config.json").read_text())["train"]["augment"] is True


def test_source_weight_repeats_a_source_and_is_saved(shards, tmp_path, one_thread, caplog):
    """--source-weight SOURCE=K trains with that source's shapes K times per pass (logged, saved with the
    run); a source no training shape has, or a weight below 1, is a clear error."""
    import logging

    args = ["--data", str(shards), "--steps", "1", *FAST, "--phase1-steps", "1"]
    with caplog.at_level(logging.INFO):
        train_tokenizer.main([*args, "--out", str(tmp_path / "a"), "--source-weight", "procedural=3"])
    assert "12 draws per pass over 4 shapes" in caplog.text
    assert '"procedural": 3' in (tmp_path / "a" / "train_config.json").read_text()
    with pytest.raises(SystemExit, match="no training shape has"):
        train_tokenizer.main([*args, "--out", str(tmp_path / "b"), "--source-weight", "sweethome3d=2"])
    with pytest.raises(SystemExit):
        train_tokenizer.parse_args([*args, "--out", str(tmp_path / "c"), "--source-weight", "procedural=0"])


def test_init_from_starts_a_new_run_from_matching_weights(shards, tmp_path, one_thread):
    """--init-from copies the tensors that fit (here: a model without the point MLP into one with it,
    which then computes the same function) and leaves the new ones as initialised."""
    args = ["--data", str(shards), *FAST]
    train_tokenizer.main([*args, "--out", str(tmp_path / "a"), "--steps", "3", "--model-override", "point_mlp=false"])
    source = VAT.from_pretrained(tmp_path / "a" / FINAL)
    train_tokenizer.main([*args, "--out", str(tmp_path / "b"), "--steps", "0", "--phase1-steps", "0",
                          "--init-from", str(tmp_path / "a" / FINAL)])
    started = VAT.from_pretrained(tmp_path / "b" / FINAL)
    assert started.encoder.embed.mlp is not None
    for key, value in source.state_dict().items():
        torch.testing.assert_close(started.state_dict()[key], value, rtol=0, atol=0)
    torch.manual_seed(0)
    p = torch.rand(1, 128, 3) - 0.5
    torch.testing.assert_close(started.encode(p, p), source.encode(p, p), rtol=0, atol=0)
    with pytest.raises(SystemExit, match="no tokenizer.safetensors"):
        train_tokenizer.main([*args, "--out", str(tmp_path / "c"), "--steps", "1", "--phase1-steps", "0",
                              "--init-from", str(tmp_path)])
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "tokenizer.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SystemExit, match="not a readable safetensors file"):
        train_tokenizer.main([*args, "--out", str(tmp_path / "d"), "--steps", "1", "--phase1-steps", "0",
                              "--init-from", str(tmp_path / "cut")])


@pytest.mark.slow
def test_ablation_trains_and_scores_every_arm(shards, tmp_path, one_thread, capsys):
    from vat.geometry.procedural import random_shape

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for seed in (5, 6):
        random_shape(seed).mesh.export(meshes / f"shape{seed}.ply")
    argv = ["--out", str(tmp_path / "abl"), "--meshes", str(meshes), "--arms", "baseline,residual-vq",
            "--resolution", "32", "--", "--data", str(shards), "--steps", "3", *FAST]
    records = ablate.main(argv)
    assert [r["arm"] for r in records] == ["baseline", "residual-vq"]
    assert VAT.from_pretrained(tmp_path / "abl" / "residual-vq" / "final").config.quantizer.kind == "residual-vq"
    for r in records:
        assert r["step"] == 3 and r["summary"]["meshes"] == 2
        assert 0 <= r["summary"].get("cs_iou", 0) <= 1
    printed = capsys.readouterr().out
    assert "| residual-vq | quantizer=residual-vq | 3 |" in printed
    assert (tmp_path / "abl" / "ablation.md").read_text().strip() == printed.strip()
    # Run again: both arms are finished and scored, so nothing is retrained or re-scored.
    stamp = (tmp_path / "abl" / "baseline" / "eval-recon.json").stat().st_mtime_ns
    assert [r["summary"] for r in ablate.main(argv)] == [r["summary"] for r in records]
    assert (tmp_path / "abl" / "baseline" / "eval-recon.json").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit):
        ablate.main(["--out", "o", "--meshes", "m", "--arms", "nope"])
    # A cut-off score file is scored again, not a traceback.
    (tmp_path / "abl" / "baseline" / "eval-recon.json").write_text('{"arm": "base')
    rescored = ablate.main(argv)[0]["summary"]
    assert (tmp_path / "abl" / "baseline" / "eval-recon.json").stat().st_mtime_ns != stamp
    assert {k: rescored.get(k) for k in ("iou", "cs_iou", "bytes")} == \
        {k: records[0]["summary"].get(k) for k in ("iou", "cs_iou", "bytes")}
    # Meshes that are not there stop it before any arm trains.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="--meshes"):
        ablate.main(["--out", str(tmp_path / "abl2"), "--meshes", str(empty), "--", "--data", str(shards)])
    assert not (tmp_path / "abl2").exists()


MICRO_GRID_MODEL = [f"--model-override={o}" for o in (
    "width=32", "heads=2", "num_latents=64", "encoder_layers=1", "decoder_layers=1", "codebook_size=64",
    "plane_channels=4", "mlp_hidden=16", "num_points=128")]


def test_fresh_queries_snapshots_and_seconds_are_recorded(shards, tmp_path, one_thread):
    """--fresh-shapes keeps 10% of every shape's queries out of training and scores training shapes
    on them; --max-shapes trains on the first N; the EMA is kept every --snapshot-every steps; the
    seconds of training survive a resume (the x axis of learning curves)."""
    samples = ShapeSamples(shards, 128, 128, 128, limit=3, reserve=0.1)
    fresh = samples.fresh_queries()
    assert len(samples) == 3 and len(samples.chunk_of_items()) == 3
    assert len(fresh) == 2 * 204 and fresh.min() == 2048 - 204 and fresh.max() == 4095
    for step in range(20):  # no training draw ever touches a reserved query
        item = samples.shards[step % 3]
        batch = samples[(step % 3, (0, step))]
        drawn = {tuple(q) for q in batch["queries"].numpy().round(6)}
        assert not drawn & {tuple(q) for q in item["query_points"][fresh].astype(np.float32).round(6)}
    out = tmp_path / "run"
    args = ["--data", str(shards), "--out", str(out), "--preset", "tiny-grid", *MICRO_GRID_MODEL, *FAST[len(MICRO_MODEL):],
            "--fresh-shapes", "2", "--max-shapes", "3", "--val-every", "2", "--snapshot-every", "2"]
    first = train_tokenizer.main([*args, "--steps", "2"])
    # Step 2 ends phase 1: the codebook is not trained yet, so only the unquantised scores are taken.
    assert set(first["val"]) == {f"fresh_{k}" for k in ("iou_unquantized", "acc_unquantized", "bce_unquantized")}
    seconds = torch.load(out / CHECKPOINT, weights_only=True)["train_seconds"]
    second = train_tokenizer.main([*args, "--steps", "4"])
    assert second["start_step"] == 2 and {"fresh_iou", "fresh_iou_unquantized"} <= set(second["val"])
    assert torch.load(out / CHECKPOINT, weights_only=True)["train_seconds"] > seconds > 0
    snapshots = sorted(p.name for p in (out / SNAPSHOTS).iterdir())
    assert snapshots == ["step-0000002", "step-0000004"]
    assert VAT.from_pretrained(out / SNAPSHOTS / "step-0000004").config.locality == "grid"


@pytest.mark.slow
def test_decoder_only_prefix_training_keeps_the_tokens_and_scores_cs_iou(shards, tmp_path, one_thread):
    """--freeze-encoder --prefix-share trains the decoder on scale prefixes: the encoder, latent head
    and quantiser (so every token, and the fingerprint) stay as --init-from has them, the decoder
    moves, and phase-2 validation reports CS-IoU. A frozen encoder needs a trained one to start from."""
    grid_args = ["--data", str(shards), "--val-data", str(shards), "--preset", "tiny-grid", *MICRO_GRID_MODEL,
                 *FAST[len(MICRO_MODEL):], "--val-shapes", "2"]
    train_tokenizer.main([*grid_args, "--out", str(tmp_path / "a"), "--steps", "3"])
    source = VAT.from_pretrained(tmp_path / "a" / FINAL)
    result = train_tokenizer.main([*grid_args, "--out", str(tmp_path / "b"), "--steps", "4", "--val-every", "4",
                                   "--phase1-steps", "0", "--init-from", str(tmp_path / "a" / FINAL),
                                   "--freeze-encoder", "--prefix-share", "0.5", "--lr", "1e-2",
                                   "--model-override=grid_up_levels=3", "--model-override=grid_cubic_levels=true"])
    tuned = VAT.from_pretrained(tmp_path / "b" / FINAL)
    assert 0.0 <= result["val"]["cs_iou"] <= 1.0 and "iou" in result["val"]
    assert (tuned.config.decoder.up_levels, tuned.config.decoder.cubic_levels) == (3, True)  # a finer decoder
    before, after = source.state_dict(), tuned.state_dict()
    moved = {key.split(".")[0] for key in before
             if key not in after or before[key].shape != after[key].shape or not torch.equal(before[key], after[key])}
    assert moved == {"field", "from_latent"}
    torch.manual_seed(0)
    p = torch.rand(2, 128, 3) - 0.5
    for a, b in zip(source.encode(p, p), tuned.encode(p, p)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert source.fingerprint() == tuned.fingerprint()
    # --steps 0 from trained weights validates the starting model quantised, as it tokenizes.
    start = train_tokenizer.main([*grid_args, "--out", str(tmp_path / "z"), "--steps", "0", "--phase1-steps", "0",
                                  "--init-from", str(tmp_path / "a" / FINAL), "--freeze-encoder"])
    assert 0.0 <= start["val"]["iou"] <= 1.0 and "cs_iou" in start["val"]
    with pytest.raises(SystemExit):  # argparse: one line, no traceback
        train_tokenizer.main([*grid_args, "--out", str(tmp_path / "c"), "--steps", "1", "--freeze-encoder"])
    # --token-noise: the decoder learns from tokens with near misses; the tokens themselves stay as they were
    train_tokenizer.main([*grid_args, "--out", str(tmp_path / "n"), "--steps", "2", "--phase1-steps", "0",
                          "--init-from", str(tmp_path / "a" / FINAL), "--freeze-encoder", "--token-noise", "0.5",
                          "--lr", "1e-2"])
    noisy = VAT.from_pretrained(tmp_path / "n" / FINAL)
    assert noisy.fingerprint() == source.fingerprint()
    assert {key.split(".")[0] for key, value in noisy.state_dict().items()
            if not torch.equal(before[key], value)} == {"field", "from_latent"}
    with pytest.raises(SystemExit):  # wrong tokens would train the encoder too
        train_tokenizer.main([*grid_args, "--out", str(tmp_path / "m"), "--steps", "1", "--token-noise", "0.5"])
    with pytest.raises(SystemExit, match="another encoder config or codebook"):  # the tokens would change
        train_tokenizer.main([*grid_args, "--out", str(tmp_path / "e"), "--steps", "1", "--phase1-steps", "0",
                              "--init-from", str(tmp_path / "a" / FINAL), "--freeze-encoder",
                              "--model-override=num_frequencies=4"])
    # Without --freeze-encoder, a run that starts quantised from trained weights keeps their codebook
    # at its first step (no refill from one batch's latents); only the training steps move it.
    train_tokenizer.main([*grid_args, "--out", str(tmp_path / "d"), "--steps", "1", "--phase1-steps", "0",
                          "--restart-every", "0", "--lr", "1e-9", "--init-from", str(tmp_path / "a" / FINAL)])
    joint = VAT.from_pretrained(tmp_path / "d" / FINAL)
    torch.testing.assert_close(joint.quantizer.codebook.weight, source.quantizer.codebook.weight, rtol=0, atol=1e-6)


def test_forward_decodes_each_shape_from_its_own_scale_prefix():
    """VAT.forward(scales_B=...) gives shape b the logits of decoding its first scales_B[b] scales
    (as decode_indices does for a prefix); all S scales are the plain forward."""
    from vat.models.tokenizer import PRESETS
    from dataclasses import replace
    torch.manual_seed(0)
    model = VAT(replace(PRESETS["tiny-grid"], width=32, heads=2, num_latents=64, encoder_layers=1, decoder_layers=1,
                        codebook_size=64, plane_channels=4, mlp_hidden=16, num_points=128, scale_sides=())).eval()
    p, q = torch.rand(3, 128, 3) - 0.5, torch.rand(3, 50, 3) - 0.5
    S = len(model.config.scale_sides)
    scales = torch.tensor([1, 3, S])
    with torch.no_grad():
        mixed = model(p, p, q, scales_B=scales)["logits"]
        full = model(p, p, q)["logits"]
        indices = model.encode(p, p)
        for b, s in enumerate(scales.tolist()):
            prefix = model.field.query(model.decode_indices([i[b:b + 1] for i in indices[:s]]), q[b:b + 1])[0]
            torch.testing.assert_close(mixed[b], prefix, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mixed[2], full[2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0], full[0], atol=1e-3)
    # token_noise_B: shape b decodes its tokens with near misses at that rate; at rate 0 its own tokens
    with torch.no_grad():
        noisy = model(p, p, q, scales_B=scales, token_noise_B=torch.tensor([0.0, 1.0, 1.0]))["logits"]
    torch.testing.assert_close(noisy[0], mixed[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(noisy[1], mixed[1], atol=1e-3) and not torch.allclose(noisy[2], mixed[2], atol=1e-3)


def test_surface_levels_are_fitted_on_training_shapes_per_prefix_and_move_with_the_field(shards, tmp_path,
                                                                                         one_thread):
    """The exported model's surface levels are the logits whose sign gives the best IoU on training
    shapes, one per decoded prefix of scales: raising every logit by 1 raises each level by 1, and
    query() thresholds a prefix's field at its own level."""
    torch.manual_seed(0)
    args = ["--data", str(shards), "--out", str(tmp_path / "run"), "--steps", "3", "--calibrate-shapes", "4", *FAST]
    train_tokenizer.main(args)
    model = VAT.from_pretrained(tmp_path / "run" / FINAL)
    shapes = ShapeSamples(shards, 128, 128, 128)
    levels = calibrate_surface(model, shapes, 4, torch.device("cpu"), bf16=False, quantized=True)
    assert len(levels) == len(model.config.scale_sides) and all(-3 <= v <= 3 for v in levels)
    assert model.config.surface.levels == pytest.approx(levels, abs=0.051)
    assert model.config.to_flat()["surface_logit"] == pytest.approx(levels[-1], abs=0.051)
    with torch.no_grad():
        model.field.mlp[-1].bias += 1.0
    shifted = calibrate_surface(model, shapes, 4, torch.device("cpu"), bf16=False, quantized=True)
    assert shifted == pytest.approx([v + 1.0 for v in levels], abs=0.051)
    assert len(calibrate_surface(model, shapes, 4, torch.device("cpu"), bf16=False,
                                                 quantized=False)) == 1
    model.config.surface = SurfaceLevels(tuple(float(s) for s in range(1, len(levels) + 1)))  # distinct, to tell them apart
    p = torch.rand(1, 128, 3) - 0.5
    indices = model.encode(p, p)
    for s in (1, len(indices) // 2, len(indices)):
        planes = model.decode_indices(indices[:s])
        torch.testing.assert_close(model.query(planes, p, s), model.field.query(planes, p) - s)
    torch.testing.assert_close(model.query(planes, p), model.field.query(planes, p) - len(indices))
    with pytest.raises(ValueError, match="scales"):
        model.surface_level(len(indices) + 1)
    model.config.surface = SurfaceLevels.fitted([0.7], len(indices))  # one level (an unquantised fit) for every prefix
    for s in (1, len(indices)):
        torch.testing.assert_close(model.query(planes, p, s), model.field.query(planes, p) - 0.7)
    model.config.surface = SurfaceLevels()  # none fitted: the raw logits
    torch.testing.assert_close(model.query(planes, p, 1), model.field.query(planes, p))


def test_calibrate_tokenizer_fits_levels_of_a_trained_folder_and_keeps_its_tokens(shards, tmp_path, one_thread):
    """train/calibrate_tokenizer.py: per-prefix levels into a copy of the folder (or in place); the
    weights file and the fingerprint stay the same, the source folder is untouched by --out."""
    calibrate = load_script("calibrate_tokenizer")
    torch.manual_seed(0)
    source = tmp_path / "model"
    model = VAT(TokenizerConfig(**{k: int(v) for k, v in (o.removeprefix("--model-override=").split("=")
                                                          for o in MICRO_MODEL)}))
    model.save_pretrained(source)
    (source / "generator_config.json").write_text("{}\n")  # other parts of a checkpoint folder come along
    before = (source / "tokenizer_config.json").read_text()
    levels = calibrate.main(["--checkpoint", str(source), "--data", str(shards), "--shapes", "3",
                             "--out", str(tmp_path / "copy")])
    copy = VAT.from_pretrained(tmp_path / "copy")
    assert len(levels) == len(copy.config.scale_sides) and copy.config.surface.levels == pytest.approx(levels)
    assert copy.fingerprint() == model.fingerprint()
    assert (tmp_path / "copy" / "tokenizer.safetensors").read_bytes() == (source / "tokenizer.safetensors").read_bytes()
    assert (tmp_path / "copy" / "generator_config.json").is_file()
    assert (source / "tokenizer_config.json").read_text() == before
    assert calibrate.main(["--checkpoint", str(source), "--data", str(shards), "--shapes", "3"]) == levels
    assert VAT.from_pretrained(source).config.surface.levels == pytest.approx(levels)
    with pytest.raises(SystemExit, match="no tokenizer"):
        calibrate.main(["--checkpoint", str(tmp_path), "--data", str(shards)])


@pytest.mark.slow
def test_learning_curves_train_arms_and_draw_them(shards, tmp_path, one_thread):
    out = tmp_path / "curves"
    arms = "paper=tiny,grid=tiny-grid+num_latents=64+plane_channels=4"
    common = ["--data", str(shards), "--val-data", str(shards), "--steps", "2", "--val-every", "1", "--val-shapes", "2",
              *[o for o in MICRO_MODEL if "num_queries" not in o and "triplane" not in o and "plane_channels" not in o
                and "num_latents" not in o], *FAST[len(MICRO_MODEL):]]
    records = curves.main(["--out", str(out), "--arms", arms, "--", *common])
    assert [r["arm"] for r in records] == ["paper", "grid"]
    for r in records:
        assert [row["step"] for row in r["rows"]] == [1, 2]
        assert all(0 <= row["val/iou_unquantized"] <= 1 and row["time/train_seconds"] > 0 for row in r["rows"])
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| grid | 2 |" in (out / "curves.md").read_text()
    # Again, report only: the same table from the logs, nothing retrained.
    again = curves.main(["--out", str(out), "--arms", arms, "--report-only"])
    assert again == records
    with pytest.raises(SystemExit):
        curves.main(["--out", str(out), "--arms", "x=nope"])
    one = curves.main(["--out", str(tmp_path / "one"), "--arms", "grid=tiny-grid+width=32+heads=2+plane_channels=4"
                       "+mlp_hidden=16+num_latents=64+num_points=128", "--one-shape", str(shards), "--one-shape-steps", "30"])[0]
    assert 0 <= one["fresh_iou"] <= 1 and one["train_bce"] < 0.7


def test_ablation_table_counts_paired_wins_per_mesh():

    def record(arm, scores):
        items = [{"mesh": m, "cs_iou": v} for m, v in scores.items() if v is not None]
        return {"arm": arm, "overrides": [], "step": 1, "items": items,
                "summary": {"meshes": len(scores), "failed": sum(v is None for v in scores.values())}}

    base = record("baseline", {"a": 0.5, "b": 0.2, "c": 0.9, "d": 0.4})
    other = record("pooling", {"a": 0.4, "b": 0.3, "c": 0.1, "d": None})  # d failed: not a pair
    assert ablate.paired(base, other) == "2 of 3"
    rows = ablate.table([base, other]).splitlines()
    assert rows[0].endswith("| baseline higher CS-IoU | failed |")
    assert rows[2].endswith("| - | 0 of 4 |") and rows[3].endswith("| 2 of 3 | 1 of 4 |")


def test_cli_reads_config_files_and_overrides(tmp_path):
    config_file = tmp_path / "c.json"
    config_file.write_text('{"preset": "tiny", "lr": 0.002, "model_overrides": {"width": 64, "heads": 2}}')
    config = train_tokenizer.parse_args(["--data", "d", "--out", "o", "--config", str(config_file), "--lr", "0.003",
                                         "--model-override", "num_latents=64", "--model-override", "compression=pooling"])
    assert config.lr == 0.003 and config.preset == "tiny"
    model = config.model_config()
    assert (model.width, model.heads, model.num_latents, model.encoder.compression) == (64, 2, 64, "pooling")
    assert model.scale_sides[-1] == 8  # the schedule follows the overridden K
    with pytest.raises(SystemExit):
        train_tokenizer.parse_args(["--out", "o"])


# The tiny preset's architecture with fewer layers, channels and points, so that a few hundred
# steps fit the budget: still in-context compression, VVQ over the 10 scales of K = 256 with a
# 1024-code codebook, and the triplane decoder.
OVERFIT_MODEL = [f"--model-override={o}" for o in (
    "width=64", "num_queries=64", "encoder_layers=1", "decoder_layers=1", "triplane_tokens=4", "num_points=256")]


@pytest.fixture(scope="module")
def overfit(shards, tmp_path_factory):
    """The tiny architecture trained for a few hundred steps on the 4 procedural shapes (seeds 0-3)."""
    out = tmp_path_factory.mktemp("overfit")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models on a shared 2-core machine train faster on one thread
    start = time.perf_counter()
    summary = train_tokenizer.main([
        "--data", str(shards), "--val-data", str(shards), "--out", str(out), "--preset", "tiny",
        *OVERFIT_MODEL, "--steps", "500", "--phase1-steps", "300", "--restart-every", "50", "--batch-size", "4",
        "--uniform-queries", "1024", "--near-queries", "1024", "--lr", "3e-3", "--warmup-steps", "20",
        "--ema-decay", "0.9", "--val-every", "500", "--save-every", "500", "--log-every", "100", "--workers", "0",
    ])
    torch.set_num_threads(threads)
    return summary, out / "final", time.perf_counter() - start


@pytest.mark.slow
def test_overfits_four_shapes_with_quantisation(overfit):
    summary, _, seconds = overfit
    # Measured on each shape's own 2048 uniform + 2048 near-surface training queries (inside =
    # occupancy > 0.5): this checks that the whole quantised model fits its data. On fresh
    # queries the same run is far lower (about 0.45): 500 steps do not learn the shapes.
    assert summary["val"]["iou"] >= 0.9, (summary["val"], seconds)


@pytest.mark.slow
def test_codec_commands_on_the_trained_model(overfit, tmp_path):
    """vat encode / decode / eval-recon end to end on a tokenizer that has learned the shapes."""
    import json

    from vat.cli import main as vat
    from vat.geometry import load_mesh
    from vat.geometry.procedural import random_shape

    _, checkpoint, _ = overfit
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    random_shape(1).mesh.export(meshes / "shape1.ply")
    common = ["--checkpoint", str(checkpoint)]
    assert vat(["encode", str(meshes / "shape1.ply"), "-o", str(tmp_path / "s.vat"), *common]) == 0
    size = (tmp_path / "s.vat").stat().st_size
    # header, 10 scale sides, placement (float16 or float32), 680 tokens x 10 bits, CRC
    assert size - (12 + 10 + (680 * 10 + 7) // 8 + 4) in (8, 16)
    assert vat(["decode", str(tmp_path / "s.vat"), "-o", str(tmp_path / "s.glb"), "--resolution", "96",
                "--unit-cube", *common]) == 0
    decoded = load_mesh(tmp_path / "s.glb")
    assert len(decoded.faces) > 0 and (abs(decoded.bounds) <= 0.51).all()  # in the unit cube (+ grid margin)
    assert vat(["decode", str(tmp_path / "s.vat"), "-o", str(tmp_path / "c.obj"), "--scale", "3",
                "--resolution", "32", *common]) in (0, 1)  # 3 of 10 scales may hold no surface yet: then a message
    report = tmp_path / "recon.json"
    assert vat(["eval-recon", "--meshes", str(meshes), "--resolution", "64", "--json", str(report), *common]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["bytes"] == size and summary["failed"] == 0 and 0 < summary["cs_iou"] <= 1
    assert len(summary["iou_per_scale"]) == 10 and summary["iou_per_scale"][-1] == pytest.approx(summary["iou"])
    for key in ("f_score", "chamfer", "acc", "near_acc", "ratio", "draco_f_score", "draco_bytes", "voxel_f_score",
                "voxel_bytes"):
        assert key in summary
    assert summary["draco_bytes"] <= size and summary["voxel_bytes"] <= size


def _reduce_meters_on_rank(rank: int, init_file: str, out: str) -> None:
    import json

    import torch.distributed as dist

    from vat.training.meters import Meters

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    meters = Meters("loss", "rare", "shapes")
    for value in ((0.25, 0.5) if rank == 0 else (1.0,)):
        meters.add(loss=value, shapes=1)
    if rank == 1:
        meters.add(rare=3.0)  # a name only one rank adds to still reduces in step with the others
    meters.all_reduce()
    Path(out, f"{rank}.json").write_text(json.dumps({"sums": meters.sums, "means": meters.means(["loss"], "shapes")}))
    dist.destroy_process_group()


def test_meters_sum_by_name():
    """Meters: sums by name, means over a count (a count of 0 divides by 1), an undeclared name is an
    error, and one process has nothing to reduce."""
    from vat.training.meters import Meters

    meters = Meters("iou", "shapes")
    meters.add(iou=0.5, shapes=1)
    meters.add(iou=0.25, shapes=1)
    assert meters["iou"] == 0.75 and meters.means(["iou"], count="shapes") == {"iou": 0.375}
    assert Meters("iou", "shapes").means(["iou"], count="shapes") == {"iou": 0.0}
    with pytest.raises(KeyError, match="not one of the declared"):
        meters.add(acc=1.0)
    assert meters.all_reduce() is meters and meters["iou"] == 0.75  # one process: nothing to reduce


@pytest.mark.slow
def test_meters_all_reduce_by_name_across_ranks(tmp_path):
    """Under torch.distributed (2 gloo ranks, spawned) every rank ends with the sums of all of them,
    also of a name only one rank added to."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_reduce_meters_on_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result == {"sums": {"loss": 1.75, "rare": 3.0, "shapes": 3.0}, "means": {"loss": 1.75 / 3}}


def test_both_arm_runners_share_one_arm_syntax(tmp_path):
    """vat.training.arms: an arm is NAME=PRESET[+field=value...] in both runners; ablate_tokenizer.py
    also takes its ARMS by name (their switch on the shared preset). Per-arm options among the shared
    ones, unknown presets or names and repeated names end in a one-line usage error."""
    from vat.training.arms import Arm

    args, train_args = ablate.parse_args(["--out", str(tmp_path), "--meshes", "m", "--arms",
                                          "baseline,pooling,wide=tiny+width=64+heads=2", "--", "--data", "d"])
    assert args.arms == [Arm("baseline", None, []), Arm("pooling", None, ["compression=pooling"]),
                         Arm("wide", "tiny", ["width=64", "heads=2"])]
    assert train_args == ["--data", "d"]
    assert args.arms[1].train_args(tmp_path) == ["--model-override=compression=pooling", "--out", str(tmp_path / "pooling")]
    assert args.arms[2].train_args(tmp_path) == ["--preset", "tiny", "--model-override=width=64",
                                                 "--model-override=heads=2", "--out", str(tmp_path / "wide")]
    curve_args, _ = curves.parse_args(["--out", str(tmp_path), "--arms", "paper=tiny,grid=tiny-grid+plane_channels=32"])
    assert curve_args.arms == [Arm("paper", "tiny", []), Arm("grid", "tiny-grid", ["plane_channels=32"])]
    # Only ablate_tokenizer.py's named arms share --preset; an arm with its own preset sets it per arm.
    assert ablate.parse_args(["--out", "o", "--meshes", "m", "--arms", "baseline", "--", "--preset", "tiny-grid"])[1] \
        == ["--preset", "tiny-grid"]
    for bad in (["--arms", "baseline,wide=tiny", "--", "--preset", "tiny"], ["--arms", "nope"],
                ["--arms", "a=nope"], ["--arms", "a=tiny,a=tiny-grid"], ["--", "--out", "x"]):
        with pytest.raises(SystemExit):
            ablate.parse_args(["--out", "o", "--meshes", "m", *bad])
    with pytest.raises(SystemExit):
        curves.parse_args(["--out", "o", "--arms", "baseline"])  # no named arms there: NAME=PRESET
