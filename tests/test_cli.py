"""The `vat` command line: the contract's subcommands, JSON output, clean errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from conftest import draw_object_image
from vat import __version__
from vat.cli import build_parser, main
from vat.pipeline import DEFAULT_GENERATE_SEARCH


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


def test_compare_says_when_the_bounding_boxes_differ(tmp_path, capsys):
    from vat.geometry import normalize_mesh

    torus = trimesh.creation.torus(1.0, 0.3).apply_translation((2.0, 0.0, 1.0))
    placed, unit, out = tmp_path / "torus.glb", tmp_path / "unit.obj", tmp_path / "r.json"
    torus.export(placed)
    normalize_mesh(torus)[0].export(unit)  # the same shape in the unit cube, as `vat decode` wrote it
    assert main(["compare", str(placed), str(unit), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F-score@0.01 0.000" in printed
    assert "note: the two meshes' bounding boxes differ a lot: the scored mesh is 0.38x the reference's size" in printed
    assert "compare with --normalize each" in printed
    assert "bounding boxes differ" in json.loads(out.read_text())["items"][0]["placement_hint"]
    assert main(["compare", str(placed), str(unit), "--normalize", "each", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F-score@0.01 1.000" in printed and "note:" not in printed
    assert json.loads(out.read_text())["items"][0]["placement_hint"] is None


def test_bad_mesh_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.obj"
    bad.write_text("this is not a mesh")
    assert main(["compare", str(bad), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vat compare: error:") and "Traceback" not in err


def test_bench_small_grid(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--resolution", "64", "--coarse-resolution", "16", "--skip-generation",
                 "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["extract_query_ratio"] > 1
    assert summary["extract_chamfer_diff"] < 5e-3
    assert summary["extract_time_ratio"] > 0
    # what the timings ran on, so that numbers from two machines can be told apart
    assert summary["cpu"] and summary["torch_threads"] >= 1 and isinstance(summary["cpu_fast_bf16"], bool)


def test_bench_generation(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    image = draw_object_image(tmp_path / "object.png")
    assert main(["bench", "--checkpoint", str(tiny_checkpoint), "--resolution", "32", "--coarse-resolution", "16",
                 "--image", str(image), "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["weights"].startswith("trained")
    assert summary["sample_cached_s"] > 0 and summary["sample_uncached_s"] > 0
    assert summary["kv_cache_speedup"] == summary["sample_uncached_s"] / summary["sample_cached_s"]
    sampling = next(item for item in result["items"] if item["bench"] == "sampling")
    assert sampling["kv_cache_same_tokens"] is True
    end_to_end = next(item for item in result["items"] if item["bench"] == "image_to_mesh")
    assert end_to_end["faces"] > 0 and summary["image_to_mesh_s"] >= end_to_end["stage_sample_s"]
    # The demo's search (its stage is timed) beside one sample.
    assert end_to_end["search"] == DEFAULT_GENERATE_SEARCH and end_to_end["stage_search_s"] > 0
    assert summary["image_to_mesh_one_s"] == end_to_end["image_to_mesh_one_s"] > 0
    codec = next(item for item in result["items"] if item["bench"] == "codec")
    from vat.pipeline import MeshCodec

    tokenizer = MeshCodec.from_pretrained(tiny_checkpoint).config
    assert 0 < codec["bytes"] <= codec["raw_bytes"]  # entropy-coded when that is smaller
    raw = 12 + len(tokenizer.scale_sides) + 4 + -(-tokenizer.tokens_per_shape * tokenizer.bits_per_token // 8)
    assert codec["raw_bytes"] - raw in (8, 16)  # see vat/codec.py; the placement takes 8 or 16 bytes
    assert codec["faces"] > 0
    assert summary["encode_s"] == codec["encode_s"] > 0 and summary["decode_s"] == codec["decode_s"] > 0
    assert summary["encode_one_s"] == codec["encode_one_s"] > 0 and codec["search"] > 1


def test_generate_writes_mesh_and_tokens(tiny_checkpoint_of_each_design, tmp_path, capsys):
    tiny_checkpoint = tiny_checkpoint_of_each_design
    image = draw_object_image(tmp_path / "object.png", transparent=True)
    out, vat = tmp_path / "out.glb", tmp_path / "out.vat"
    argv = ["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
            "--resolution", "32", "--seed", "3", "--search", "1"]
    assert main(argv) == 0
    assert "background: the image's own transparency" in capsys.readouterr().out
    first = vat.read_bytes()
    assert main(argv) == 0
    assert vat.read_bytes() == first  # same seed, same tokens
    argv[argv.index("3")] = "4"
    assert main(argv) == 0
    assert vat.read_bytes() != first
    # The tokens (of seed 4) decode to the same mesh (seed 4's) through `vat decode`.
    mesh, decoded = trimesh.load(out, force="mesh"), tmp_path / "decoded.glb"
    assert main(["decode", str(vat), "--checkpoint", str(tiny_checkpoint), "-o", str(decoded),
                 "--resolution", "32"]) == 0
    decoded_mesh = trimesh.load(decoded, force="mesh")
    assert len(decoded_mesh.faces) == len(mesh.faces)
    np.testing.assert_allclose(decoded_mesh.vertices, mesh.vertices, atol=1e-5)


def test_generate_warns_when_the_cut_out_looks_wrong(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    clutter = tmp_path / "clutter.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(clutter)
    argv = ["generate", str(clutter), "--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "out.glb"),
            "--resolution", "32", "--search", "1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "vat generate: warning: The cut-out may be wrong" in err and "transparent background" in err
    assert main(argv[:1] + [str(draw_object_image(tmp_path / "object.png"))] + argv[2:]) == 0
    assert "warning" not in capsys.readouterr().err


def test_generate_from_text_only_and_errors(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "text.obj"
    assert main(["generate", "--text", "a red chair", "--checkpoint", str(tiny_checkpoint), "-o", str(out),
                 "--resolution", "32"]) == 0
    from vat.pipeline import Pipeline  # the same text and default seed (0) through the library: the same mesh

    expected = Pipeline.from_pretrained(tiny_checkpoint, device="cpu").generate(text="a red chair", seed=0,
                                                                                 resolution=32).mesh()
    written = trimesh.load(out, force="mesh")
    assert len(written.faces) == len(expected.faces)
    np.testing.assert_allclose(written.bounds, expected.bounds, atol=1e-5)
    assert main(["generate", "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 1
    assert "give an image, --text, or both" in capsys.readouterr().err
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    assert main(["generate", str(bad), "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vat generate: error:") and "Traceback" not in err
    assert main(["generate", "--text", "x", "--checkpoint", str(tmp_path), "-o", str(out)]) == 1
    assert "no tokenizer" in capsys.readouterr().err
    assert main(["generate", "--text", "x", "--search", "2", "--checkpoint", str(tiny_checkpoint), "-o", str(out)]) == 1
    assert "needs an image" in capsys.readouterr().err


def test_generate_with_search_keeps_and_names_the_best_sample(tiny_checkpoint, tmp_path, capsys):
    image = draw_object_image(tmp_path / "object.png", transparent=True)
    out, vat = tmp_path / "out.glb", tmp_path / "out.vat"
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
                 "--resolution", "32", "--seed", "3", "--search", "3"]) == 0
    printed = capsys.readouterr().out
    assert "the best outline of 3 samples (seeds 3 to 5)" in printed
    kept = int(printed.split(", seed ")[1].split()[0])
    from vat.pipeline import Pipeline

    assert kept == _best_outline_seed(Pipeline.from_pretrained(tiny_checkpoint, device="cpu"), image, 3, 3, 32)[0]
    fits = printed.split("outline fit (IoU) by seed, best first: ")[1].splitlines()[0].split(", ")
    assert sorted(int(f.split()[0]) for f in fits) == [3, 4, 5] and int(fits[0].split()[0]) == kept
    assert [float(f.split()[1]) for f in fits] == sorted((float(f.split()[1]) for f in fits), reverse=True)
    searched = vat.read_bytes()
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
                 "--resolution", "32", "--seed", str(kept), "--search", "1"]) == 0
    assert vat.read_bytes() == searched  # the printed seed alone gives the same tokens
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
                 "--resolution", "32", "--seed", "3", "--search", "2", "--drafts", "4", "--draft-scales", "1"]) == 0
    printed = capsys.readouterr().out
    assert "the best outline of 4 samples (seeds 3 to 6, 2 of them finished)" in printed
    drafted, kept = vat.read_bytes(), int(printed.split(", seed ")[1].split()[0])
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
                 "--resolution", "32", "--seed", str(kept), "--search", "1"]) == 0
    assert vat.read_bytes() == drafted
    # An image gets the default search, a text prompt one sample.
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out),
                 "--resolution", "32"]) == 0
    assert f"best outline of {DEFAULT_GENERATE_SEARCH} samples" in capsys.readouterr().out
    assert main(["generate", "--text", "a chair", "--checkpoint", str(tiny_checkpoint), "-o", str(out),
                 "--resolution", "32"]) == 0
    assert "best outline" not in capsys.readouterr().out


def _best_outline_seed(pipeline, image, seed: int, search: int, resolution: int) -> tuple[int, list]:
    """The seed and tokens a search must keep, from the library's parts: of seeds seed .. seed + search - 1,
    each drawn alone, the one whose outline best fits the image's foreground (Pipeline.outline_scores on
    vat.preprocess's mask, as generate makes it; the first of equals)."""
    from vat.preprocess import load_image, preprocess_image

    seeds = range(seed, seed + search)
    samples = [pipeline.generate(image=image, seed=s, resolution=resolution).indices for s in seeds]
    best = int(np.argmax(pipeline.outline_scores(samples, preprocess_image(load_image(image)).mask)))
    return seed + best, samples[best]


