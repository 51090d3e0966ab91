"""vat eval-gen's scores that ignoring the input cannot pass, on a pipeline whose generations are
known: the match rate, the unconditional floor and F@0.05 (vat.evaluate.evaluate_generation)."""

import copy

import numpy as np
import pytest
import trimesh

from vat.errors import VatError
from vat.evaluate import evaluate_generation, mesh_files


class KnownGenerations:
    """A stand-in for vat.pipeline.Pipeline: the n-th generation is `outputs[n]` (eval-gen visits
    the meshes in mesh_files order), the unconditional one is `floor`."""

    class Result:
        def __init__(self, mesh, seed):
            self._mesh, self.seed, self.timings = mesh, seed, {"sample": 0.0}

        def mesh(self):
            return self._mesh

    def __init__(self, outputs, floor):
        self.outputs, self.floor, self.calls, self.searches = iter(outputs), floor, [], []

    def generate(self, image, seed, resolution, search=1, **settings):
        self.calls.append(("image", seed, settings))
        self.searches.append(search)
        return self.Result(next(self.outputs), seed + search - 1)  # as if the search kept its last sample

    def generate_unconditional(self, seed, resolution, **settings):
        self.calls.append(("null", seed, settings))
        return self.Result(self.floor, seed)


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    """Four distinct shapes as files, and the meshes in the order eval-gen visits them."""
    from vat.geometry.procedural import random_shape
    from vat.geometry.render import render_views

    try:
        render_views(random_shape(0).mesh, 1, 16)
    except VatError as exc:
        pytest.skip(f"cannot render here: {exc}")
    folder = tmp_path_factory.mktemp("pieces")
    bar = trimesh.util.concatenate([trimesh.creation.box([0.8, 0.3, 0.2]),
                                    trimesh.creation.icosphere(3, radius=0.12).apply_translation([0.35, 0.1, 0.1])])
    for name, mesh in (("a-box.ply", trimesh.creation.box([0.6, 0.4, 0.3])), ("b-bar.ply", bar),
                       ("c-disc.ply", trimesh.creation.cylinder(radius=0.5, height=0.1)),
                       ("d-ring.ply", trimesh.creation.annulus(0.3, 0.5, 0.3))):
        mesh.export(folder / name)
    return folder, [trimesh.load(path, force="mesh") for path in mesh_files(folder)]


def test_generations_that_are_the_pieces_match_and_beat_the_floor(pieces):
    folder, meshes = pieces
    blob = trimesh.creation.icosphere(3, radius=0.5)
    pipeline = KnownGenerations(meshes, floor=blob)
    result = evaluate_generation(pipeline, folder, seed=3, resolution=32, settings={"cfg": 1.5, "temperature": 0.9},
                                 search=2)
    summary, items = result["summary"], result["items"]
    assert pipeline.searches == [2, 2, 2, 2] and summary["search"] == 2
    assert [item["kept_seed"] for item in items] == [4, 4, 4, 4]  # the sample each search kept
    assert "kept_seed" not in summary
    assert summary["match_rate"] == 1.0 and summary["match_chance"] == 0.25
    assert [item["match_rank"] for item in items] == [1, 1, 1, 1]
    assert summary["f_score"] > 0.99 and summary["f_score_005"] == 1.0
    assert summary["cond_beats_uncond"] == 4
    assert summary["uncond_f_score"] < 0.5 and summary["uncond_f_score"] < summary["uncond_f_score_005"]
    # One unconditional sample for the run, with the run's seed and sampling settings (no guidance).
    assert [c for c in pipeline.calls if c[0] == "null"] == [("null", 3, {"temperature": 0.9})]
    assert all(seed == 3 for _, seed, _ in pipeline.calls)


def test_generations_of_the_wrong_piece_do_not_match(pieces):
    folder, meshes = pieces
    pipeline = KnownGenerations(meshes[1:] + meshes[:1], floor=trimesh.creation.icosphere(3, radius=0.5))
    result = evaluate_generation(pipeline, folder, resolution=32)
    assert result["summary"]["match_rate"] == 0.0
    assert all(item["match_rank"] > 1 for item in result["items"])
    assert result["summary"]["f_score"] < 0.9


def test_no_match_and_an_empty_floor(pieces):
    folder, meshes = pieces
    done = []  # on_item sees the items so far after each mesh (what `vat eval-gen --json` writes as it goes)
    result = evaluate_generation(KnownGenerations(meshes, floor=trimesh.Trimesh()), folder, limit=2,
                                 resolution=32, match=False, on_item=lambda result: done.append(len(result["items"])))
    assert done == [1, 2]
    assert not {"match_rate", "match_chance", "cond_beats_uncond", "uncond_f_score"} & set(result["summary"])
    assert np.isclose(result["summary"]["f_score"], np.mean([i["f_score"] for i in result["items"]]))


