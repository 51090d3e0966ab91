"""Outline consistency (vat.geometry.silhouette) and the generator-side search built on it
(Pipeline.generate(search=K)): a solid's projected outline agrees with the renderer's, picks the
right shape and view, and the search keeps the sample that fits the image best."""

import numpy as np
import pytest
import trimesh

from vat.errors import VatError
from vat.geometry.inside import contains
from vat.geometry.silhouette import (GRID_AZIMUTHS, GRID_ELEVATIONS, best_overlap, frame_mask, grid_view,
                                     outline_fits, outline_scores, project_outlines, shaded_view, shell_cells)

SIDE = 32  # occupancy cells per axis in these tests


def _l_shape():
    """An asymmetric solid: a tall post on one end of a long bar (in the unit cube)."""
    bar = trimesh.creation.box([0.9, 0.2, 0.3]).apply_translation([0, -0.35, 0])
    post = trimesh.creation.box([0.2, 0.7, 0.3]).apply_translation([0.35, 0.05, 0])
    return trimesh.boolean.union([bar, post], engine="manifold")


def _cells(mesh):
    """(centres of the occupied shell cells, cell edge) of `mesh` on a SIDE^3 grid over the unit cube."""
    centres = (np.arange(SIDE) + 0.5) / SIDE - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1)
    occupied = contains(mesh, grid.reshape(-1, 3)).reshape(SIDE, SIDE, SIDE)
    return grid[tuple(shell_cells(occupied).T)], 1.0 / SIDE


def _rendered_mask(mesh, azimuth, elevation):
    from vat.geometry.render import render_view

    try:
        view = render_view(mesh, azimuth, elevation, size=128)
    except VatError as exc:
        pytest.skip(f"cannot render here: {exc}")
    return view.rgba[..., 3] / 255.0


def test_shell_cells_are_the_occupied_cells_with_an_empty_neighbour():
    solid = np.zeros((6, 6, 6), dtype=bool)
    solid[1:5, 1:5, 1:5] = True
    cells = shell_cells(solid)
    assert len(cells) == 4 ** 3 - 2 ** 3  # all of the 4^3 block but its 2^3 core
    assert not any((c >= 2).all() and (c <= 3).all() for c in cells)
    assert len(shell_cells(np.ones((3, 3, 3), dtype=bool))) == 26  # the grid's edge counts as empty


def test_framing_ignores_where_and_how_large_the_object_is():
    small = np.zeros((100, 100), dtype=bool)
    small[10:30, 50:60] = True  # a 2:1 upright bar
    large = np.zeros((300, 200), dtype=float)
    large[100:260, 20:100] = 1.0
    a, b = frame_mask(small), frame_mask(large)
    assert (a & b).sum() / (a | b).sum() > 0.9
    rows = np.flatnonzero(a.any(axis=1))
    assert len(rows) == pytest.approx(0.9 * a.shape[0], abs=1)  # the longer side fills FILL of the square
    with pytest.raises(VatError, match="empty"):
        frame_mask(np.zeros((10, 10)))
    with pytest.raises(VatError, match="empty"):
        project_outlines(np.zeros((0, 3)), 0.1)


def test_a_solids_outline_matches_its_render_from_the_same_view():
    mesh = _l_shape()
    points, cell = _cells(mesh)
    azimuth, elevation = 45.0, 15.0  # a view of the grid
    target = frame_mask(_rendered_mask(mesh, azimuth, elevation))
    outlines = project_outlines(points, cell)
    views = [(a, e) for a in GRID_AZIMUTHS for e in GRID_ELEVATIONS]
    own = views.index((azimuth, elevation))
    own_iou = (outlines[own] & target).sum() / (outlines[own] | target).sum()
    assert own_iou > 0.85
    iou, best = best_overlap(target, outlines)
    assert iou >= own_iou
    assert abs((views[best][0] - azimuth + 180) % 360 - 180) <= 15  # found near the true azimuth


def test_the_right_shape_fits_its_image_better_than_other_shapes():
    mesh = _l_shape()
    target = frame_mask(_rendered_mask(mesh, 120.0, 10.0))  # an elevation between the grid's
    scores = {name: best_overlap(target, project_outlines(*_cells(shape)))[0]
              for name, shape in (("own", mesh), ("sphere", trimesh.creation.icosphere(3, radius=0.45)),
                                  ("slab", trimesh.creation.box([0.9, 0.9, 0.15])),
                                  ("pole", trimesh.creation.box([0.15, 0.9, 0.15])))}
    assert scores["own"] > 0.8
    assert scores["own"] > max(v for k, v in scores.items() if k != "own") + 0.1, scores


