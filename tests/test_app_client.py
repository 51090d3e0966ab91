"""The launched demo driven over HTTP by gradio_client, as a script or another Space would: image to
mesh with the image alone, the scale slider, downloads, mesh to tokens and back, bad input that
comes back as a message while the app keeps serving, and memory that stays bounded (per-session
caches, sessions held, files of ended sessions)."""

import logging
import re
import time

import pytest
import requests
import trimesh
from conftest import draw_object_image, free_port, like, mesh_facts
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from vat.app import gpu
from vat.app.handlers import F_SCORE
from vat.app.inputs import DEFAULT_RESOLUTION_CHOICE
from vat.app.sessions import MESHES_PER_SESSION, SESSION_TTL_S, SESSIONS, Session
from vat.geometry.extract import GRID_BOUND
from vat.ui import MAX_SEED


@pytest.fixture(scope="module")
def client(app_url, tmp_path_factory):
    return Client(app_url, verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("downloads")))


def _visitor(app_url, tmp_path) -> Client:
    """A new session: another visitor's script."""
    return Client(app_url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def _session_of(visitor: Client) -> Session:
    """The server's session of a client (the test runs the app in this process)."""
    return next(s for s, _ in SESSIONS._held.values() if s.name == Session.name_of(visitor.session_hash))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return str(draw_object_image(tmp_path_factory.mktemp("upload") / "object.png"))


@pytest.fixture(scope="module")
def box_mesh(tmp_path_factory):
    path = tmp_path_factory.mktemp("mesh") / "box.obj"
    trimesh.creation.box((1.0, 0.5, 0.25)).export(path)
    return path


def _faces(path) -> int:
    return len(trimesh.load(path, force="mesh").faces)


def test_generate_with_the_image_alone(client, image):
    seen, note, glb, seed, info, scales, readout = client.predict(handle_file(image), api_name="/generate")
    result = _session_of(client).results["generate"]  # the view: the library's decode of the session's tokens
    assert str(glb).endswith(".glb") and result.resolution == int(DEFAULT_RESOLUTION_CHOICE)
    assert mesh_facts(glb) == like(result.codec.decode_mesh(result.indices, resolution=result.resolution))
    # The slider's output is the number of scales, as view_api documents it (not a component update).
    assert isinstance(scales, (int, float)) and scales > 1 and f"Scale **{scales} of {scales}**" in readout
    assert f"Seed **{seed}**" in info and "removed by colour" in note and seen.endswith(".png")
    assert "builtin" not in note  # a method's name in the code is no word for a visitor
    # The slider's endpoint decodes a coarser mesh for the same session.
    coarse, line = client.predict(2, api_name="/show_scale")
    assert mesh_facts(coarse) == like(result.codec.decode_mesh(result.indices, scales=2, resolution=result.resolution))
    assert line.startswith(f"Scale **2 of {scales}**")
    mesh, vat = client.predict("stl", 400, True, 2, api_name="/download")
    assert mesh.endswith(".stl") and 0 < _faces(mesh) <= 440 and open(vat, "rb").read(3) == b"VAT"


def test_the_searchs_samples_and_another_chosen_by_seed(client, image):
    client.predict(handle_file(image), seed=5, resolution="64", search=3, api_name="/generate")
    gallery = client.predict(api_name="/samples")
    result = _session_of(client).results["generate"]
    assert [item["caption"] for item in gallery] == [f"seed {s.seed} · fit {s.outline_score:.2f}"
                                                     for s in result.samples_by_fit()]
    assert all(Image.open(item["image"]).size == (gpu.PREVIEW_SIZE,) * 2 for item in gallery)
    other = result.samples_by_fit()[-1]
    glb, info, scales, readout = client.predict(other.seed, api_name="/use_sample")
    assert info.startswith(f"Sample seed **{other.seed}**, chosen: 3rd best outline of 3")
    assert mesh_facts(glb) == like(result.codec.decode_mesh(other.indices, resolution=64))
    with pytest.raises(AppError, match="not one of this generation's samples"):
        client.predict(4, api_name="/use_sample")


def test_every_scale_is_shown_in_the_same_frame_with_what_changed(client, image):
    glb, readout = client.predict(handle_file(image), seed=3, resolution="64", api_name="/generate")[2::4]
    total = int(readout.split(" of ")[1].split("*")[0])
    finest = trimesh.load_scene(glb)
    coarsest, line = client.predict(1, api_name="/show_scale")
    # The viewer frames a file by its bounds: every scale's file spans the decoding grid's box.
    for view in (finest, trimesh.load_scene(coarsest)):
        assert view.bounds.ravel().tolist() == pytest.approx([-GRID_BOUND] * 3 + [GRID_BOUND] * 3, abs=1e-6)
    # The readout: tokens, bytes and faces of this scale, then a row for every scale (faces once decoded).
    assert line.startswith(f"Scale **1 of {total}**: 1 token (+1 in this scale's 1×1 map), ")
    assert "1 tokens" not in line
    table = [[c.strip(" *") for c in row.split("|")[1:-1]] for row in line.splitlines() if row.startswith("| ")]
    columns = dict(zip(table[0], zip(*table[1:])))
    assert list(columns) == ["scales", "tokens", "bytes", "faces"]
    assert columns["scales"] == tuple(str(s) for s in range(1, total + 1))
    tokens = [int(t.replace(",", "")) for t in columns["tokens"]]
    assert tokens[0] == 1 and tokens == sorted(tokens) and len(set(tokens)) == total
    assert columns["faces"][0] == f"{_faces(coarsest):,}" and columns["faces"][-1] == f"{_faces(glb):,}"
    # Scales not decoded yet have an empty cell, and the readout says why.
    assert set(columns["faces"][1:-1]) == {""} and "counted once it is decoded" in line


def _glb_accessor(gltf: dict, binary: bytes, index: int):
    """The array of a GLB's accessor `index` (unsigned bytes or floats, as the views here use)."""
    import numpy as np

    accessor = gltf["accessors"][index]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {5121: np.uint8, 5126: np.float32}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, accessor["count"] * width, start).reshape(-1, width)