def _search_and_match_by_the_library(checkpoint, items, seed: int, search: int, resolution: int):
    """What eval-gen must report for its items, recomputed from the library's parts: each piece's kept seed
    (_best_outline_seed on the rendered view), and each generation's match rank
    (vat.metrics.match_ranks on match_chamfer_matrix of surface samples drawn as eval-gen draws them: one
    generator seeded `seed`, the generation's points then its piece's, piece by piece)."""
    from vat.evaluate import EVAL_GEN_VIEW_SEED
    from vat.geometry import load_mesh, normalize_mesh
    from vat.geometry.render import load_for_render, render_views
    from vat.geometry.sampling import sample_surface
    from vat.metrics import ICP_TARGET_FACTOR, MATCH_SAMPLES, match_chamfer_matrix, match_ranks
    from vat.pipeline import Pipeline
    from vat.tokens import Tokens

    pipeline = Pipeline.from_pretrained(checkpoint, device="cpu")
    rng = np.random.default_rng(seed)
    kept, generated_points, mesh_points = [], [], []
    for item in (item for item in items if "error" not in item):  # no generation failed here
        view = render_views(load_for_render(item["mesh"]), views=1, seed=EVAL_GEN_VIEW_SEED)[0]
        best, indices = _best_outline_seed(pipeline, view.rgba, seed, search, resolution)
        kept.append(best)
        generated = Tokens(indices, pipeline.codec, resolution=resolution).mesh()
        generated_points.append(sample_surface(normalize_mesh(generated)[0], MATCH_SAMPLES, rng)[0])
        piece = normalize_mesh(load_mesh(item["mesh"]))[0]
        mesh_points.append(sample_surface(piece, MATCH_SAMPLES * ICP_TARGET_FACTOR, rng)[0])
    return kept, match_ranks(match_chamfer_matrix(generated_points, mesh_points)).tolist()


