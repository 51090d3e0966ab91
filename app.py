"""The vat Gradio demo: a thin UI over the vat library. Run `python app.py [--host H --port P --share]`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gradio as gr

from vat import __version__
from vat.errors import VatError
from vat.geometry import export_mesh, load_mesh
from vat.geometry.procedural import random_shape
from vat.metrics import compare_meshes

OUTPUT_DIR = Path(tempfile.mkdtemp(prefix="vat-app-"))


def _out(name: str) -> Path:
    return Path(tempfile.mkdtemp(dir=OUTPUT_DIR)) / name


def compare(reference_file: str | None, other_file: str | None, icp: bool):
    if not reference_file or not other_file:
        raise gr.Error("Upload two meshes: a reference and one to score against it.")
    try:
        reference, other = load_mesh(reference_file), load_mesh(other_file)
        result = compare_meshes(reference, other, icp=icp)
    except VatError as exc:
        raise gr.Error(str(exc)) from exc
    report = (
        f"**F-score@0.01** {result['f_score']:.3f} · **Chamfer-L1** {result['chamfer']:.5f} · "
        f"precision {result['precision']:.3f} · recall {result['recall']:.3f}"
    )
    return report, str(export_mesh(other, _out("other.glb")))


def procedural(seed: float):
    shape = random_shape(int(seed))
    glb = export_mesh(shape.mesh, _out(f"shape-{int(seed)}.glb"))
    return str(glb), f"**{shape.caption}** · {len(shape.mesh.faces):,} faces · watertight", str(glb)


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="vat") as demo:
        gr.Markdown(
            f"# vat {__version__}\nThe Variational Tokenizer as a 3D codec, and image-to-3D generation "
            "(arXiv 2412.02202). This release ships the geometry foundation: the evaluation protocol and "
            "the procedural shape generator. Tokenizer and generator tabs arrive with their models."
        )
        with gr.Tab("Compare meshes"):
            with gr.Row():
                reference = gr.File(label="Reference mesh (.obj .ply .stl .glb .gltf .off)")
                other = gr.File(label="Mesh to score")
            icp = gr.Checkbox(label="ICP-align first (as for generated meshes)", value=False)
            run = gr.Button("Compare", variant="primary")
            report = gr.Markdown()
            view = gr.Model3D(label="Mesh scored (in the reference's unit cube)")
            run.click(compare, [reference, other, icp], [report, view], api_name="compare")
        with gr.Tab("Procedural shapes"):
            seed = gr.Number(label="Seed", value=0, precision=0)
            make = gr.Button("Make shape", variant="primary")
            shape_view = gr.Model3D(label="Shape")
            caption = gr.Markdown()
            download = gr.File(label="Download GLB")
            make.click(procedural, [seed], [shape_view, caption, download], api_name="procedural")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="Launch the vat demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args()
    build_demo().queue(max_size=16).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