def test_the_view_draws_the_boxs_12_edges_and_a_shaded_grey_mesh(client, image):
    import json
    import struct

    import numpy as np

    glb = client.predict(handle_file(image), resolution="64", api_name="/generate")[2]
    data = open(glb, "rb").read()
    length = struct.unpack("<I", data[12:16])[0]
    gltf, binary = json.loads(data[20:20 + length]), data[20 + length + 8:]
    primitives = [p for mesh in gltf["meshes"] for p in mesh["primitives"]]
    lines = next(p for p in primitives if p["mode"] == 1)
    # glTF lines come in pairs of points: the box's 12 edges, each along one axis (no face diagonals).
    segments = _glb_accessor(gltf, binary, lines["attributes"]["POSITION"]).reshape(-1, 2, 3)
    assert len(segments) == 12 and all((np.abs(a - b) > 1e-6).sum() == 1 for a, b in segments)
    # The mesh: grey, shaded (its colours vary with the surface's direction), drawn without the viewer's lights.
    triangles = next(p for p in primitives if p.get("mode", 4) == 4)
    rgb = _glb_accessor(gltf, binary, triangles["attributes"]["COLOR_0"])[:, :3].astype(float)
    assert np.ptp(rgb, axis=1).max() == 0 and 20 < rgb.mean() < 200 and rgb.std() > 5
    assert "KHR_materials_unlit" in gltf["extensionsUsed"]
    assert "KHR_materials_unlit" in gltf["materials"][triangles["material"]]["extensions"]


