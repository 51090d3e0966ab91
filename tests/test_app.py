"""The demo's handlers, called directly: real results for good input, a gr.Error (never a traceback)
for bad input, models loaded once, session files cleaned up. (test_app_client.py drives the launched
app over HTTP; test_app_browser.py drives it in Chromium.)"""

import pickle
import shutil
import threading
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import trimesh
from conftest import draw_object_image, like, mesh_facts

import app
from vat.app import gpu
from vat.app.handlers import F_SCORE, compare, example_images, ordinal, procedural
from vat.app.inputs import EXPORT_CHOICES, SEARCH, TEMPERATURE
from vat.app.models import SUMMARY_MARKER, Models, model_summary
from vat.app.sessions import OUTPUT_ROOT, SESSION_TTL_S, SESSIONS, close_session, end_session
from vat.geometry.extract import postprocess
from vat.geometry.procedural import random_shape
from vat.pipeline import DEFAULT_GENERATE_SEARCH, SAMPLE_BATCH, Pipeline
from vat.tokens import Tokens
from vat.ui import MAX_SEED


@pytest.fixture(scope="module")
def demo(tiny_checkpoint, examples_dir):
    return app.Demo(tiny_checkpoint, examples_dir)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return str(draw_object_image(tmp_path_factory.mktemp("img") / "object.png"))


class Progress:
    """Stands in for gr.Progress: records what the handler reports."""

    def __init__(self):
        self.calls = []

    def __call__(self, value, desc=None, total=None, unit="steps"):
        self.calls.append((value, desc))


@pytest.fixture(scope="module")
def generated(demo, image):
    progress = Progress()
    out = demo.generate(image, seed=7, resolution="64", progress=progress)
    return out, progress


def _faces(path) -> int:
    return len(trimesh.load(path, force="mesh").faces)


def test_generate_reports_every_scale_and_returns_a_mesh(demo, generated, image):
    (seen, note, glb, seed, info, slider, readout, session), progress = generated
    result = session.results["generate"]
    total, samples = result.num_scales, DEFAULT_GENERATE_SEARCH  # an image gets the search by default
    assert SEARCH.maximum <= SAMPLE_BATCH  # the demo's samples are drawn as one batch: a step per scale
    assert [value for value, _ in progress.calls[:-1]] == [(s, total) for s in range(1, total + 1)]
    assert progress.calls[1][1] == f"Sampling scale 2 of {total}, {samples} samples at once"
    assert "Decoding" in progress.calls[-1][1]
    assert seed == 7 and "Seed **7**" in info and f"{len(result.vat())} bytes" in info
    kept = int(info.split("(sample seed ")[1].split(")")[0])
    assert f"best outline of {samples} samples" in info and 7 <= kept < 7 + samples
    alone = demo.generate(image, seed=kept, resolution="64", search=1, progress=Progress())[-1]
    assert np.array_equal(np.concatenate(alone.results["generate"].indices), np.concatenate(result.indices))
    # The view is the library's own decode of the kept tokens, at the tab's grid.
    assert mesh_facts(glb) == like(result.codec.decode_mesh(result.indices, resolution=64))
    assert seen.size == (512, 512) and "removed by colour" in note
    assert slider == total
    assert readout.startswith(f"Scale **{total} of {total}**")
    # Skipping background removal frames the whole image.
    kept = demo.generate(image, seed=7, resolution="64", skip_background_removal=True,
                         progress=Progress())
    assert kept[3] == 7 and "Background: kept" in kept[1]


def test_text_only_and_seed_reproducibility(demo, image):
    a = demo.generate(image, seed=11, resolution="64", search=1, progress=Progress())[-1]
    b = demo.generate(image, seed=11, resolution="64", search=1, progress=Progress())[-1]
    c = demo.generate(image, seed=12, resolution="64", search=1, progress=Progress())[-1]
    tokens = [np.concatenate(s.results["generate"].indices) for s in (a, b, c)]
    assert np.array_equal(tokens[0], tokens[1]) and not np.array_equal(tokens[0], tokens[2])
    text_only = demo.generate(None, text="a red ball", resolution="64", progress=Progress())
    made = text_only[-1].results["generate"]
    assert text_only[0] is None and 0 <= text_only[3] <= MAX_SEED  # no image to show; a random seed
    assert mesh_facts(text_only[2]) == like(made.codec.decode_mesh(made.indices, resolution=64))
    assert "best outline" not in text_only[4]  # no image, no outline: one sample
    with pytest.raises(gr.Error, match="Samples"):
        demo.generate(image, search=0, progress=Progress())