def test_a_generation_with_no_surface_is_a_miss_and_its_piece_stays_in_the_gallery(pieces):
    folder, meshes = pieces
    outputs = [meshes[0], trimesh.Trimesh(), meshes[2], meshes[3]]
    result = evaluate_generation(KnownGenerations(outputs, floor=trimesh.creation.icosphere(3, radius=0.5)),
                                 folder, resolution=32)
    summary, items = result["summary"], result["items"]
    assert items[1]["generation_failed"] and "no surface" in items[1]["error"] and "match_rank" not in items[1]
    assert summary["failed"] == summary["generation_failed"] == 1
    # 3 hits out of 4 tries, among 4 pieces: the failure is not dropped from the denominator.
    assert summary["match_rate"] == 0.75 and summary["match_chance"] == 0.25
    assert [items[i]["match_rank"] for i in (0, 2, 3)] == [1, 1, 1]
    assert summary["cond_beats_uncond"] == 3


class KnownPrefixes(KnownGenerations):
    """Generations with scales: prefix s of the n-th generation decodes to `prefixes[n][s - 1]`, and its
    scale-s tokens are `tokens[n][s - 1]`."""

    class Prefixed:
        def __init__(self, meshes, tokens, seed):
            self.meshes, self.indices, self.seed, self.timings = meshes, tokens, seed, {"sample": 0.0}
            self.num_scales = len(meshes)

        def mesh(self, scales=None):
            return self.meshes[(scales or self.num_scales) - 1]

    def generate(self, image, seed, resolution, search=1, **settings):
        meshes, tokens = next(self.outputs)
        return self.Prefixed(meshes, tokens, seed)


@pytest.mark.slow
def test_per_scale_scores_every_prefix_and_finds_where_the_input_starts_to_count(pieces):
    folder, meshes = pieces
    blob = trimesh.creation.icosphere(3, radius=0.5)
    # Scale 1 is the same blob with the same token for every piece; scale 2 is the piece itself (its own
    # token); scale 3 is the piece again except for the last piece, whose full decode is empty.
    outputs = [([blob, mesh, mesh if n < 3 else trimesh.Trimesh()],
                [np.array([7]), np.array([n, n, n, n]), np.arange(9)]) for n, mesh in enumerate(meshes)]
    result = evaluate_generation(KnownPrefixes(outputs, floor=blob), folder, resolution=32, match=False,
                                 per_scale=True)
    summary, items = result["summary"], result["items"]
    ok = [item for item in items if "error" not in item]
    assert len(ok) == 3 and items[3]["generation_failed"]
    for item in ok:
        assert len(item["f_score_per_scale"]) == len(item["f_score_005_per_scale"]) == 3
        assert item["f_score_per_scale"][-1] == item["f_score"]  # the last prefix is the full decode
        assert item["f_score_per_scale"][1] > 0.99 > item["f_score_per_scale"][0]
        assert item["full_is_best"] and item["best_scale"] == 2  # scales 2 and 3 give the same mesh: the first
    assert summary["f_score_per_scale"] == pytest.approx(np.mean([i["f_score_per_scale"] for i in ok], axis=0))
    assert summary["full_is_best"] == 3
    assert summary["distinct_prefixes_per_scale"] == [1, 3, 3]  # scale 1 ignores the input, scale 2 does not
    assert summary["per_scale"] is True


@pytest.mark.slow
def test_per_scale_flags_a_full_decode_worse_than_a_prefix(pieces):
    folder, meshes = pieces
    blob = trimesh.creation.icosphere(3, radius=0.5)
    outputs = [([blob, mesh, blob], [np.array([0]), np.array([n] * 4), np.arange(9)]) for n, mesh in enumerate(meshes)]
    result = evaluate_generation(KnownPrefixes(outputs, floor=blob), folder, limit=2, resolution=32, match=False,
                                 per_scale=True)
    assert result["summary"]["full_is_best"] == 0
    assert [item["best_scale"] for item in result["items"]] == [2, 2]
    plain = evaluate_generation(KnownGenerations(meshes, floor=blob), folder, limit=1, resolution=32, match=False)
    assert "f_score_per_scale" not in plain["summary"] and "full_is_best" not in plain["summary"]