def test_an_explicit_seed_is_the_seed_used(client, image):
    for seed in (5, 5, 123456):
        used, info = client.predict(handle_file(image), seed=seed, resolution="64", api_name="/generate")[3:5]
        assert used == seed and f"Seed **{seed}**" in info
    # An empty seed is a random one.
    used = client.predict(handle_file(image), seed=None, resolution="64", api_name="/generate")[3]
    assert 0 <= used <= MAX_SEED


def test_resolution_takes_the_documented_type_on_every_endpoint(client, image, box_mesh):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    documented = {name: next(p for p in endpoints[name]["parameters"] if p["parameter_name"] == "resolution")
                  for name in ("/generate", "/encode", "/decode")}
    assert len({str(p["python_type"]) for p in documented.values()}) == 1
    assert all(p["parameter_default"] == DEFAULT_RESOLUTION_CHOICE for p in documented.values())
    vat = client.predict(handle_file(str(box_mesh)), "64", api_name="/encode")[3]
    decoded = client.predict(handle_file(vat), 0, "64", api_name="/decode")[0]
    codec = _session_of(client).results["encode"].codec
    assert mesh_facts(decoded) == like(codec.decode_mesh(codec.read(open(vat, "rb").read()), resolution=64))
    glb = client.predict(handle_file(image), resolution="64", api_name="/generate")[2]
    made = _session_of(client).results["generate"]
    assert mesh_facts(glb) == like(made.codec.decode_mesh(made.indices, resolution=64))
    # Anything else: the same message from each.
    calls = {"/generate": lambda r: client.predict(handle_file(image), resolution=r, api_name="/generate"),
             "/encode": lambda r: client.predict(handle_file(str(box_mesh)), r, api_name="/encode"),
             "/decode": lambda r: client.predict(handle_file(vat), 0, r, api_name="/decode")}
    for call in calls.values():
        for wrong in (64, "100"):
            with pytest.raises(AppError, match=f"Mesh resolution must be one of '64', '128', '256'.*got {wrong!r}"):
                call(wrong)


@pytest.mark.parametrize("endpoint, args, message", [
    ("/generate", dict(top_p=1.5), "Top-p (0: off) must be between 0 and 1, got 1.5"),
    ("/generate", dict(guidance_scale=-5), "Guidance scale (CFG) must be between 0 and 10, got -5"),
    ("/generate", dict(temperature=0), "Temperature must be between 0.05 and 2, got 0"),
    ("/generate", dict(top_k=2.5), "Top-k (0: off) must be a whole number, got 2.5"),
    ("/generate", dict(seed=-3), "Seed must be between 0 and 2147483647, got -3"),
    ("/generate", dict(foreground_ratio=2), "Foreground ratio must be between 0.5 and 1, got 2"),
    ("/procedural", dict(seed=-1), "Seed must be between 0 and 2147483647, got -1"),
    ("/download", dict(target_faces=-1), "Simplify to faces (0: keep all) must be between 0 and 1000000, got -1"),
    ("/download", dict(target_faces=1e9), "Simplify to faces (0: keep all) must be between 0 and 1000000, got 1000000000"),
    ("/show_scale", dict(scales=99), "Scales decoded must be between 1 and"),
    ("/use_sample", dict(sample_seed=-2), "Seed must be between 0 and 2147483647, got -2"),
    ("/use_sample", dict(sample_seed=2.5), "Seed must be a whole number, got 2.5"),
    ("/decode", dict(scales=-1), "Scales to decode (0: all) must be at least 0, got -1"),
])
def test_numbers_out_of_range_are_messages(client, image, box_mesh, caplog, endpoint, args, message):
    inputs = {"/generate": [handle_file(image)], "/decode": [handle_file(
        client.predict(handle_file(str(box_mesh)), "64", api_name="/encode")[3])]}.get(endpoint, [])
    if endpoint in ("/download", "/show_scale", "/use_sample"):
        client.predict(handle_file(image), resolution="64", api_name="/generate")
    with caplog.at_level(logging.WARNING, logger="vat.app"), pytest.raises(AppError) as error:
        client.predict(*inputs, **args, api_name=endpoint)
    assert message in str(error.value) and "unexpected" not in str(error.value)
    assert not [r for r in caplog.records if r.name == "vat.app"]  # nothing for the server log: no traceback


