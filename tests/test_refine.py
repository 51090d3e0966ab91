"""Content-adaptive encoding (MeshCodec.encode(refine=N), vat.refine): the tokens fitted to the mesh keep the
file's size, are reproducible, never do worse than the unrefined tokens on the encoder's check, and learn
from points of the encoder's own seed."""

import numpy as np
import pytest
import trimesh

from vat.geometry.io import normalize_mesh
from vat.metrics import protocol_queries
from vat.pipeline import SEARCH_QUERIES, SEARCH_SEED_OFFSET, MeshCodec
from vat.refine import REFINE_SEED_OFFSET


@pytest.fixture(scope="module")
def codec(tiny_checkpoint):
    return MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def box():
    return trimesh.creation.box((0.8, 0.3, 0.5)).apply_translation((2, 0, 0))


@pytest.mark.slow
def test_refinement_keeps_the_size_and_never_loses_on_the_check(codec, box):
    plain = codec.encode(box, raw=True)
    refined = codec.encode(box, raw=True, refine=15)
    assert len(refined.data) == len(plain.data)
    r = refined.refined
    assert 1 <= r.steps <= 15 and r.iou_after >= r.iou_before
    check = protocol_queries(normalize_mesh(box)[0], *SEARCH_QUERIES, seed=SEARCH_SEED_OFFSET)
    from vat.metrics import iou

    measured = iou(codec.occupancy_fn(refined.indices)(check["points"]) > 0, check["inside"])
    assert measured == pytest.approx(r.iou_after)
    if r.kept:
        assert r.iou_after > r.iou_before and any((a != b).any() for a, b in zip(refined.indices, plain.indices))
    else:
        assert all((a == b).all() for a, b in zip(refined.indices, plain.indices))
    assert codec.encode(box, raw=True, refine=15).data == refined.data  # reproducible


@pytest.mark.slow
def test_a_refinement_that_only_hurts_keeps_the_unrefined_tokens(codec, box, monkeypatch):
    """When every refined candidate checks worse than the encoder's own tokens (here the check is made to say
    so: the unrefined tokens score 1, any other 0), the file holds the encoder's own tokens."""
    import vat.refine

    plain = codec.encode(box, raw=True)
    monkeypatch.setattr(vat.refine, "_check_iou", lambda codec, indices, check: float(
        all((a == b).all() for a, b in zip(indices, plain.indices))))
    refined = codec.encode(box, raw=True, refine=30)
    assert not refined.refined.kept and refined.refined.iou_after == refined.refined.iou_before == 1.0
    assert refined.data == plain.data
    assert refined.refined.steps == vat.refine.REFINE_CHECK_EVERY * vat.refine.REFINE_PATIENCE  # stopped early


def test_the_refinement_fits_points_of_its_own_seed(codec, box):
    """Its points are neither the protocol's queries nor the check's (different seeds, disjoint points)."""
    unit = normalize_mesh(box)[0]
    own = protocol_queries(unit, 2000, 2000, seed=REFINE_SEED_OFFSET)["points"]
    for other in (protocol_queries(unit, 2000, 2000, seed=0)["points"],
                  protocol_queries(unit, 2000, 2000, seed=SEARCH_SEED_OFFSET)["points"]):
        assert not (own[:, None, :] == other[None, :500, :]).all(-1).any()


def test_refinement_combines_with_the_search_and_a_byte_budget(codec, box):
    encoded = codec.encode(box, search=3, refine=5, max_bytes=90)
    assert len(encoded.data) <= 90 and encoded.refined is not None
    assert len(codec.read(encoded.data)) == len(encoded.indices)
    with pytest.raises(Exception, match="refine"):
        codec.encode(box, refine=-1)
    assert np.isfinite(encoded.refined.iou_after)


def test_the_default_schedule_is_the_full_decode(codec, box):
    """Without a schedule, encode(refine=N) fits the full decode as before schedules existed: the same file as
    schedule "full" (one decode of all scales a step, no prefix drawn); an unknown schedule is a VatError."""
    import vat.refine

    default = codec.encode(box, raw=True, refine=5)
    assert codec.encode(box, raw=True, refine=5, refine_schedule="full").data == default.data
    assert vat.refine._step_prefixes("full", 1, 5, (1, 2, 3, 4), None) == [None]
    from vat.errors import VatError

    with pytest.raises(VatError, match="schedule"):
        codec.encode(box, refine=5, refine_schedule="fine-first")