def _volume(mesh):
    centres = (np.arange(SIDE) + 0.5) / SIDE - 0.5
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1)
    return contains(mesh, grid.reshape(-1, 3)).reshape(SIDE, SIDE, SIDE)


def test_the_fit_names_the_view_it_was_found_from():
    mesh = _l_shape()
    mask = _rendered_mask(mesh, 45.0, 15.0)
    volumes = [_volume(mesh), _volume(trimesh.creation.icosphere(3, radius=0.45)), np.zeros((SIDE,) * 3, bool)]
    scores, views = outline_fits(volumes, mask)
    assert scores.tolist() == outline_scores(volumes, mask).tolist()
    assert scores[0] > 0.8 and scores[0] > scores[1] + 0.1 and scores[2] == -1
    assert abs((views[0, 0] - 45.0 + 180) % 360 - 180) <= 15 and views[0, 1] in GRID_ELEVATIONS
    assert np.isnan(views[2]).all()  # no surface, no view
    grid = [(a, e) for a in GRID_AZIMUTHS for e in GRID_ELEVATIONS]  # project_outlines' order of views
    assert [grid_view(k) for k in range(len(grid))] == grid


def test_a_preview_is_the_solid_seen_from_the_view_asked_and_lit():
    mesh = _l_shape()
    volume = _volume(mesh)
    picture = shaded_view(volume, 45.0, 15.0, size=96)
    assert picture.shape == (96, 96, 3) and picture.dtype == np.uint8
    drawn = (picture < 255).any(axis=-1)
    target = frame_mask(_rendered_mask(mesh, 45.0, 15.0), side=96)
    assert (drawn & target).sum() / (drawn | target).sum() > 0.85  # the renderer's outline, framed alike
    other = frame_mask(_rendered_mask(mesh, 135.0, 15.0), side=96)
    assert (drawn & other).sum() / (drawn | other).sum() < 0.8  # and not another view's
    greys = picture[drawn].mean(axis=-1)
    assert greys.max() - greys.min() > 60  # faces turned to the light and away from it differ
    assert (shaded_view(np.zeros((SIDE,) * 3, bool), 0.0, 0.0) == 255).all()  # nothing to draw: white


def test_consensus_prefers_the_shape_the_samples_agree_on():
    """scripts/selection_study.py's consensus score (a rule the study measured, not the search's)."""
    import runpy
    from pathlib import Path

    study = Path(__file__).resolve().parents[1] / "scripts" / "selection_study.py"
    consensus_scores = runpy.run_path(str(study))["consensus_scores"]

    bar = trimesh.creation.box([0.8, 0.2, 0.2])
    volumes = [_volume(bar), _volume(bar.copy().apply_scale(0.6)),  # the same shape, smaller: the same normalised
               _volume(bar.copy().apply_translation([2 / SIDE, 3 / SIDE, 0])), _volume(_l_shape()),
               _volume(trimesh.creation.icosphere(3, radius=0.4)), np.zeros((SIDE, SIDE, SIDE), bool)]
    scores = consensus_scores(volumes)
    assert np.isneginf(scores[5])  # an empty sample is never kept
    assert scores[:3].min() > scores[3] > scores[4], scores  # three bars outvote the L, the L is nearer than a ball
    assert scores[0] == pytest.approx(scores[2], abs=1e-9)  # normalised each: where a sample sits does not count
    assert consensus_scores(volumes[:1]).tolist() == [0.0]  # nothing to agree with


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint):
    from vat.pipeline import Pipeline

    return Pipeline.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("batch", [16, 3])  # the samples in one batch; in two, the second one short