def test_a_stopped_run_resumes_without_generating_its_meshes_again(pieces):
    """`done` (what --json held when a run stopped) keeps its items; only the rest are generated, and the
    options must be the same."""
    folder, meshes = pieces
    partial = []
    evaluate_generation(KnownGenerations(meshes, floor=trimesh.Trimesh()), folder, limit=2, resolution=32,
                        match=False, seed=5, on_item=partial.append)
    stopped = partial[-1]
    assert stopped["summary"]["partial"] and stopped["summary"]["seed"] == 5 and len(stopped["items"]) == 2
    stopped["items"][0]["marker"] = "kept"
    pipeline = KnownGenerations(meshes[2:], floor=trimesh.Trimesh())  # only the two meshes left
    result = evaluate_generation(pipeline, folder, resolution=32, match=False, seed=5, done=stopped)
    assert [c[0] for c in pipeline.calls] == ["null", "image", "image"]
    assert [i["mesh"] for i in result["items"]] == [str(p) for p in mesh_files(folder)]
    assert result["items"][0]["marker"] == "kept" and result["summary"]["meshes"] == 4
    assert all(item["f_score"] > 0.99 for item in result["items"])  # each scored against its own piece
    with pytest.raises(VatError, match="cannot resume: that run used"):
        evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32, match=False,
                            seed=6, done=stopped)
    with pytest.raises(VatError, match="cannot resume the match"):  # that run kept no match samples
        evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32, seed=5,
                            done=stopped)
    with pytest.raises(VatError, match="not an eval-gen result"):
        evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32, match=False,
                            done={"items": []})


def _with(run: dict, **options) -> dict:
    """An eval-gen result as if run with other `options`."""
    return {"summary": {**run["summary"], **options}, "items": run["items"]}


def _saved_samples(path):
    with np.load(path) as saved:
        return {key: saved[key].copy() for key in saved.files}


@pytest.mark.parametrize("stopped_after", [1, 2])
def test_a_stopped_run_resumes_with_the_match_it_would_have_had(pieces, tmp_path, stopped_after):
    """With `match_file`, the match samples (and their generator's state) are saved after each piece, before
    the JSON: stopped after `stopped_after` pieces of its JSON (with the samples of 2 saved: one more than the
    JSON when it stopped between the two writes) and resumed, a run draws the samples an unstopped run draws
    and reports its match."""
    folder, meshes = pieces
    blob = trimesh.creation.icosphere(3, radius=0.5)
    outputs = [meshes[1], meshes[0], trimesh.Trimesh(), meshes[3]]  # two swapped, one with no surface
    whole = evaluate_generation(KnownGenerations(outputs, floor=blob), folder, resolution=32, seed=2,
                                match_file=tmp_path / "whole.match.npz")
    partial = []
    evaluate_generation(KnownGenerations(outputs, floor=blob), folder, limit=2, resolution=32, seed=2,
                        match_file=tmp_path / "run.match.npz", on_item=lambda run: partial.append(copy.deepcopy(run)))
    pipeline = KnownGenerations(outputs[stopped_after:], floor=blob)
    resumed = evaluate_generation(pipeline, folder, resolution=32, seed=2, match_file=tmp_path / "run.match.npz",
                                  done=partial[stopped_after - 1])
    assert len([c for c in pipeline.calls if c[0] == "image"]) == 4 - stopped_after
    assert resumed["summary"]["match_rate"] == whole["summary"]["match_rate"] == 0.25
    assert [i.get("match_rank") for i in resumed["items"]] == [i.get("match_rank") for i in whole["items"]]
    one_go, again = _saved_samples(tmp_path / "whole.match.npz"), _saved_samples(tmp_path / "run.match.npz")
    assert one_go.keys() == again.keys() and all(np.array_equal(one_go[k], again[k]) for k in one_go)
    assert len(one_go["generated"]) == 3 and len(one_go["meshes"]) == 4  # the miss adds its mesh alone


def test_match_samples_of_other_pieces_are_refused(pieces, tmp_path):
    folder, meshes = pieces
    partial = []
    evaluate_generation(KnownGenerations(meshes, floor=trimesh.Trimesh()), folder, limit=2, resolution=32,
                        match_file=tmp_path / "run.match.npz", on_item=partial.append)
    stopped = partial[-1]
    stopped["items"] = stopped["items"][::-1]
    with pytest.raises(VatError, match="cannot resume the match from .*not those of the file"):
        evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32,
                            match_file=tmp_path / "run.match.npz", done=stopped)
    with pytest.raises(VatError, match="cannot resume the match from .*other options"):
        evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32,
                            match_file=tmp_path / "run.match.npz", done=_with(partial[-1], search=2), search=2)
    saved = (tmp_path / "run.match.npz").read_bytes()
    for name, content in (("broken", b"not a zip"), ("truncated", saved[:len(saved) // 2])):
        (tmp_path / f"{name}.match.npz").write_bytes(content)
        with pytest.raises(VatError, match="cannot resume the match from"):
            evaluate_generation(KnownGenerations([], floor=trimesh.Trimesh()), folder, resolution=32,
                                match_file=tmp_path / f"{name}.match.npz", done=partial[-1])