def test_a_prefix_decode_is_the_files_prefix_with_a_gradient(codec):
    """The straight-through prefix the schedules fit decodes to what a file of that prefix decodes to, and its
    loss moves the latent."""
    import torch

    from vat.refine import _decoded_logits

    tokenizer, S = codec.tokenizer, codec.num_scales
    z = torch.randn(1, codec.config.scale_sides[-1] ** 2, codec.config.latent_channels,
                    generator=torch.Generator().manual_seed(0))
    z.requires_grad_(True)
    points = torch.rand(64, 3) - 0.5
    logits = _decoded_logits(tokenizer, z, [None, max(1, S - 1)], points)
    with torch.no_grad():
        idx = tokenizer.quantize(z)
        for row, s in ((0, S), (1, max(1, S - 1))):
            expected = tokenizer.query(tokenizer.decode_indices(idx[:s]), points[None], s)[0]
            assert torch.allclose(logits[row], expected, atol=1e-4)
    logits[1].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_the_schedules_fit_the_prefixes_they_name():
    import torch

    from vat.refine import COARSE_SCALES, _step_prefixes

    sides = tuple(range(1, 11))
    assert [_step_prefixes("coarse-first", s, 20, sides, None) for s in (1, 10, 11, 20)] == \
        [[COARSE_SCALES]] * 2 + [[None]] * 2
    rng = torch.Generator().manual_seed(0)
    drawn = {tuple(_step_prefixes("prefixes", 1, 20, sides, rng)) for _ in range(200)}
    assert {d[0] for d in drawn} == {None} and {d[1] for d in drawn} == set(range(5, 10))
    assert _step_prefixes("coarse-first", 1, 20, (4,), None) == [None]  # one scale: nothing coarser to fit


@pytest.mark.parametrize("schedule", ["coarse-first", "prefixes"])
def test_a_per_scale_schedule_keeps_the_guard(codec, box, schedule):
    """Each schedule runs (prefix decodes get a gradient: the latent moves), keeps the file's size and never
    keeps tokens that check worse on the full decode than the unrefined ones."""
    plain = codec.encode(box, raw=True)
    refined = codec.encode(box, raw=True, refine=10, refine_schedule=schedule)
    r = refined.refined
    assert len(refined.data) == len(plain.data) and 1 <= r.steps <= 10 and r.iou_after >= r.iou_before
    from vat.metrics import iou

    check = protocol_queries(normalize_mesh(box)[0], *SEARCH_QUERIES, seed=SEARCH_SEED_OFFSET)
    assert iou(codec.occupancy_fn(refined.indices)(check["points"]) > 0, check["inside"]) == pytest.approx(r.iou_after)
    if not r.kept:
        assert refined.data == plain.data


def test_the_schedules_script_measures_each_prefix_and_merges_runs(tiny_checkpoint, tmp_path, monkeypatch):
    """scripts/refine_schedules.py: one row per variant with each prefix's bytes and F-score (a refinement not
    kept scores as the unrefined tokens), and runs merge into one table."""
    import json
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "refine_schedules.py"
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.5, 0.3, 0.4)).apply_translation((3, 0, 0)).export(meshes / "box.ply")
    common = ["--prefixes", "3,6", "--schedules", "full,prefixes"]
    monkeypatch.setattr(sys, "argv", [str(script), "--checkpoint", str(tiny_checkpoint), "--meshes", str(meshes),
                                      "--resolution", "16", "--search", "1", "--refine", "2",
                                      "--json", str(tmp_path / "a.json"), *common])
    runpy.run_path(str(script), run_name="__main__")
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["none", "full", "prefixes"]
    for r in rows:
        assert r["bytes_3"] < r["bytes_6"] and 0 <= r["f_score_6"] <= 1
        if not r.get("kept", True):
            assert {k: r[k] for k in ("bytes_6", "f_score_6")} == {k: rows[0][k] for k in ("bytes_6", "f_score_6")}
    monkeypatch.setattr(sys, "argv", [str(script), "--from-json", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                                      "--json", str(tmp_path / "m.json"), *common])
    runpy.run_path(str(script), run_name="__main__")
    assert len(json.loads((tmp_path / "m.json").read_text())["rows"]) == 6


@pytest.mark.parametrize("fast", [False, True])
def test_the_decoder_autocasts_to_bf16_only_where_that_is_fast(codec, box, monkeypatch, fast):
    """bf16 autocast only where fast_bf16 says so: on a CPU without native bf16 (AVX2 only), bf16 3D
    convolutions are reference kernels, and 20 steps took 170 s instead of 8 s in float32."""
    import torch

    import vat.refine
    from vat.training.schedule import uses_bf16

    seen, decoded = [], vat.refine._decoded_logits

    def spy(*args):
        logits = decoded(*args)
        seen.append(logits.dtype)
        return logits

    monkeypatch.setattr(vat.refine, "fast_bf16", lambda device: fast)
    monkeypatch.setattr(vat.refine, "_decoded_logits", spy)
    codec.encode(box, raw=True, refine=2)
    assert seen == [torch.bfloat16 if fast else torch.float32] * 2
    monkeypatch.setattr("vat.training.schedule.fast_bf16", lambda device: fast)
    assert uses_bf16("auto", torch.device("cpu")) is fast and uses_bf16("fp32", torch.device("cpu")) is False