def test_scale_slider_decodes_on_demand_and_caches(demo, generated, monkeypatch):
    session = generated[0][-1]
    result = session.results["generate"]
    decodes, original = [], gpu.tokens_to_mesh

    def counting(checkpoint, indices, scales, *args, **kwargs):
        decodes.append(scales)
        return original(checkpoint, indices, scales, *args, **kwargs)

    monkeypatch.setattr(gpu, "tokens_to_mesh", counting)
    glb, readout, _ = demo.show_scale(2, session)
    assert mesh_facts(glb) == like(result.codec.decode_mesh(result.indices, scales=2, resolution=64))
    assert readout.startswith(f"Scale **2 of {result.num_scales}**: {result.tokens_at(2)} tokens")
    assert f"{len(result.vat(2))} bytes" in readout and len(result.vat(2)) < len(result.vat())
    assert demo.show_scale(2, session)[0] == glb and demo.show_scale(1, session)[0] != glb
    assert decodes == [2, 1]  # scale 2 was decoded once, then came from the session's cache
    with pytest.raises(gr.Error, match="between 1 and"):
        demo.show_scale(result.num_scales + 1, session)
    with pytest.raises(gr.Error, match="generate a mesh"):
        demo.show_scale(1, None)


def test_the_searchs_samples_are_shown_best_first_and_another_can_be_chosen(demo, image, monkeypatch):
    session = demo.generate(image, seed=20, resolution="64", search=4, progress=Progress())[-1]
    result = session.results["generate"]
    pictures, captions = zip(*demo.samples(session)[0])
    ranked = sorted(result.samples, key=lambda s: (-s.outline_score, s.seed))
    assert ranked == result.samples_by_fit()
    assert [s.seed for s in result.samples] == [20, 21, 22, 23] and len(captions) == 4
    assert [int(c.split()[1]) for c in captions] == [s.seed for s in ranked]  # best fit first
    assert captions[0] == f"seed {ranked[0].seed} · fit {ranked[0].outline_score:.2f}"
    assert ranked[0].seed == result.seed  # the search kept the first
    assert all(p.shape == (gpu.PREVIEW_SIZE, gpu.PREVIEW_SIZE, 3) and (p < 255).any() for p in pictures)
    # The gallery's second picture, clicked: that sample's mesh, info and readout, and what the tab then uses.
    picked = demo.pick_sample(session, gr.SelectData(None, {"index": 1, "value": None}))
    glb, info, slider, readout, _ = picked
    chosen = session.results["generate"]
    assert chosen.seed == ranked[1].seed and slider == chosen.num_scales
    assert all(np.array_equal(a, b) for a, b in zip(chosen.indices, ranked[1].indices))
    assert mesh_facts(glb) == like(result.codec.decode_mesh(ranked[1].indices, resolution=64))
    assert info.startswith(f"Sample seed **{ranked[1].seed}**, chosen: 2nd best outline of 4 (fit ")
    assert f"{len(chosen.vat()):,} bytes" in info and readout.startswith(f"Scale **{chosen.num_scales} of")
    with open(demo.download("glb", 0, True, 0, session)[1], "rb") as f:
        assert f.read() == chosen.vat()
    # The same sample by seed (the API's /use_sample); the gallery keeps its order and pictures.
    assert mesh_facts(demo.use_sample(ranked[1].seed, session)[0]) == mesh_facts(glb)
    assert [c for _, c in demo.samples(session)[0]] == list(captions)
    with pytest.raises(gr.Error, match="not one of this generation's samples"):
        demo.use_sample(99, session)
    with pytest.raises(gr.Error, match="no longer on show"):
        demo.pick_sample(session, gr.SelectData(None, {"index": 4, "value": None}))
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "111th"]
    one = demo.generate(image, seed=20, resolution="64", search=1, progress=Progress())[-1]
    assert demo.samples(one)[0] == []  # a single sample: nothing to choose from
    with pytest.raises(gr.Error, match="generate a mesh"):
        demo.use_sample(20, None)