@pytest.mark.parametrize("endpoint, args, message", [
    ("/generate", dict(text=123), "Text prompt (optional) must be text, got 123"),
    ("/generate", dict(skip_background_removal="no"), "Skip background removal (keep the whole image) must be true "
                                                      "or false, got 'no'"),
    ("/generate", dict(image=123), "Image of one object must be a file (from gradio_client: handle_file(path)), "
                                   "got 123"),
    ("/preprocess", dict(image="photo.png"), "Image of one object must be a file"),
    ("/preprocess", dict(skip_background_removal=1), "Skip background removal (keep the whole image) must be true "
                                                     "or false, got 1"),
    ("/download", dict(file_format=3), "Format must be one of 'glb', 'obj', 'stl', 'ply', got 3"),
    ("/download", dict(remove_floaters="false"), "Remove floaters must be true or false, got 'false'"),
    ("/encode", dict(mesh_file={"path": 5}), "Mesh (.obj"),
    ("/decode", dict(vat_file=[1, 2]), ".vat file must be a file"),
    ("/compare", dict(reference_file=123), "Reference mesh (.obj"),
    ("/compare", dict(icp="yes"), "ICP-align first (as for generated meshes) must be true or false, got 'yes'"),
    ("/compare", dict(normalize="unit"), "Normalisation must be one of 'reference', 'each', 'none', got 'unit'"),
])
def test_every_input_of_the_wrong_type_is_a_message(client, image, box_mesh, caplog, endpoint, args, message):
    defaults = {"/generate": dict(image=handle_file(image)), "/preprocess": dict(image=handle_file(image)),
                "/encode": dict(mesh_file=handle_file(str(box_mesh))),
                "/decode": dict(vat_file=handle_file(str(box_mesh))),
                "/compare": dict(reference_file=handle_file(str(box_mesh)), other_file=handle_file(str(box_mesh)))}
    with caplog.at_level(logging.WARNING, logger="vat.app"), pytest.raises(AppError) as error:
        client.predict(**{**defaults.get(endpoint, {}), **args}, api_name=endpoint)
    assert message in str(error.value) and "unexpected" not in str(error.value)
    assert not [r for r in caplog.records if r.name == "vat.app"]  # not a bug: nothing for the server log


def test_compare_normalises_as_asked_and_says_when_the_boxes_differ(client, tmp_path):
    from vat.geometry import normalize_mesh

    torus = trimesh.creation.torus(1.0, 0.3).apply_translation((2.0, 0.0, 1.0))
    placed, unit = tmp_path / "torus.glb", tmp_path / "unit.obj"
    torus.export(placed)
    normalize_mesh(torus)[0].export(unit)  # the same shape in the unit cube, as a decoded .vat was
    report = client.predict(handle_file(str(placed)), handle_file(str(unit)), api_name="/compare")[0]
    assert f"{F_SCORE}** 0.000" in report
    assert "bounding boxes differ a lot" in report and "“Each in its own unit cube” under Normalisation" in report
    report, view = client.predict(handle_file(str(placed)), handle_file(str(unit)), False, "each",
                                  api_name="/compare")
    assert f"{F_SCORE}** 1.000" in report and "differ" not in report
    # The view shows the scored mesh where it was compared: in its own unit cube.
    assert trimesh.load(view, force="mesh").bounds == pytest.approx(normalize_mesh(torus)[0].bounds, abs=1e-4)