@pytest.mark.slow
def test_eval_gen_scores_rendered_meshes(tiny_checkpoint, tmp_path):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.6, 0.3, 0.2)).export(meshes / "box.ply")
    trimesh.creation.icosphere(2).export(meshes / "sphere.obj")
    (meshes / "broken.obj").write_text("v 0 0 0\n")
    out = tmp_path / "gen.json"
    assert main(["eval-gen", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
                 "--seed", "1", "--search", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    summary, items = result["summary"], result["items"]
    assert summary["meshes"] == 3 and summary["failed"] == 1 and summary["seed"] == 1 and summary["search"] == 2
    ok = [item for item in items if "error" not in item]
    kept, ranks = _search_and_match_by_the_library(tiny_checkpoint, items, seed=1, search=2, resolution=32)
    assert [item["kept_seed"] for item in ok] == kept
    assert all(0.0 <= item["f_score"] <= item["f_score_005"] <= 1.0 and item["chamfer"] > 0 for item in ok)
    assert summary["f_score"] == pytest.approx(sum(item["f_score"] for item in ok) / 2)
    # The floor: one unconditional mesh scored against each piece.
    assert all(0.0 <= item["uncond_f_score"] <= item["uncond_f_score_005"] <= 1.0 for item in ok)
    assert summary["cond_beats_uncond"] == sum(item["f_score"] > item["uncond_f_score"] for item in ok)
    assert summary["match_chance"] == 0.5 and [item["match_rank"] for item in ok] == ranks
    assert summary["match_rate"] == sum(item["match_rank"] == 1 for item in ok) / 2

    assert main(["eval-gen", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
                 "--limit", "1", "--no-match", "--cfg", "3", "--cfg-schedule", "constant", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["cfg"] == 3.0 and result["summary"]["cfg_schedule"] == "constant"
    assert result["summary"]["search"] == DEFAULT_GENERATE_SEARCH
    assert "match_rate" not in result["summary"] and "match_rank" not in result["items"][0]
    assert "uncond_f_score" in result["summary"]
    # That run, resumed over all the meshes: its piece is kept as it was, the other two are generated.
    resume = ["eval-gen", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
              "--no-match", "--cfg", "3", "--cfg-schedule", "constant", "--json", str(out), "--resume"]
    assert main(resume) == 0
    resumed = json.loads(out.read_text())
    assert resumed["items"][0] == result["items"][0] and resumed["summary"]["meshes"] == 3
    assert main([arg for arg in resume if arg != "--no-match"]) == 1  # the match samples beside it: another run's


@pytest.mark.slow
def test_eval_gen_per_scale_scores_every_prefix_with_a_cooling_temperature(tiny_checkpoint, tmp_path, capsys):
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box((0.6, 0.3, 0.2)).export(meshes / "box.ply")
    out = tmp_path / "gen.json"
    assert main(["eval-gen", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
                 "--search", "1", "--no-match", "--per-scale", "--temperature-last", "0.5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    summary, (item,) = (lambda r: (r["summary"], r["items"]))(json.loads(out.read_text()))
    assert summary["per_scale"] is True and summary["temperature_last"] == 0.5
    scales = len(item["prefix_digests"])
    assert scales > 1 and len(item["f_score_per_scale"]) == len(item["f_score_005_per_scale"]) == scales
    assert item["f_score_per_scale"][-1] == item["f_score"]
    assert summary["f_score_per_scale"] == item["f_score_per_scale"]
    assert all(0 <= f01 <= f05 <= 1 for f01, f05 in zip(item["f_score_per_scale"], item["f_score_005_per_scale"]))
    assert summary["distinct_prefixes_per_scale"] == [1] * scales
    assert summary["full_is_best"] == int(item["f_score_per_scale"][-1] >= max(item["f_score_per_scale"]))
    assert "f_score_per_scale" in printed and "distinct_prefixes_per_scale 1 1" in printed


@pytest.mark.parametrize("command, rest", [("generate", ["--text", "x", "-o", "x.glb"]),
                                           ("eval-gen", ["--meshes", "."])])
def test_sampling_choices_and_defaults_are_the_librarys(command, rest, capsys):
    """--cfg-schedule takes the model's schedules, and the help states SamplingConfig's defaults (the options
    themselves default to unset: the checkpoint's sampling_config.json decides)."""
    from vat.models.gpt import CFG_SCHEDULES
    from vat.sampling_config import DEFAULT_SAMPLING

    for schedule in CFG_SCHEDULES:
        args = build_parser().parse_args([command, *rest, "--cfg-schedule", schedule])
        assert args.cfg_schedule == schedule and args.cfg is None and args.temperature is None
    err = _parse_error([command, *rest, "--cfg-schedule", "cosine"], capsys)
    assert "invalid choice: 'cosine'" in err and all(schedule in err.split("choose from")[1]
                                                     for schedule in CFG_SCHEDULES)
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--cfg-schedule {" + ",".join(CFG_SCHEDULES) + "}" in text
    for help, default in (("guidance scale (0: off)", DEFAULT_SAMPLING.cfg),
                          ("constant (--cfg at every scale)", DEFAULT_SAMPLING.cfg_schedule),
                          ("softmax temperature (at the first scale)", DEFAULT_SAMPLING.temperature),
                          ("likeliest tokens (0: all)", DEFAULT_SAMPLING.top_k),
                          ("nucleus sampling mass (0: off)", DEFAULT_SAMPLING.top_p)):
        assert f"{help} (default: the checkpoint's sampling_config.json, else {default})" in text


def test_foreground_ratio_default_is_the_librarys(capsys):
    from vat.preprocess_config import DEFAULT_PREPROCESS

    args = build_parser().parse_args(["generate", "--text", "x", "-o", "x.glb"])
    assert args.foreground_ratio == DEFAULT_PREPROCESS.foreground_ratio
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert f"(default {DEFAULT_PREPROCESS.foreground_ratio}: " in " ".join(capsys.readouterr().out.split())


def _parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


# Every subcommand with a resolution, its other required arguments, and its default (the protocol's 256 for
# the evaluations and the bench, the demo's 128 for the rest).
RESOLUTION_COMMANDS = {"generate": (["--text", "x", "-o", "x.glb"], 128), "decode": (["in.vat", "-o", "x.glb"], 128),
                       "eval-recon": (["--meshes", "."], 256), "eval-gen": (["--meshes", "."], 256),
                       "bench": ([], 256)}


@pytest.mark.parametrize("command", sorted(RESOLUTION_COMMANDS))
def test_resolution_is_checked_before_any_work_and_its_default_is_documented(command, capsys):
    from vat.cli import build_parser

    rest, default = RESOLUTION_COMMANDS[command]
    for wrong in ("999", "3", "1e3", "abc"):
        err = _parse_error([command, *rest, "--resolution", wrong, "--checkpoint", "no-such-checkpoint"], capsys)
        assert (f"the resolution must be a whole number from 16 to 512 grid cells per side (the demo offers 64, "
                f"128, 256), got '{wrong}'") in err
    assert build_parser().parse_args([command, *rest]).resolution == default
    subcommand = build_parser()._subparsers._group_actions[0].choices[command]
    assert f"(default {default}: " in " ".join(subcommand.format_help().split())


SEED_COMMANDS = {"generate": ["--text", "x", "-o", "x.glb"], "eval-gen": ["--meshes", "."],
                 "eval-recon": ["--meshes", "."], "encode": ["m.obj", "-o", "m.vat"], "compare": ["a.obj", "b.obj"],
                 "render": ["m.obj", "-o", "out"]}


@pytest.mark.parametrize("command", sorted(SEED_COMMANDS))
def test_seeds_have_the_demos_range(command, capsys):
    from vat.ui import MAX_SEED  # the demo's too (its Bounds("Seed", 0, MAX_SEED): see test_app_client)

    for wrong in ("-1", str(MAX_SEED + 1), "2.5"):
        err = _parse_error([command, *SEED_COMMANDS[command], "--seed", wrong], capsys)
        assert f"the seed must be a whole number from 0 to {MAX_SEED:,}, got '{wrong}'" in err


# A tetrahedron in 63 bytes of OBJ: smaller than any .vat file.
TETRAHEDRON = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def test_encode_says_when_the_file_grew(tiny_checkpoint_of_each_design, tmp_path, capsys):
    tiny_checkpoint = tiny_checkpoint_of_each_design
    tiny, vat = tmp_path / "tetra.obj", tmp_path / "tetra.vat"
    tiny.write_text(TETRAHEDRON)
    assert main(["encode", str(tiny), "-o", str(vat), "--checkpoint", str(tiny_checkpoint), "--search", "1"]) == 0
    size, written = tiny.stat().st_size, vat.stat().st_size
    printed = capsys.readouterr().out
    assert written > size and "compression ratio" not in printed
    assert (f"no compression: the .vat ({written:,} B) is {written / size:.1f}x larger than the input ({size:,} B)"
            in printed)


def test_output_is_for_people_one_bar_and_plain_words(tiny_checkpoint, tmp_path, capsys):
    image = draw_object_image(tmp_path / "object.png", transparent=True)
    out, vat = tmp_path / "out.glb", tmp_path / "out.vat"
    assert main(["generate", str(image), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--vat", str(vat),
                 "--resolution", "32", "--search", "2"]) == 0
    printed = capsys.readouterr().out
    assert "this sample alone: --seed" in printed and "background: the image's own transparency" in printed
    assert "time: preprocessing" in printed and "decoding the mesh" in printed
    for jargon in ("alone: --search", "decode_s", "_r32", "input alpha"):
        assert jargon not in printed
    # Decoding shows one bar, counting grids (coarse to fine), not points per second.
    assert main(["decode", str(vat), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--resolution", "64"]) == 0
    bar = capsys.readouterr().err
    lines = {line.split(":")[0] for line in bar.replace("\r", "\n").splitlines() if line.strip()}
    assert lines == {"Decoding the mesh on a 64³ grid"} and "2/2 grids" in bar and "pt/s" not in bar


def test_help_is_quick_because_it_imports_no_model_code():
    # `vat --help` took 2.9 s and 710 MB when building the parser imported torch.
    code = ("import sys; from vat.cli import build_parser; parser = build_parser(); parser.format_help(); "
            "[p.format_help() for p in parser._subparsers._group_actions[0].choices.values()]; "
            "print(sorted(m for m in ('torch', 'trimesh', 'numpy', 'vat.pipeline') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_names_every_mesh_format_and_both_spellings_of_scales():
    from vat.cli import MESH_FILE_HELP, build_parser
    from vat.geometry.io import LOAD_FORMATS

    named = [word.strip(",)").lstrip(".") for word in MESH_FILE_HELP.replace("(", " ").split() if word.startswith(".")]
    assert sorted(named) == sorted(LOAD_FORMATS)
    parser = build_parser()
    for spelling in ("--scale", "--scales"):
        assert parser.parse_args(["encode", "m.ply", "-o", "m.vat", spelling, "3"]).scales == 3
        assert parser.parse_args(["decode", "m.vat", "-o", "m.glb", spelling, "3"]).scale == 3


def test_python_dash_m_and_info():
    result = subprocess.run([sys.executable, "-m", "vat", "info"], capture_output=True, text=True, check=True)
    assert "torch" in result.stdout and "checkpoint" in result.stdout


def test_version_and_the_mesh_output_is_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"vat {__version__}"
    # The .vat file does not exist: the output's extension is what fails, before anything is read or loaded.
    for argv in (["decode", str(tmp_path / "missing.vat")], ["generate", "--text", "a chair"]):
        with pytest.raises(SystemExit) as exit:
            main(argv + ["-o", str(tmp_path / "x.fbx"), "--checkpoint", str(tmp_path / "no-such-checkpoint")])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and "cannot write 'x.fbx': expected one of .glb, .obj, .stl, .ply" in err


@pytest.mark.slow
def test_bench_soak_measures_the_demos_memory_and_sigterm_leaves_no_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    image = draw_object_image(tmp_path / "object.png")
    assert main(["bench", "--checkpoint", str(tiny_checkpoint), "--skip-generation", "--resolution", "64",
                 "--coarse-resolution", "16", "--image", str(image), "--soak", "3", "--soak-sessions", "3",
                 "--soak-max-sessions", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert 0 < summary["app_rss_started_mb"] < summary["app_rss_loaded_mb"]
    assert summary["app_rss_one_session_mb"] > 0 and summary["app_rss_sessions_mb"] > 0
    assert summary["app_mb_per_generate_full"] is not None
    # SIGTERM, as a host stops the app: a clean exit, and the app's temporary files are gone.
    assert summary["app_exit_code"] == 0 and summary["app_files_left_after_sigterm"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["icosphere", "box with a hole"])
def test_encode_decode_compare_keeps_the_mesh_in_place(shape, tmp_path, capsys):
    """What a new user tries first: `vat encode`, `vat decode`, `vat compare` with the shipped checkpoint and
    default options give the mesh back where and as large as it was (vat-tiny-grid-2 on a CPU without native
    bf16, so refined in float32: F@0.01 0.949 and 0.984 with the default search and refinement, 242 and 266
    bytes; 0.949 and 0.943 with --refine 0, 242 and 246 bytes: the icosphere's refinement is not kept)."""
    if shape == "icosphere":
        mesh = trimesh.creation.icosphere(4, radius=0.4)
    else:
        mesh = trimesh.boolean.difference([trimesh.creation.box((1.0, 0.6, 0.4)),
                                           trimesh.creation.cylinder(radius=0.15, height=1.0)], engine="manifold")
    source, vat, decoded, out = (tmp_path / name for name in ("in.ply", "in.vat", "out.ply", "r.json"))
    mesh.export(source)
    assert main(["encode", str(source), "-o", str(vat)]) == 0
    assert main(["decode", str(vat), "-o", str(decoded)]) == 0
    assert "back in place" in capsys.readouterr().out
    assert main(["compare", str(source), str(decoded), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["summary"]["f_score"] >= 0.8


@pytest.mark.slow
def test_encode_to_a_byte_budget_raw_and_verbose(tiny_checkpoint, tmp_path, capsys):
    mesh, out = tmp_path / "sphere.ply", tmp_path / "s.vat"
    trimesh.creation.icosphere(3, radius=0.4).apply_translation((1, 2, 3)).export(mesh)
    common = ["encode", str(mesh), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--search", "1"]
    assert main([*common, "-v"]) == 0
    printed = capsys.readouterr().out
    full = out.stat().st_size
    assert len(printed.split("content):")[1].split(";")[0].split()) == 6  # one number per scale
    assert main([*common, "--raw"]) == 0 and "raw tokens" in capsys.readouterr().out
    raw = out.stat().st_size
    assert full <= raw  # the smaller of entropy-coded and raw (this random generator is a poor prior)
    from vat.pipeline import MeshCodec

    codec = MeshCodec.from_pretrained(tiny_checkpoint, device="cpu")
    sizes = [out.stat().st_size]
    for budget in (full - 1, 60, full):
        assert main([*common, "--bytes", str(budget)]) == 0
        sizes.append(out.stat().st_size)
        stored = len(codec.read(out.read_bytes()))
        assert sizes[-1] <= budget
        if stored < codec.num_scales:  # the longest prefix that fits: one scale more does not
            longer = codec.write(codec.encode(trimesh.load(mesh), scales=stored + 1).indices,
                                 codec.read_file(out.read_bytes()).placement)
            assert len(longer) > budget
    assert sizes[-1] == full
    assert main([*common, "--bytes", "20"]) == 1
    assert "even the first scale takes" in capsys.readouterr().err
    assert main([*common, "--bytes", "500", "--scales", "2"]) == 1


@pytest.mark.slow
def test_eval_recon_scores_the_files_it_wrote(tiny_checkpoint_of_each_design, tmp_path):
    tiny_checkpoint = tiny_checkpoint_of_each_design
    meshes, out, report = tmp_path / "meshes", tmp_path / "vat", tmp_path / "r.json"
    meshes.mkdir()
    trimesh.creation.icosphere(3, radius=0.4).apply_translation((1, 2, 3)).export(meshes / "a.ply")
    trimesh.creation.box((0.5, 0.2, 0.3)).export(meshes / "b.ply")
    assert main(["eval-recon", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
                 "--search", "1", "--out", str(out), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    files = sorted(out.glob("*.vat"))
    assert [f.name for f in files] == ["000-a.vat", "001-b.vat"]
    for item, file in zip(result["items"], files, strict=True):
        assert item["bytes"] == file.stat().st_size and item["round_trip"] is True
        assert item["draco_bytes"] is None or item["draco_bytes"] <= item["bytes"]
        assert item["voxel_bytes"] is None or item["voxel_bytes"] <= item["bytes"]
        assert len(item["bits_per_scale"]) == 6
    assert result["summary"]["round_trip"] is True and len(result["summary"]["bits_per_scale"]) == 6
    assert "average" not in result["summary"]  # one sampling: the summary reads as before the option
    assert main(["eval-recon", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "32",
                 "--search", "2", "--average", "3", "--refine", "0", "--no-baselines", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["summary"]["average"] == 3 and all(i["round_trip"] for i in result["items"])


def test_eval_recon_resumes_a_stopped_run(tiny_checkpoint, tmp_path, capsys):
    """--resume keeps the meshes already in --json and evaluates only the rest; other options refuse."""
    meshes, report = tmp_path / "meshes", tmp_path / "r.json"
    meshes.mkdir()
    trimesh.creation.icosphere(2, radius=0.4).export(meshes / "a.ply")
    trimesh.creation.box((0.5, 0.2, 0.3)).export(meshes / "b.ply")
    common = ["eval-recon", "--meshes", str(meshes), "--checkpoint", str(tiny_checkpoint), "--resolution", "16",
              "--search", "1", "--refine", "0", "--no-baselines", "--json", str(report)]
    assert main([*common, "--limit", "1"]) == 0  # a run stopped after the first mesh
    first = json.loads(report.read_text())["items"]
    first[0]["marker"] = "kept from the first run"
    report.write_text(json.dumps({"summary": json.loads(report.read_text())["summary"], "items": first}))
    assert main([*common, "--resume"]) == 0
    items = json.loads(report.read_text())["items"]
    assert [i["mesh"].rsplit("/", 1)[-1] for i in items] == ["a.ply", "b.ply"]
    assert items[0]["marker"] == "kept from the first run" and "marker" not in items[1]
    assert json.loads(report.read_text())["summary"]["meshes"] == 2
    capsys.readouterr()
    assert main([*common[:-2], "--resume"]) == 1  # no --json
    assert "--resume needs --json" in capsys.readouterr().err
    assert main([*common, "--resume", "--search", "2"]) == 1
    assert "cannot resume: that run used" in capsys.readouterr().err
    assert main([*common, "--resume", "--average", "2"]) == 1  # averaged tokens are other tokens
    assert "cannot resume: that run used" in capsys.readouterr().err
    assert main([*common, "--limit", "1", "--average", "2"]) == 0  # and the other way round:
    assert main([*common, "--resume"]) == 1  # one sampling does not finish an averaged run
    assert "cannot resume: that run used" in capsys.readouterr().err
    report.write_text('{"summary": ')
    assert main([*common, "--resume"]) == 1
    assert "cannot resume from" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`vat bench | head -2`: the pipe closes before the output is written; no traceback, exit status 141."""
    process = subprocess.Popen([sys.executable, "-m", "vat", "bench", "--resolution", "32", "--coarse-resolution",
                                "16", "--skip-generation"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in err, err.decode()[-2000:]
