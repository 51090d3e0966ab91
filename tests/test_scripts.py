"""scripts/: the README figure maker runs end to end on a tiny random checkpoint."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_object_image
from PIL import Image

from vat.errors import VatError
from vat.geometry.inside import contains
from vat.geometry.io import export_mesh, load_mesh
from vat.metrics import compare_meshes
from vat.geometry.procedural import random_shape

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "coarse_to_fine.py"


def run_script(*argv):
    old = sys.argv
    sys.argv = [str(SCRIPT), *map(str, argv)]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old


@pytest.fixture(autouse=True)
def can_render():
    from vat.geometry.render import render_views

    try:
        render_views(random_shape(0).mesh, 1, 16)
    except VatError as exc:
        pytest.skip(f"cannot render here: {exc}")


def test_coarse_to_fine_of_a_generation(tiny_checkpoint, tmp_path):
    image = draw_object_image(tmp_path / "in.png")
    run_script(image, "-o", tmp_path / "fig.png", "--checkpoint", tiny_checkpoint, "--resolution", "24", "--size", "32")
    with Image.open(tmp_path / "fig.png") as figure:
        from vat.models.tokenizer import VAT

        scales = len(VAT.from_pretrained(tiny_checkpoint).config.scale_sides)
        assert figure.size == (32 * (scales + 1), 32 + 28)


def test_coarse_to_fine_of_several_images_at_chosen_scales(tiny_checkpoint, tmp_path):
    images = [draw_object_image(tmp_path / f"in{k}.png", size=(200 + 40 * k, 200)) for k in range(2)]
    run_script(*images, "--scales", "1,3", "-o", tmp_path / "fig.png", "--checkpoint", tiny_checkpoint,
               "--resolution", "24", "--size", "32")
    assert Image.open(tmp_path / "fig.png").size == (32 * 3, 2 * (32 + 28))


def test_coarse_to_fine_of_a_mesh(tiny_checkpoint, tmp_path):
    export_mesh(random_shape(3).mesh, tmp_path / "shape.ply")
    run_script("--mesh", tmp_path / "shape.ply", "-o", tmp_path / "fig.png", "--checkpoint", tiny_checkpoint,
               "--resolution", "24", "--size", "32")
    assert Image.open(tmp_path / "fig.png").size[1] == 60
    with pytest.raises(SystemExit):
        run_script("-o", tmp_path / "x.png")  # neither an image nor a mesh


def test_test_shapes_encode_decode_and_score(tiny_checkpoint, tmp_path):
    """scripts/test_shapes.py: both shapes are written watertight, go through the codec and get scored."""
    script = SCRIPT.parent / "test_shapes.py"
    namespace = runpy.run_path(str(script))
    shapes = namespace["test_shapes"]()
    assert set(shapes) == {"icosphere", "box-with-hole"} and all(m.is_watertight for m in shapes.values())
    # The hole goes through: a vertical line through the centre stays outside the solid.
    inside = contains(shapes["box-with-hole"], np.array([[0.0, 0.0, -0.15], [0.0, 0.0, 0.0], [0.0, 0.0, 0.15],
                                                         [0.25, 0.25, 0.0]]))
    assert inside.tolist() == [False, False, False, True]
    scores = namespace["main"](["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                                "--resolution", "32", "--json", str(tmp_path / "scores.json")])
    assert set(scores) == set(shapes) and all(0.0 <= s["f_score"] <= 1.0 for s in scores.values())
    for name in shapes:
        assert (tmp_path / "out" / f"{name}.vat").stat().st_size == scores[name]["bytes"]
        # Scored in the protocol's frame: the written shape is in the unit cube, and comparing the written
        # files as `vat compare` does (normalising by the shape) gives the script's number.
        written, decoded = (load_mesh(tmp_path / "out" / f"{name}{suffix}.ply") for suffix in ("", "-decoded"))
        np.testing.assert_allclose(written.bounds.sum(0), 0.0, atol=1e-6)
        assert np.ptp(written.bounds, axis=0).max() == pytest.approx(1.0)
        by_hand = compare_meshes(written, decoded)
        assert by_hand["chamfer"] == pytest.approx(scores[name]["chamfer"], rel=0.02)
        assert by_hand["f_score"] == pytest.approx(scores[name]["f_score"], abs=0.02)


def test_rate_distortion_measures_prefixes_and_merges_runs(tiny_checkpoint, tmp_path, monkeypatch):
    """scripts/rate_distortion.py: every prefix's file is measured beside the baselines at its bytes, and
    runs merge into one table and figure."""
    import json

    import trimesh

    script = SCRIPT.parent / "rate_distortion.py"
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.5, 0.3, 0.4)).apply_translation((3, 0, 0)).export(meshes / "box.ply")
    monkeypatch.setattr(sys, "argv", [str(script), "--checkpoint", str(tiny_checkpoint), "--meshes", str(meshes),
                                      "--prefixes", "3,6", "--resolution", "16", "--refine", "2",
                                      "--json", str(tmp_path / "a.json")])
    runpy.run_path(str(script), run_name="__main__")
    run = json.loads((tmp_path / "a.json").read_text())
    rows = run["items"][0]["prefixes"]
    assert rows["3"]["vat_bytes"] < rows["6"]["vat_bytes"] and rows["6"]["voxel_bytes"] <= rows["6"]["vat_bytes"]
    monkeypatch.setattr(sys, "argv", [str(script), "--from-json", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                                      "--prefixes", "3,6", "--json", str(tmp_path / "m.json"),
                                      "--plot", str(tmp_path / "rd.png")])
    runpy.run_path(str(script), run_name="__main__")
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["meshes"] == 2 and merged["summary"]["6"]["vat_bytes"] == rows["6"]["vat_bytes"]
    assert Image.open(tmp_path / "rd.png").size[0] > 100
    # Without --prefixes a merge takes the prefixes its items were measured at; one they lack is refused.
    monkeypatch.setattr(sys, "argv", [str(script), "--from-json", str(tmp_path / "a.json"),
                                      "--json", str(tmp_path / "n.json")])
    runpy.run_path(str(script), run_name="__main__")
    assert sorted(json.loads((tmp_path / "n.json").read_text())["summary"]) == ["3", "6"]
    monkeypatch.setattr(sys, "argv", [str(script), "--from-json", str(tmp_path / "a.json"), "--prefixes", "4,6",
                                      "--json", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()


def test_selection_study_scores_every_sample_and_resumes(tiny_checkpoint, tmp_path, capsys):
    """scripts/selection_study.py: one row per mesh with every score per sample; a rerun adds nothing; no rule
    keeps better samples than the best F-score does."""
    import json

    import trimesh

    namespace = runpy.run_path(str(SCRIPT.parent / "selection_study.py"))
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.5, 0.3, 0.4)).export(meshes / "a-box.ply")
    trimesh.creation.icosphere(2).export(meshes / "b-ball.ply")
    argv = ["--checkpoint", str(tiny_checkpoint), "--meshes", str(meshes), "--samples", "3", "--resolution", "16",
            "--coarse-scales", "2", "--jsonl", str(tmp_path / "s.jsonl")]
    assert namespace["main"](argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [Path(r["mesh"]).name for r in rows] == ["a-box.ply", "b-ball.ply"]
    for row in rows:
        assert row["seeds"] == [0, 1, 2]
        for key in (*namespace["SCORES"], "f_score", "f_score_005", "chamfer"):
            assert len(row[key]) == 3, key
        assert all(0.0 <= f <= 1.0 for f in row["f_score"] + row["f_score_005"])
    assert namespace["main"](argv) == 0  # resumed: both meshes were done
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 2
    table = namespace["summary"](rows)
    ceiling = table["best F-score (ceiling)"]["f_score"]
    assert all(means["f_score"] <= ceiling + 1e-12 for means in table.values())
    assert table["seed alone"]["f_score"] == pytest.approx(np.mean([r["f_score"][0] for r in rows]))
    assert all(len(r["fused_top3"]) == len(r["fused_all"]) == 2 for r in rows)
    assert all(0.0 <= f <= 1.0 for r in rows for f in r["fused_top3"] + r["fused_all"])
    printed = capsys.readouterr().out
    assert "| best outline |" in printed and "| fused top3 |" in printed
    # A second pass with the outline's variants takes the F-scores from the first; a variant with the search's
    # own settings gives the search's score.
    second_pass = [*argv[:-1], str(tmp_path / "v.jsonl"), "--variants", "--reuse", str(tmp_path / "s.jsonl")]
    assert namespace["main"](second_pass) == 0
    again = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    for first, second in zip(rows, again):
        assert second["f_score"] == first["f_score"] and second["outline"] == pytest.approx(first["outline"])
        assert all(len(second[name]) == 3 for name in namespace["VARIANTS"])
    assert "| best outline_views |" in capsys.readouterr().out


def test_token_stability_compares_two_encodings_per_average(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """scripts/token_stability.py: per --average A, the share of equal tokens between the encodings of seeds
    0.. and A.. of each mesh, per scale and weighted by the scales' token counts over all tokens."""
    import json

    import trimesh

    from vat.pipeline import MeshCodec

    script = SCRIPT.parent / "token_stability.py"
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.5, 0.3, 0.4)).export(meshes / "box.ply")
    trimesh.creation.icosphere(2, radius=0.4).export(meshes / "sphere.ply")
    monkeypatch.setattr(sys, "argv", [str(script), "--checkpoint", str(tiny_checkpoint), "--meshes", str(meshes),
                                      "--averages", "1,3", "--json", str(tmp_path / "s.json")])
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads((tmp_path / "s.json").read_text())
    codec = MeshCodec.from_pretrained(tiny_checkpoint)
    box = load_mesh(meshes / "box.ply")
    for a in (1, 3):
        first, second = (codec.encode(box, seed=s, average=a).indices for s in (0, a))
        assert result["shares"][str(a)][0] == [float(np.mean(x == y)) for x, y in zip(first, second)]
        sizes = np.array([len(i) for i in first], dtype=float)
        overall = np.mean(np.array(result["shares"][str(a)]) @ (sizes / sizes.sum()))
        assert result["summary"][str(a)]["all_tokens"] == pytest.approx(overall, abs=1e-4)
    assert result["meshes"] == ["box.ply", "sphere.ply"] and "average 3: equal tokens" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [str(script), "--meshes", str(meshes), "--averages", "0"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2