# A tetrahedron in 63 bytes of OBJ: smaller than any .vat file.
TETRAHEDRON = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def test_the_encode_report_says_when_the_file_grew(client, tmp_path):
    tiny = tmp_path / "tetra.obj"
    tiny.write_text(TETRAHEDRON)
    report = client.predict(handle_file(str(tiny)), "64", api_name="/encode")[2]
    size, vat = tiny.stat().st_size, int(report.split("→ **")[1].split(" bytes")[0].replace(",", ""))
    assert vat > size and f"no compression: the .vat ({vat:,} B) is {vat / size:.1f}x larger than the input " \
                          f"({size:,} B)" in report and "ratio" not in report


def test_messages_speak_the_pages_language(client, image, box_mesh, tmp_path):
    # "F-score@0.01" is an e-mail address to a Markdown renderer: the page would show a mailto: link.
    email = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*[A-Za-z0-9])+")
    report, readout = client.predict(handle_file(str(box_mesh)), "64", api_name="/encode")[2::3]
    scores = client.predict(handle_file(str(box_mesh)), handle_file(str(box_mesh)), False, api_name="/compare")[0]
    assert all("F-score" in text and not email.search(text) for text in (report, readout, scores))
    # A control's label, not a Python argument.
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 100), "white").save(blank)
    with pytest.raises(AppError, match="Skip background removal") as error:
        client.predict(handle_file(str(blank)), api_name="/generate")
    assert "remove_background" not in str(error.value)
    # A mesh whose vertices are all NaN says so.
    nan = tmp_path / "nan.obj"
    nan.write_text("v nan nan nan\nv nan nan nan\nv nan nan nan\nf 1 2 3\n")
    with pytest.raises(AppError, match="nan.obj has no face with finite vertices .*NaN"):
        client.predict(handle_file(str(nan)), "64", api_name="/encode")


def test_the_page_names_the_model_not_the_servers_folder(app_url, tiny_checkpoint):
    config = requests.get(f"{app_url}config", timeout=30).text
    assert str(tiny_checkpoint) not in config and f"Model: **{tiny_checkpoint.name}**" in config
    assert "How to use:" in config


@pytest.mark.parametrize("case", ["corrupt image", "not an image", "mesh of the wrong type", "empty mesh",
                                  "bad .vat"])
def test_bad_input_is_a_message_and_the_app_keeps_serving(client, image, box_mesh, tmp_path, case):
    png = open(image, "rb").read()
    bad = {"corrupt image": ("photo.png", png[: len(png) // 2]),  # truncated
           "not an image": ("notes.txt", b"just some text"),
           "mesh of the wrong type": ("mesh.txt", b"v 0 0 0"),
           "empty mesh": ("empty.obj", b""),
           "bad .vat": ("tokens.vat", b"PK\x03\x04" + bytes(60))}[case]
    path = tmp_path / bad[0]
    path.write_bytes(bad[1])
    endpoint, message, args = {
        "corrupt image": ("/generate", "photo.png could not be decoded", ()),
        "not an image": ("/generate", "notes.txt is not an image", ()),
        "mesh of the wrong type": ("/encode", "'mesh.txt' is not a mesh file vat reads", ("64",)),
        "empty mesh": ("/encode", "empty.obj is empty", ("64",)),
        "bad .vat": ("/decode", "not a .vat file", ()),
    }[case]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), *args, api_name=endpoint)
    good = image if endpoint == "/generate" else str(box_mesh)
    if endpoint == "/decode":
        good = client.predict(handle_file(str(box_mesh)), "64", api_name="/encode")[3]
    out = client.predict(handle_file(good), *args, api_name=endpoint)
    # What came back is the library's decode: of the generated tokens, of the encoded box's, of the file's.
    session = _session_of(client)
    if endpoint == "/decode":
        codec = session.results["encode"].codec
        expected = codec.decode_mesh(codec.read(open(good, "rb").read()), resolution=int(DEFAULT_RESOLUTION_CHOICE))
    else:
        made = session.results[endpoint[1:]]
        expected = made.codec.decode_mesh(made.indices, resolution=made.resolution)
    assert mesh_facts(out[{"/generate": 2, "/encode": 1, "/decode": 0}[endpoint]]) == like(expected)


