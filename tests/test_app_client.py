"""The launched demo driven over HTTP by gradio_client, as a script or another Space would: image to
mesh with the image alone, the scale slider, downloads, mesh to tokens and back, and bad input that
comes back as a message while the app keeps serving."""

import pytest
import trimesh
from conftest import draw_object_image, free_port
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app


@pytest.fixture(scope="module")
def client(app_url, tmp_path_factory):
    return Client(app_url, verbose=False, analytics_enabled=False,
                  download_files=str(tmp_path_factory.mktemp("downloads")))


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
    seen, note, glb, seed, info, slider, readout = client.predict(handle_file(image), api_name="/generate")
    assert str(glb).endswith(".glb") and _faces(glb) > 0
    scales = slider["value"]
    assert slider["maximum"] == scales > 1 and f"Scale **{scales} of {scales}**" in readout
    assert f"Seed **{seed}**" in info and "built-in segmentation" in note and seen.endswith(".png")
    # The slider's endpoint decodes a coarser mesh for the same session.
    coarse, line = client.predict(2, api_name="/show_scale")
    assert _faces(coarse) > 0 and line.startswith(f"Scale **2 of {scales}**")
    mesh, vat = client.predict("stl", 400, True, 2, api_name="/download")
    assert mesh.endswith(".stl") and 0 < _faces(mesh) <= 440 and open(vat, "rb").read(3) == b"VAT"


def test_preprocess_endpoint(client, image):
    seen, note = client.predict(handle_file(image), 0.6, True, api_name="/preprocess")
    assert seen.endswith(".png") and "Background kept" in note


def test_mesh_to_tokens_and_tokens_to_mesh(client, box_mesh):
    source, recon, report, vat, slider, readout = client.predict(handle_file(str(box_mesh)), 64, api_name="/encode")
    data = open(vat, "rb").read()
    assert data[:3] == b"VAT" and f"**{len(data)} bytes**" in report and "compression ratio" in report
    assert _faces(source) == 12 and _faces(recon) > 0 and "F-score@0.01" in readout
    coarse, line = client.predict(1, api_name="/show_reconstruction")
    assert _faces(coarse) > 0 and line.startswith("Scale **1 of")
    decoded, info, download = client.predict(handle_file(vat), 0, 64, api_name="/decode")
    assert _faces(decoded) > 0 and f"{len(data)} bytes" in info and download.endswith(".glb")


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
        "mesh of the wrong type": ("/encode", "Invalid file type", (64,)),
        "empty mesh": ("/encode", "empty.obj is empty", (64,)),
        "bad .vat": ("/decode", "not a .vat file", ()),
    }[case]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), *args, api_name=endpoint)
    good = image if endpoint == "/generate" else str(box_mesh)
    if endpoint == "/decode":
        good = client.predict(handle_file(str(box_mesh)), 64, api_name="/encode")[3]
    out = client.predict(handle_file(good), *args, api_name=endpoint)
    assert _faces(out[2] if endpoint == "/generate" else out[0]) > 0


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
        assert "F-score@0.01** 1.000" in report and _faces(scored) == 12
    finally:
        demo.close()