@pytest.mark.parametrize("file_format", EXPORT_CHOICES)
def test_downloads_in_every_format(demo, generated, file_format):
    session = generated[0][-1]
    result = session.results["generate"]
    path, vat_path, _ = demo.download(file_format, 0, True, 3, session)
    assert path.endswith(f".{file_format}")
    assert mesh_facts(path) == like(result.codec.decode_mesh(result.indices, scales=3, resolution=64))
    with open(vat_path, "rb") as f:
        data = f.read()
    assert data == result.vat(3) and len(result.codec.read(data)) == 3


def test_download_simplifies_and_keeps_floaters_on_request(demo, generated):
    session = generated[0][-1]
    full = len(session.results["generate"].mesh().faces)
    simplified, _, _ = demo.download("obj", 500, True, 0, session)
    assert 0 < _faces(simplified) <= 550 < full
    raw, _, _ = demo.download("ply", 0, False, 0, session)
    assert _faces(raw) >= full  # floaters kept: at least the faces of the cleaned mesh
    result = session.results["generate"]  # the raw extraction, only tidied (vat.geometry.extract.postprocess)
    kept = postprocess(result.codec.decode_mesh(result.indices, resolution=64, clean=False), remove_floaters=False)
    assert mesh_facts(raw) == like(kept)
    with pytest.raises(gr.Error, match="at least 4"):
        demo.download("glb", 2, True, 0, session)
    with pytest.raises(gr.Error, match="Format must be one of"):
        demo.download("fbx", 0, True, 0, session)


def test_preview_shows_what_the_model_sees(demo, tmp_path):
    rgba = draw_object_image(tmp_path / "cutout.png", transparent=True)
    seen, note = demo.preview(str(rgba), 0.5)
    assert seen.size == (512, 512) and "transparency" in note
    # A smaller foreground ratio leaves more white around the object.
    white = lambda im: (np.asarray(im) > 250).all(-1).mean()  # noqa: E731
    assert white(seen) > white(demo.preview(str(rgba), 0.95)[0])
    assert demo.preview(None) == (None, "")
    assert "Background: kept" in demo.preview(str(rgba), 0.85, True)[1]


def test_a_photo_is_cut_out_with_grabcut_and_a_doubtful_cut_out_is_flagged(demo, tmp_path):
    pytest.importorskip("cv2")
    from PIL import Image
    from skimage.data import coffee

    Image.fromarray(coffee()).save(tmp_path / "coffee.png")
    seen, note = demo.preview(str(tmp_path / "coffee.png"))
    assert "GrabCut" in note and "⚠️" not in note
    clutter = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(clutter).save(tmp_path / "clutter.png")
    assert "transparent background" in demo.preview(str(tmp_path / "clutter.png"))[1]
    out = demo.generate(str(tmp_path / "clutter.png"), seed=1, resolution="64", search=1, progress=Progress())
    assert "⚠️" in out[1] and "transparent background" in out[1]


def test_mesh_to_tokens_and_back(demo, tmp_path):
    mesh_path = tmp_path / "box.obj"
    trimesh.creation.box((1.0, 0.6, 0.3)).export(mesh_path)
    source, recon, report, vat_path, slider, readout, session = demo.encode(str(mesh_path), "64")
    result = session.results["encode"]
    data = open(vat_path, "rb").read()
    ratio = mesh_path.stat().st_size / len(data)
    assert f"**{len(data)} bytes**" in report and f"compression ratio {ratio:.1f}x" in report and F_SCORE in report
    assert "placement kept: centre (0, 0, 0), size 1" in report and result.vat() == data  # the slider's bytes too
    assert _faces(source) == 12 and slider == result.num_scales
    assert mesh_facts(recon) == like(result.codec.decode_mesh(result.indices, resolution=64))
    assert type(result) is Tokens and result.resolution == 64  # what MeshCodec.encode returned, at the tab's grid
    glb, line, _ = demo.show_reconstruction(1, session)
    assert mesh_facts(glb) == like(result.codec.decode_mesh(result.indices, scales=1, resolution=64))
    assert line.startswith(f"Scale **1 of {result.num_scales}**") and F_SCORE in line
    # Decodes are timed under Tokens.mesh's keys, and the session is the one cache of the meshes.
    assert set(result.timings) == {f"decode_s{result.num_scales}_r64", "decode_s1_r64"} and not result._meshes
    decoded, info, download, _ = demo.decode(vat_path, 2, "64", session)
    assert mesh_facts(decoded) == like(result.codec.decode_mesh(result.codec.read(data), scales=2, resolution=64))
    assert "decoded from 2" in info and f"{len(data)} bytes" in info