def test_a_sessions_cache_stays_within_its_cap(app_url, image, tmp_path):
    visitor = _visitor(app_url, tmp_path)
    try:
        total = visitor.predict(handle_file(image), resolution="64", api_name="/generate")[5]
        for scales in range(1, total + 1):  # scrub through every scale, then download raw meshes
            visitor.predict(scales, api_name="/show_scale")
        for scales in (1, 2):
            visitor.predict("obj", 0, False, scales, api_name="/download")
        session = _session_of(visitor)
        assert 0 < len(session.meshes) <= MESHES_PER_SESSION
        # One file per slot: the mesh on show, the mesh and the .vat of the last download.
        assert sorted(f.suffix for f in session.folder.iterdir()) == [".glb", ".obj", ".vat"]
        # A new result replaces the old one's meshes.
        visitor.predict(handle_file(image), resolution="64", api_name="/generate")
        assert list(session.meshes) == [("generate", total, True)]
    finally:
        visitor.close()


def test_sessions_are_capped_expire_and_end_with_their_files(app_url, image, tmp_path, monkeypatch):
    monkeypatch.setattr(SESSIONS, "capacity", 2)
    visitors = [_visitor(app_url, tmp_path / str(i)) for i in range(4)]
    try:
        sessions = []
        for visitor in visitors[:3]:
            visitor.predict(handle_file(image), resolution="64", api_name="/generate")
            sessions.append(_session_of(visitor))
        # The least recently used session went: its results and its files.
        assert len(SESSIONS) <= 2 and sessions[0] not in SESSIONS and not sessions[0].folder.exists()
        with pytest.raises(AppError, match="results were released .*generate a mesh again"):
            visitors[0].predict(1, api_name="/show_scale")
        coarse = visitors[2].predict(1, api_name="/show_scale")[0]  # the others go on
        made = _session_of(visitors[2]).results["generate"]
        assert mesh_facts(coarse) == like(made.codec.decode_mesh(made.indices, scales=1, resolution=64))
        # Idle past the time-out: released at the next request.
        monkeypatch.setattr(SESSIONS, "ttl_s", 0.0)
        visitors[3].predict(handle_file(image), resolution="64", api_name="/generate")
        assert list(SESSIONS._held) == [_session_of(visitors[3]).name] and not sessions[2].folder.exists()
        # A closed connection ends its session now (demo.unload), files included.
        monkeypatch.setattr(SESSIONS, "ttl_s", SESSION_TTL_S)
        last = _session_of(visitors[3])
        assert any(last.folder.iterdir())
        visitors[3].close()
        for _ in range(80):
            if not last.folder.exists():
                break
            time.sleep(0.25)
        assert not last.folder.exists() and last not in SESSIONS
    finally:
        for visitor in visitors:
            visitor.close()


def test_missing_weights_say_how_to_get_them_and_compare_still_works(empty_checkpoint, image, box_mesh, tmp_path):
    demo = app.build_demo(empty_checkpoint, None)
    port = free_port()
    app.serve(demo, port=port, prevent_thread_lock=True)
    try:
        bare = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False,
                      download_files=str(tmp_path))
        with pytest.raises(AppError, match="weights are not in .*--checkpoint DIR_OR_HUB_ID"):
            bare.predict(handle_file(image), api_name="/generate")
        with pytest.raises(AppError, match="tokenizer weights are not in"):
            bare.predict(handle_file(str(box_mesh)), api_name="/encode")
        report, scored = bare.predict(handle_file(str(box_mesh)), handle_file(str(box_mesh)), False,
                                      api_name="/compare")
        assert f"{F_SCORE}** 1.000" in report and _faces(scored) == 12
    finally:
        demo.close()
