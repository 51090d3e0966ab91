"""The demo's handlers: real results for good input, a gr.Error (never a traceback) for bad input."""

import gradio as gr
import pytest
import trimesh

import app


def test_demo_builds():
    assert isinstance(app.build_demo(), gr.Blocks)


def test_procedural_and_compare(tmp_path):
    glb, caption, download = app.procedural(5)
    assert len(trimesh.load(glb, force="mesh").faces) > 0 and caption.startswith("**a")
    report, view = app.compare(glb, glb, False)
    assert "F-score@0.01** 1.000" in report


@pytest.mark.parametrize("content", [b"", b"not a mesh at all"])
def test_bad_upload_is_a_message(tmp_path, content):
    bad = tmp_path / "upload.obj"
    bad.write_bytes(content)
    good, _, _ = app.procedural(1)
    with pytest.raises(gr.Error):
        app.compare(str(bad), good, False)
    with pytest.raises(gr.Error, match="Upload two meshes"):
        app.compare(None, good, False)