def test_the_codec_tab_shows_the_files_bytes_and_placement(demo, tmp_path):
    """The .vat's bytes and the placement stored in it (where decoding puts the mesh back), on encoding and
    on decoding; the decoded GLB is put back there, the view stays in the unit cube."""
    mesh_path = tmp_path / "placed.obj"
    trimesh.creation.box((3.0, 1.5, 0.75)).apply_translation((2.0, -1.0, 0.5)).export(mesh_path)
    _, _, report, vat_path, _, _, session = demo.encode(str(mesh_path), "64")
    data = open(vat_path, "rb").read()
    codec = session.results["encode"].codec
    stored = codec.read_file(data).placement
    assert stored.values().tolist() == [2.0, -1.0, 0.5, 3.0]  # exact in float16
    assert f"**{len(data)} bytes** of .vat" in report and "placement kept: centre (2, -1, 0.5), size 3" in report
    view, info, glb, _ = demo.decode(vat_path, 0, "64", session)
    assert info.startswith(f"placed.vat: **{len(data)} bytes** (format v2, ")
    assert "placement stored: centre (2, -1, 0.5), size 3 (the GLB is put back there)" in info
    unit = gpu.tokens_to_mesh(demo.checkpoint, codec.read(data), len(codec.read(data)), 64)
    assert trimesh.load(glb, force="mesh").bounds == pytest.approx(stored.apply(unit).bounds, abs=1e-4)
    assert trimesh.load(view, force="mesh").bounds == pytest.approx(unit.bounds, abs=1e-4)
    # A file without a placement (as version 1 wrote them) decodes in the unit cube, and says so.
    bare = tmp_path / "bare.vat"
    bare.write_bytes(codec.write(codec.read(data)))
    _, info, glb, _ = demo.decode(str(bare), 0, "64", session)
    assert f"bare.vat: **{bare.stat().st_size} bytes**" in info and "no placement stored" in info
    assert trimesh.load(glb, force="mesh").bounds == pytest.approx(unit.bounds, abs=1e-4)


@pytest.mark.parametrize("content, message",
                         [(b"", "upload.obj is empty"), (b"not a mesh at all", "no triangle faces")])
def test_bad_meshes_are_messages(demo, tmp_path, content, message):
    bad = tmp_path / "upload.obj"
    bad.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        demo.encode(str(bad))
    with pytest.raises(gr.Error, match="upload a mesh"):
        demo.encode(None)


def test_bad_vat_and_bad_image_are_messages(demo, tmp_path):
    bad = tmp_path / "tokens.vat"
    bad.write_bytes(b"VAT\x01 not really")
    with pytest.raises(gr.Error, match="not a .vat file"):
        demo.decode(str(bad))
    corrupt = tmp_path / "photo.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    # The upload arrives as gradio's file dict: the message names the file, not the server path.
    upload = {"path": str(corrupt), "orig_name": "holiday.png"}
    with pytest.raises(gr.Error, match="holiday.png") as error:
        demo.generate(upload, progress=Progress())
    assert str(tmp_path) not in str(error.value)
    with pytest.raises(gr.Error, match="holiday.png"):
        demo.preview(upload)
    with pytest.raises(gr.Error, match="upload an image"):
        demo.generate(None, progress=Progress())


