"""The `vat` command line: the contract's subcommands, JSON output, clean errors."""

import json
import subprocess
import sys

import pytest
import trimesh

from vat.cli import PLANNED, main


@pytest.fixture
def spheres(tmp_path):
    sphere = trimesh.creation.icosphere(4, radius=0.5)
    a, b, offset = tmp_path / "a.ply", tmp_path / "b.ply", tmp_path / "offset.ply"
    sphere.export(a)
    sphere.copy().apply_translation((0.02, 0, 0)).export(b)
    # The same sphere grown by 0.02: every point of either surface is 0.02 from the other.
    trimesh.creation.icosphere(4, radius=0.52).apply_translation((0.0, 0, 0)).export(offset)
    return a, b, offset


def test_compare_self_is_perfect(spheres, tmp_path, capsys):
    a, _, _ = spheres
    out = tmp_path / "r.json"
    assert main(["compare", str(a), str(a), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["f_score"] == 1.0
    assert summary["chamfer"] < 1e-6
    assert "F-score@0.01 1.000" in capsys.readouterr().out


def test_compare_offset_surface_scores_zero(spheres, tmp_path):
    a, _, offset = spheres
    out = tmp_path / "r.json"
    # normalize=none: keep the two surfaces 0.02 apart in the files' own coordinates.
    assert main(["compare", str(a), str(offset), "--normalize", "none", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["f_score"] < 0.01
    assert result["items"][0]["chamfer"] == pytest.approx(0.04, abs=2e-3)


def test_compare_translated_then_icp(spheres, tmp_path):
    a, b, _ = spheres
    out = tmp_path / "r.json"
    main(["compare", str(a), str(b), "--json", str(out)])
    plain = json.loads(out.read_text())["summary"]["f_score"]
    main(["compare", str(a), str(b), "--icp", "--json", str(out)])
    aligned = json.loads(out.read_text())["summary"]["f_score"]
    assert plain < 0.6 and aligned > 0.99


def test_bad_mesh_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.obj"
    bad.write_text("this is not a mesh")
    assert main(["compare", str(bad), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vat compare: error:") and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(PLANNED))
def test_planned_commands_say_so(command, capsys):
    argv = {
        "encode": ["encode", "m.obj", "-o", "x.vat"],
        "decode": ["decode", "x.vat", "-o", "m.glb"],
        "generate": ["generate", "img.png", "-o", "m.glb"],
        "eval-recon": ["eval-recon", "--meshes", "d"],
        "eval-gen": ["eval-gen", "--meshes", "d"],
        "render": ["render", "m.obj", "-o", "d"],
    }[command]
    assert main(argv) == 2
    assert "not available yet" in capsys.readouterr().err


def test_bench_small_grid(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--resolution", "64", "--coarse-resolution", "16", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["extract_query_ratio"] > 1
    assert summary["extract_chamfer_diff"] < 5e-3
    assert summary["extract_time_ratio"] > 0


def test_python_dash_m_and_info():
    result = subprocess.run([sys.executable, "-m", "vat", "info"], capture_output=True, text=True, check=True)
    assert "torch" in result.stdout and "checkpoint" in result.stdout
