"""The vat Gradio demo (the Hugging Face Space's entry point): the page's layout over the handlers of
vat.app, one function per tab, and `main`. Run `python app.py [--checkpoint DIR_OR_HUB_ID] [--host H
--port P --share] [--max-sessions N]`.

Every handler has a stable api_name, so gradio_client can drive it: /generate takes the image first
and has a default for every other parameter (a seed it passes is the seed it gets; an empty one is
random). Models load once, on first use; without weights the app still starts and its model tabs say
how to get them. Memory stays bounded: a session keeps its latest results and a few decoded meshes,
and the server keeps --max-sessions sessions, none idle for more than an hour.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace

# vat.app before gradio: importing it sets up the process's temporary folder (vat/app/env.py), which
# gradio reads when it is imported.
from vat import __version__
from vat.app import gpu
from vat.app.handlers import Handlers, compare, pick_seed, procedural
from vat.app.inputs import (DECODE_SCALES, DEFAULT_RESOLUTION_CHOICE, EXPORT_CHOICES, FLOATERS_LABEL,
                            FOREGROUND_RATIO, FORMAT_LABEL, GUIDANCE, ICP_LABEL, IMAGE_LABEL, MESH_FILE_TYPES,
                            MESH_LABEL, NORMALIZATIONS, NORMALIZE_LABEL, OTHER_LABEL, REFERENCE_LABEL,
                            RESOLUTION_CHOICES, RESOLUTION_LABEL, SEARCH, SEED, SKIP_REMOVAL_LABEL, TARGET_FACES,
                            TEMPERATURE, TEXT_LABEL, TOP_K, TOP_P, VAT_LABEL, checked_upload)
from vat.app.models import CHECKPOINT_ENV, model_summary
from vat.app.sessions import MAX_SESSIONS, SESSION_TTL_S, SESSIONS, close_session, end_session
from vat.preprocess_config import DEFAULT_PREPROCESS
from vat.sampling_config import SamplingConfig

import gradio as gr  # after vat.app (above)

REPO = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = REPO / "checkpoints"
EXAMPLES_DIR = REPO / "examples"
QUEUE_SIZE = 16  # requests waiting beyond this are turned away with "queue full"
# System fonts: the default theme fetches its fonts from Google, which an offline machine cannot reach.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
# A slider's number box tells the server only when it loses focus; Enter makes it lose focus.
PAGE_JS = """() => document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && event.target.matches(".scale-slider input[type=number]")) event.target.blur();
})"""
# What the early scales show (measured with `vat eval-gen --per-scale`; model card, "Every prefix of scales").
SCALE_INFO = ("Scales 1-4 are coarse blobs that differ little from image to image (scale 1 is often the very "
              "same); the image's shape shows from about scale 5 to 7, and the last scales add detail.")


class Demo(Handlers):
    """The handlers of the demo over one checkpoint (vat.app.handlers); `build()` lays them out as gr.Blocks."""

    def __init__(self, checkpoint: str | os.PathLike | None = None,
                 examples: str | os.PathLike | None = EXAMPLES_DIR):
        super().__init__(checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT, examples)

    def header(self) -> str:
        """Title, what the demo is, how to use it, and the model with what to expect from it."""
        summary = model_summary(self.models.card())
        model = f"Model: **{self.models.name()}**"
        if summary:
            model += f" · {summary} ([model card](#model-card))"
        return (f"# vat {__version__}\n"
                "The Variational Tokenizer (arXiv 2412.02202): image to 3D by next-scale prediction, and a 3D "
                "codec that stores a shape in a few hundred bytes.\n\n"
                "**How to use:** upload a photo or render of one object (or click an example), press **Generate**, "
                "then move **Scales decoded** to see the shape built up from its first token to all of them.\n\n"
                + model)

    def build(self) -> gr.Blocks:
        num_scales = self.models.num_scales() or 10  # without a tokenizer the sliders serve nothing: any range
        card = self.models.card()
        with gr.Blocks(title="vat", analytics_enabled=False, delete_cache=(SESSION_TTL_S, SESSION_TTL_S)) as demo:
            state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_session)
            gr.Markdown(self.header(), elem_id="header")
            generate_tab(self, state, num_scales)
            codec_tab(self, state, num_scales)
            compare_tab(state)
            procedural_tab(state)
            if card:
                with gr.Accordion("Model card", open=False, elem_id="model-card"):
                    gr.Markdown(card)
            demo.unload(end_session)
        return demo


def scale_slider(num_scales: int, label: str, **kwargs) -> gr.Slider:
    # Its range is the checkpoint's from the start: the handlers return the slider a plain number
    # (what view_api documents), never a component update.
    return gr.Slider(1, num_scales, value=num_scales, step=1, label=label, elem_classes="scale-slider", **kwargs)


def resolution_radio() -> gr.Radio:
    return gr.Radio(RESOLUTION_CHOICES, value=DEFAULT_RESOLUTION_CHOICE, label=RESOLUTION_LABEL)


def temperature_info(sampling: SamplingConfig) -> str | None:
    last = sampling.temperature_last
    return None if last is None else f"at scale 1, going to {last:g} at the last scale (cooler fine scales)"


def generate_inputs(demo: Demo) -> SimpleNamespace:
    """The Image to 3D tab's input column: the image, the prompt and the settings, with the checkpoint's
    sampling defaults."""
    from vat.pipeline import DEFAULT_GENERATE_SEARCH

    sampling = demo.models.sampling()
    c = SimpleNamespace()
    c.image = checked_upload(gr.Image(label=IMAGE_LABEL, type="filepath", image_mode=None,
                                      sources=["upload", "clipboard"], height=280, elem_id="input-image"))
    c.text = gr.Textbox("", label=TEXT_LABEL, placeholder="a wooden chair", max_lines=2)
    with gr.Accordion("Preprocessing", open=False):
        c.foreground_ratio = gr.Slider(value=DEFAULT_PREPROCESS.foreground_ratio, step=0.01,
                                       **FOREGROUND_RATIO.ui(), info="share of the frame the object fills")
        c.skip_removal = gr.Checkbox(False, label=SKIP_REMOVAL_LABEL)
    with gr.Accordion("Sampling", open=False):
        with gr.Row():
            c.seed = gr.Number(0, precision=0, **SEED.ui())
            c.randomize = gr.Checkbox(True, label="Randomise seed")
        c.guidance = gr.Slider(value=sampling.cfg, step=0.1, **GUIDANCE.ui(),
                               info=f"{sampling.cfg_schedule} over the scales")
        c.temperature = gr.Slider(value=sampling.temperature, step=0.05, **TEMPERATURE.ui(),
                                  info=temperature_info(sampling))
        c.top_k = gr.Number(sampling.top_k, precision=0, **TOP_K.ui())
        c.top_p = gr.Slider(value=sampling.top_p, step=0.01, **TOP_P.ui())
        c.search = gr.Slider(value=DEFAULT_GENERATE_SEARCH, step=1, **SEARCH.ui(),
                             info="more samples fit the image better and take longer")
    c.resolution = resolution_radio()
    c.run = gr.Button("Generate", variant="primary", elem_id="generate-button")
    if demo.examples:
        gr.Examples([[p] for p in demo.examples], inputs=[c.image],
                    label="Examples (sources and licences: examples/README.md)", cache_examples=False,
                    examples_per_page=12)
    else:
        gr.Markdown("No example images in `examples/` yet.")
    return c


def generate_tab(demo: Demo, state: gr.State, num_scales: int) -> None:
    """Image to 3D: the inputs, what the model sees, the mesh with its scale slider, and downloads."""
    missing = demo.models.missing(needs_generator=True)
    with gr.Tab("Image to 3D", id="generate"):
        gr.Markdown(f"⚠️ {missing}", visible=bool(missing), elem_id="generate-missing")
        with gr.Row():
            with gr.Column(scale=1):
                c = generate_inputs(demo)
            with gr.Column(scale=1):
                seen = gr.Image(label="What the model sees", interactive=False, height=280, format="png",
                                elem_id="model-input")
                method = gr.Markdown(label="Background")
                gr.Markdown("**Samples** of the search, best outline first: click one to show its mesh.")
                gallery = gr.Gallery(label="Samples", show_label=False, columns=2, height=660, allow_preview=False,
                                     object_fit="contain", interactive=False, elem_id="samples-gallery")
            with gr.Column(scale=2):
                view = gr.Model3D(label="Mesh", height=420, clear_color=(1.0, 1.0, 1.0, 1.0), elem_id="mesh-view")
                scale = scale_slider(num_scales, "Scales decoded (coarse to fine)", elem_id="scale-slider",
                                     info=SCALE_INFO)
                readout = gr.Markdown(label="Scale readout", elem_id="scale-readout")
                info = gr.Markdown(label="Generation info", elem_id="generate-info")
                with gr.Accordion("Download", open=False):
                    with gr.Row():
                        file_format = gr.Dropdown(EXPORT_CHOICES, value="glb", label=FORMAT_LABEL)
                        target_faces = gr.Number(0, precision=0, **TARGET_FACES.ui())
                        floaters = gr.Checkbox(True, label=FLOATERS_LABEL)
                    prepare = gr.Button("Prepare files")
                    with gr.Row():
                        mesh_file = gr.File(label="Mesh", interactive=False)
                        vat_file = gr.File(label=".vat tokens", interactive=False)
        preview_inputs = [c.image, c.foreground_ratio, c.skip_removal]
        gr.on([c.image.change, c.foreground_ratio.release, c.skip_removal.input], demo.preview_on_page,
              preview_inputs, [seen, method], api_visibility="private", trigger_mode="always_last", preprocess=False)
        # The API's /preprocess raises its errors as every endpoint does (a button never shown).
        gr.Button(visible=False).click(demo.preview, preview_inputs, [seen, method], api_name="preprocess",
                                       preprocess=False)
        # The button first picks the seed (random when ticked), then generates with it; an API call
        # to /generate skips that step, so a seed it passes is the seed it gets.
        c.run.click(pick_seed, [c.seed, c.randomize], [c.seed], api_visibility="private", queue=False,
                    preprocess=False).then(
            demo.generate,
            [c.image, c.text, c.seed, c.guidance, c.temperature, c.top_k, c.top_p, c.resolution, c.foreground_ratio,
             c.skip_removal, c.search, state],
            [seen, method, view, c.seed, info, scale, readout, state], api_name="generate",
            concurrency_id="model", preprocess=False, show_progress_on=[view]).success(
            demo.samples, [state], [gallery, state], api_name="samples", preprocess=False)
        shown = [view, info, scale, readout, state]
        gallery.select(demo.pick_sample, [state], shown, api_visibility="private", concurrency_id="model",
                       preprocess=False)
        # The API's /use_sample takes the sample's seed (a box and button never shown).
        sample_seed = gr.Number(0, precision=0, visible=False)
        gr.Button(visible=False).click(demo.use_sample, [sample_seed, state], shown, api_name="use_sample",
                                       concurrency_id="model", preprocess=False)
        scale.release(demo.show_scale, [scale, state], [view, readout, state], api_name="show_scale",
                      trigger_mode="always_last", concurrency_id="model", preprocess=False)
        prepare.click(demo.download, [file_format, target_faces, floaters, scale, state],
                      [mesh_file, vat_file, state], api_name="download", concurrency_id="model", preprocess=False)


def codec_tab(demo: Demo, state: gr.State, num_scales: int) -> None:
    """Mesh to tokens: encode a mesh (and scrub its reconstruction's scales), decode a .vat file."""
    missing = demo.models.missing(needs_generator=False)
    with gr.Tab("Mesh to tokens", id="codec"):
        gr.Markdown(f"⚠️ {missing}", visible=bool(missing), elem_id="codec-missing")
        gr.Markdown("Encode a mesh into the tokenizer's tokens (a `.vat` file), see it rebuilt from the "
                    "first scales, and decode `.vat` files back into meshes.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = checked_upload(gr.File(label=MESH_LABEL, file_types=MESH_FILE_TYPES))
                encode_resolution = resolution_radio()
                encode_run = gr.Button("Encode", variant="primary")
                source_view = gr.Model3D(label="Input (unit cube)", height=300)
            with gr.Column(scale=2):
                recon_view = gr.Model3D(label="Reconstruction", height=420)
                recon_scale = scale_slider(num_scales, "Scales decoded")
                recon_readout = gr.Markdown(label="Reconstruction readout")
                report = gr.Markdown(label="Encoding report")
                encoded_file = gr.File(label=".vat tokens", interactive=False)
        encode_run.click(demo.encode, [upload, encode_resolution, state],
                         [source_view, recon_view, report, encoded_file, recon_scale, recon_readout, state],
                         api_name="encode", concurrency_id="model", preprocess=False)
        recon_scale.release(demo.show_reconstruction, [recon_scale, state], [recon_view, recon_readout, state],
                            api_name="show_reconstruction", trigger_mode="always_last", concurrency_id="model",
                            preprocess=False)
        gr.Markdown("### Tokens to mesh")
        with gr.Row():
            with gr.Column(scale=1):
                vat_upload = checked_upload(gr.File(label=VAT_LABEL, file_types=[".vat"]))
                decode_scales = gr.Number(0, precision=0, **DECODE_SCALES.ui())
                decode_resolution = resolution_radio()
                decode_run = gr.Button("Decode", variant="primary")
            with gr.Column(scale=2):
                decoded_view = gr.Model3D(label="Decoded mesh (unit cube)", height=360)
                decoded_info = gr.Markdown(label="Decoding info")
                decoded_file = gr.File(label="GLB (where the encoded mesh was)", interactive=False)
        decode_run.click(demo.decode, [vat_upload, decode_scales, decode_resolution, state],
                         [decoded_view, decoded_info, decoded_file, state], api_name="decode",
                         concurrency_id="model", preprocess=False)


def compare_tab(state: gr.State) -> None:
    """Compare meshes: F-score and Chamfer of one mesh against another (no model needed)."""
    with gr.Tab("Compare meshes", id="compare"):
        with gr.Row():
            reference = checked_upload(gr.File(label=REFERENCE_LABEL))
            other = checked_upload(gr.File(label=OTHER_LABEL))
        normalize = gr.Radio(NORMALIZATIONS, value="reference", label=NORMALIZE_LABEL,
                             info="where the two meshes are put before they are compared")
        icp = gr.Checkbox(label=ICP_LABEL, value=False)
        score = gr.Button("Compare", variant="primary")
        score_report = gr.Markdown(label="Scores", elem_id="compare-report")
        scored_view = gr.Model3D(label="Mesh scored (where it was compared)")
        score.click(compare, [reference, other, icp, normalize, state], [score_report, scored_view, state],
                    api_name="compare", preprocess=False)


def procedural_tab(state: gr.State) -> None:
    """Procedural shapes: a watertight shape from a seed, an input for Mesh to tokens."""
    with gr.Tab("Procedural shapes", id="procedural"):
        shape_seed = gr.Number(0, precision=0, **SEED.ui())
        make = gr.Button("Make shape", variant="primary")
        shape_view = gr.Model3D(label="Shape")
        caption = gr.Markdown(label="Caption")
        shape_file = gr.File(label="Download GLB (an input for Mesh to tokens)")
        make.click(procedural, [shape_seed, state], [shape_view, caption, shape_file, state],
                   api_name="procedural", preprocess=False)


def build_demo(checkpoint: str | os.PathLike | None = None,
               examples: str | os.PathLike | None = EXAMPLES_DIR) -> gr.Blocks:
    """The demo's Blocks over `checkpoint` (default: $VAT_CHECKPOINT, else the repo's checkpoints/)."""
    return Demo(checkpoint, examples).build()


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
          prevent_thread_lock: bool = False):
    """Queue (bounded) and launch; returns what gr.Blocks.launch returns."""
    demo.queue(max_size=QUEUE_SIZE)
    # show_error: a message gradio itself raises before a handler runs (a malformed upload, see
    # vat.app.inputs.checked_upload) reaches the client; the handlers' own errors are gr.Errors, shown either way.
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
                       theme=THEME, js=PAGE_JS, quiet=prevent_thread_lock, show_error=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Launch the vat demo.")
    # A Space names its host and port in gradio's environment variables; elsewhere: localhost:7860.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--checkpoint", default=os.environ.get(CHECKPOINT_ENV) or str(DEFAULT_CHECKPOINT),
                        help=f"folder or Hugging Face hub id of the models (default: ${CHECKPOINT_ENV}, else "
                             f"{DEFAULT_CHECKPOINT})")
    parser.add_argument("--examples", default=str(EXAMPLES_DIR), help="folder of example images")
    parser.add_argument("--max-sessions", type=int, default=MAX_SESSIONS,
                        help=f"visitors whose results are held in memory; the least recently active go first "
                             f"(default {MAX_SESSIONS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    SESSIONS.capacity = args.max_sessions
    # A host stops the app with SIGTERM: handled as Ctrl-C, gradio closes its server (deleting its
    # cached files) and the exit handlers remove this process's files.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = Demo(args.checkpoint, args.examples)
    if gpu.spaces is not None:
        demo.models.preload()
    serve(demo.build(), args.host, args.port, args.share)


if __name__ == "__main__":
    main()