def test_without_weights_tabs_say_how_to_get_them(empty_checkpoint, image):
    bare = app.Demo(empty_checkpoint, None)
    for call in (lambda: bare.generate(image, progress=Progress()), lambda: bare.encode(image)):
        with pytest.raises(gr.Error, match="--checkpoint DIR_OR_HUB_ID"):
            call()
    notices = _notices(bare.build())
    assert len(notices) == 2 and all(n.visible and "--checkpoint" in n.value for n in notices)
    # The compare tool needs no weights.
    glb = procedural(2)[2]
    assert f"{F_SCORE}** 1.000" in compare(glb, glb, False)[0]


def _notices(blocks: gr.Blocks) -> list:
    """The missing-weights notices of the model tabs."""
    return [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) in ("generate-missing", "codec-missing")]


def test_with_weights_the_notices_are_hidden(demo):
    notices = _notices(demo.build())
    assert len(notices) == 2 and not any(n.visible for n in notices)


def test_queue_is_bounded_and_sessions_are_cleaned_up(demo, monkeypatch):
    blocks = demo.build()
    monkeypatch.setattr(blocks, "launch", lambda **kwargs: kwargs)
    launched = app.serve(blocks, port=1234, prevent_thread_lock=True)
    assert blocks._queue.max_size == app.QUEUE_SIZE and launched["server_port"] == 1234
    states = [b for b in blocks.blocks.values() if isinstance(b, gr.State)]
    assert len(states) == 1 and states[0].delete_callback is close_session
    assert states[0].time_to_live == SESSION_TTL_S
    unload = [f for f in blocks.fns.values() if any(t[1] == "unload" for t in f.targets)]
    assert [f.fn for f in unload] == [end_session]


def test_every_handler_has_a_stable_api_name_and_generate_needs_only_the_image(demo):
    blocks = demo.build()
    endpoints = blocks.get_api_info()["named_endpoints"]
    assert set(endpoints) == {f"/{n}" for n in ("preprocess", "generate", "samples", "use_sample", "show_scale",
                                                "download", "encode", "show_reconstruction", "decode", "compare",
                                                "procedural")}
    first, *rest = endpoints["/generate"]["parameters"]
    assert first["parameter_name"] == "image" and not first["parameter_has_default"]
    assert [p["parameter_name"] for p in rest][:3] == ["text", "seed", "guidance_scale"]
    assert all(p["parameter_has_default"] for p in rest)