def test_search_keeps_the_sample_whose_outline_fits_best(pipeline, tmp_path, monkeypatch, batch):
    from conftest import draw_object_image
    from vat.preprocess import preprocess_image

    monkeypatch.setattr("vat.pipeline.SAMPLE_BATCH", batch)
    image = draw_object_image(tmp_path / "object.png", transparent=True)
    seed, k = 5, 4
    singles = [pipeline.generate(image=image, seed=seed + i) for i in range(k)]
    scores = pipeline.outline_scores([g.indices for g in singles], preprocess_image(image).mask)
    assert len(set(np.round(scores, 6))) > 1, "the samples should differ in outline for this test to mean anything"
    searched = pipeline.generate(image=image, seed=seed, search=k)
    assert searched.seed == seed + int(np.argmax(scores))
    # Every sample drawn comes back, in seed order, with its score and the tokens its seed alone gives.
    assert [s.seed for s in searched.samples] == list(range(seed, seed + k))
    assert [s.outline_score for s in searched.samples] == pytest.approx(scores.tolist())
    for sample, single in zip(searched.samples, singles):
        assert all(np.array_equal(a, b) for a, b in zip(sample.indices, single.indices))
        assert sample.occupancy.ndim == 3 and sample.occupancy.any() and len(sample.view) == 2
    other = searched.choose(seed + int(np.argmin(scores)))
    assert all(np.array_equal(a, b) for a, b in zip(other.indices, singles[other.seed - seed].indices))
    assert other.settings["outline_score"] == pytest.approx(scores.min()) and other.samples is searched.samples
    assert searched.settings["search"] == k
    assert searched.settings["outline_score"] == pytest.approx(scores.max())
    for a, b in zip(searched.indices, singles[searched.seed - seed].indices):  # seed alone gives it again
        np.testing.assert_array_equal(a, b)
    calls, batches = [], -(-k // batch)  # one progress step per scale of each batch
    pipeline.generate(image=image, seed=seed, search=k, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(d, batches * pipeline.num_scales) for d in range(1, batches * pipeline.num_scales + 1)]


@pytest.mark.slow
def test_drafts_finish_the_seeds_whose_coarse_outline_fits_best(pipeline, tmp_path, monkeypatch):
    from conftest import draw_object_image
    from vat.pipeline import DRAFT_GRID
    from vat.preprocess import preprocess_image

    monkeypatch.setattr("vat.pipeline.SAMPLE_BATCH", 4)  # 7 drafts in two batches
    image = draw_object_image(tmp_path / "object.png", transparent=True)
    mask = preprocess_image(image).mask
    seed, drafts, kept, scales = 5, 7, 3, 2
    singles = {s: pipeline.generate(image=image, seed=s).indices for s in range(seed, seed + drafts)}
    coarse = pipeline.outline_scores([singles[s] for s in singles], mask, scales=scales, grid=DRAFT_GRID)
    assert len(set(np.round(coarse, 6))) > 1, "the drafts should differ in outline for this test to mean anything"
    finished = sorted(seed + int(k) for k in np.argsort(-coarse, kind="stable")[:kept])
    full = pipeline.outline_scores([singles[s] for s in finished], mask)
    result = pipeline.generate(image=image, seed=seed, search=kept, drafts=drafts, draft_scales=scales)
    assert result.seed == finished[int(np.argmax(full))]
    assert result.settings["drafts"] == drafts and result.settings["draft_scales"] == scales
    assert result.settings["outline_score"] == pytest.approx(full.max())
    for a, b in zip(result.indices, singles[result.seed]):  # the kept seed alone gives it again
        np.testing.assert_array_equal(a, b)
    assert {"draft", "draft_search", "sample", "search"} <= set(result.timings)
    calls = []  # drafts: 2 batches of `scales`; the finished: one batch of every scale
    pipeline.generate(image=image, seed=seed, search=kept, drafts=drafts, draft_scales=scales,
                      progress=lambda done, total: calls.append((done, total)))
    total = 2 * scales + pipeline.num_scales
    assert calls == [(d, total) for d in range(1, total + 1)]


def test_search_refuses_what_it_cannot_do(pipeline, tmp_path):
    from conftest import draw_object_image

    with pytest.raises(VatError, match="needs an image"):
        pipeline.generate(text="a chair", search=2)
    with pytest.raises(VatError, match="positive whole number"):
        pipeline.generate(image=draw_object_image(tmp_path / "a.png"), search=0)
    with pytest.raises(VatError, match="outline"):  # no mask without preprocessing or alpha
        pipeline.generate(image=draw_object_image(tmp_path / "b.png"), search=2, preprocess=False)
    image = draw_object_image(tmp_path / "c.png")
    with pytest.raises(VatError, match="more than the samples kept"):
        pipeline.generate(image=image, search=4, drafts=4)
    with pytest.raises(VatError, match="draft scales must be 1 to"):
        pipeline.generate(image=image, search=2, drafts=4, draft_scales=pipeline.num_scales)
    with pytest.raises(VatError, match="they need an image"):
        pipeline.generate(text="a chair", drafts=4)
    for bad in (-1, 2.5):
        with pytest.raises(VatError, match="drafts must be a whole number"):
            pipeline.generate(image=image, drafts=bad)
    with pytest.raises(VatError, match="outline"):  # drafts are kept by their outline: no mask, no drafts
        pipeline.generate(image=image, drafts=4, preprocess=False)