def test_the_scale_slider_says_what_the_early_scales_show(tiny_checkpoint, examples_dir, tmp_path):
    blocks = app.Demo(tiny_checkpoint, examples_dir).build()
    slider = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "scale-slider")
    assert "Scales 1-4" in slider.info and "differ little from image to image" in slider.info
    sliders = {b.label: b for b in blocks.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders[TEMPERATURE.label].info is None  # a constant temperature: nothing to add
    cooled = tmp_path / "cooled"
    shutil.copytree(tiny_checkpoint, cooled)
    (cooled / "sampling_config.json").write_text('{"temperature": 1.0, "temperature_last": 0.4}')
    blocks = app.Demo(cooled, examples_dir).build()
    sliders = {b.label: b for b in blocks.blocks.values() if isinstance(b, gr.Slider)}
    assert "0.4 at the last scale" in sliders[TEMPERATURE.label].info


def test_models_load_once_under_concurrent_first_requests(tiny_checkpoint, monkeypatch):
    calls = []
    original = Pipeline.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(counting))
    models = Models(tiny_checkpoint)
    pipelines, codecs = [], []
    threads = [threading.Thread(target=lambda: pipelines.append(models.pipeline())) for _ in range(4)]
    threads += [threading.Thread(target=lambda: codecs.append(models.codec())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(pipelines) == 4 and len(codecs) == 2
    assert all(p is pipelines[0] for p in pipelines) and all(c is pipelines[0].codec for c in codecs)


def test_codec_tabs_work_when_the_generator_cannot_load(tiny_checkpoint, image, monkeypatch, tmp_path):
    def unavailable(*args, **kwargs):
        raise ImportError("no transformers here", name="transformers")

    monkeypatch.setattr(Pipeline, "from_pretrained", unavailable)
    # A copy: the app keeps one Models per checkpoint name, and the original's pipeline is loaded.
    bare = app.Demo(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint"), None)
    mesh_path = tmp_path / "ball.stl"
    trimesh.creation.icosphere(2).export(mesh_path)
    out = bare.encode(str(mesh_path), "64")
    encoded = out[-1].results["encode"]
    assert mesh_facts(out[1]) == like(encoded.codec.decode_mesh(encoded.indices, resolution=64))
    with pytest.raises(gr.Error, match="need the package 'transformers'.*pip install -r requirements.txt"):
        bare.generate(image, progress=Progress())


@pytest.mark.slow
def test_model_calls_take_and_return_plain_data(demo, image, tmp_path, monkeypatch):
    # On a ZeroGPU Space the model calls run in a forked worker, their arguments and results pickled.
    crossings = []
    for name in ("generate_tokens", "tokens_to_mesh", "encode_mesh"):
        def across(*args, _call=getattr(gpu, name), progress=None, **kwargs):
            args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
            result = _call(*args, **kwargs, **({} if progress is None else {"progress": progress}))
            crossings.append(_call.__name__)
            return pickle.loads(pickle.dumps(result))

        monkeypatch.setattr(gpu, name, across)
    session = demo.generate(image, resolution="64", progress=Progress())[-1]
    result = session.results["generate"]  # the meshes that came back are the library's decodes of its tokens
    coarse = result.codec.decode_mesh(result.indices, scales=1, resolution=64, clean=False)
    assert mesh_facts(demo.show_scale(1, session)[0]) == like(postprocess(coarse))
    assert mesh_facts(demo.download("glb", 0, False, 1, session)[0]) == like(postprocess(coarse, remove_floaters=False))
    mesh_path = tmp_path / "ball.obj"
    trimesh.creation.icosphere(2).export(mesh_path)
    vat_path = demo.encode(str(mesh_path), "64", session)[3]
    data = open(vat_path, "rb").read()
    assert mesh_facts(demo.decode(vat_path, 1, "64", session)[0]) == like(
        result.codec.decode_mesh(result.codec.read(data), scales=1, resolution=64))
    assert crossings == ["generate_tokens", "tokens_to_mesh", "tokens_to_mesh", "tokens_to_mesh", "encode_mesh",
                         "tokens_to_mesh", "tokens_to_mesh"]


@pytest.mark.slow
def test_session_files_are_removed_when_the_session_ends(demo, image):
    request = SimpleNamespace(session_hash="../../abc")  # the hash comes from the client: never a path
    state = demo.generate(image, resolution="64", request=request, progress=Progress())[-1]
    assert state.folder.parent == OUTPUT_ROOT and any(state.folder.iterdir())
    end_session(request)  # demo.unload: the tab closed
    assert not state.folder.exists() and state not in SESSIONS and not state.meshes
    with pytest.raises(gr.Error, match="results were released"):
        demo.show_scale(1, state)
    state = demo.generate(image, resolution="64", state=state, progress=Progress())[-1]  # a new result starts it again
    assert any(state.folder.iterdir())
    close_session(state)  # gr.State's delete_callback: the state expired
    assert not state.folder.exists() and state not in SESSIONS
    close_session(None)


@pytest.mark.slow
def test_a_new_result_drops_the_old_ones_raw_meshes(demo, image):
    session = demo.generate(image, resolution="64", progress=Progress())[-1]
    first = session.results["generate"]
    demo.download("glb", 0, False, 2, session)
    assert {("generate", first.num_scales, True), ("generate", 2, False)} <= set(session.meshes)
    session = demo.generate(image, resolution="64", progress=Progress(), state=session)[-1]
    assert session.results["generate"] is not first and set(session.meshes) == {("generate", first.num_scales, True)}


def test_gpu_decorator_only_on_spaces(monkeypatch):
    def fn():
        return 1

    monkeypatch.setattr(gpu, "spaces", None)
    assert gpu.on_gpu(fn) is fn
    seen = {}

    def gpu_for(duration):
        seen["duration"] = duration
        return lambda f: ("on gpu", f)

    monkeypatch.setattr(gpu, "spaces", SimpleNamespace(GPU=gpu_for))
    assert gpu.on_gpu(fn) == ("on gpu", fn) and seen["duration"] == gpu.GPU_SECONDS


def test_examples_are_the_images_of_the_folder(tmp_path, examples_dir):
    assert [p.rsplit("/", 1)[-1] for p in example_images(examples_dir)] == ["red-disc.png"]
    assert example_images(tmp_path / "missing") == [] and example_images(None) == []
    assert isinstance(app.Demo(None, tmp_path).build(), gr.Blocks)  # no examples: still builds


def test_procedural_and_compare(tmp_path):
    view, caption, glb, session = procedural(5)
    shape = random_shape(5).mesh
    assert mesh_facts(view) == like(shape) and mesh_facts(glb) == like(shape)
    assert caption.startswith("**a") and glb.startswith(str(session.folder))
    report, view, _ = compare(glb, glb, False, state=session)
    assert f"{F_SCORE}** 1.000" in report and view.startswith(str(session.folder))
    moved = trimesh.load(glb, force="mesh").apply_translation((0.05, 0, 0))
    moved.export(tmp_path / "moved.ply")
    assert float(compare(glb, str(tmp_path / "moved.ply"))[0].split("** ")[1].split(" ")[0]) < 0.9
    with pytest.raises(gr.Error, match="Upload two meshes"):
        compare(None, glb, False)


def test_main_parses_the_documented_flags(monkeypatch, tiny_checkpoint):
    launched, handlers = {}, {}
    monkeypatch.setattr(app, "serve", lambda demo, host, port, share: launched.update(host=host, port=port, share=share,
                                                                                       demo=demo))
    monkeypatch.setattr(app.signal, "signal", lambda number, handler: handlers.update({number: handler}))
    monkeypatch.setattr(SESSIONS, "capacity", SESSIONS.capacity)
    app.main(["--host", "0.0.0.0", "--port", "7999", "--share", "--checkpoint", str(tiny_checkpoint),
              "--max-sessions", "3"])
    assert launched["host"] == "0.0.0.0" and launched["port"] == 7999 and launched["share"] is True
    assert isinstance(launched["demo"], gr.Blocks) and SESSIONS.capacity == 3
    # SIGTERM (how a host stops the app) is Ctrl-C: gradio closes and the exit handlers remove the files.
    assert handlers == {app.signal.SIGTERM: app.signal.default_int_handler}


def test_the_header_names_the_model_and_says_what_to_expect(tiny_checkpoint, tmp_path):
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "checkpoint")
    card = f"# vat-test\n\n{SUMMARY_MARKER}\n**What to expect:** blobs.\n\n## More\n"
    (folder / "MODEL_CARD.md").write_text(card)
    blocks = app.Demo(folder, None).build()
    header = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "header").value
    assert "How to use:" in header and str(folder) not in header
    assert "Model: **vat-test** · **What to expect:** blobs. ([model card](#model-card))" in header
    accordion = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "model-card")
    assert [b.value for b in accordion.children] == [card.strip()]
    # The shipped model card carries the line the page shows.
    assert model_summary((app.DEFAULT_CHECKPOINT / "MODEL_CARD.md").read_text()).startswith("**What to expect:**")


def test_the_sampling_controls_start_at_the_checkpoints_setting(tiny_checkpoint, examples_dir, tmp_path, image):
    """A checkpoint's sampling_config.json sets the sliders, and a generation that leaves them unset uses it."""
    chosen = tmp_path / "chosen"
    shutil.copytree(tiny_checkpoint, chosen)
    (chosen / "sampling_config.json").write_text('{"cfg": 3.0, "cfg_schedule": "constant", "temperature": 0.8}')
    blocks = app.Demo(chosen, examples_dir).build()
    sliders = {b.label: b for b in blocks.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["Guidance scale (CFG)"].value == 3.0 and sliders["Temperature"].value == 0.8
    assert "constant" in sliders["Guidance scale (CFG)"].info
    session = app.Demo(chosen, examples_dir).generate(image, seed=1, resolution="64", progress=Progress())[-1]
    used = session.results["generate"].settings
    assert (used["cfg"], used["cfg_schedule"], used["temperature"], used["top_k"]) == (3.0, "constant", 0.8, 0)
