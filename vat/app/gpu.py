"""The demo's model calls. On a Hugging Face Space with ZeroGPU each runs in a worker process forked
from the server, with a GPU attached for the call and its arguments and result pickled across: so they
take and return plain data (paths, numbers, arrays, meshes) and find the models, loaded before the fork
(Models.preload), by checkpoint name. Elsewhere they are plain calls."""

from __future__ import annotations

from vat.app.models import models_for
from vat.geometry.extract import drop_floaters
from vat.geometry.silhouette import shaded_view
from vat.tokens import Sample, Tokens
from vat.ui import DEFAULT_AVERAGE, DEFAULT_REFINE, DEFAULT_SEARCH

try:  # Hugging Face Spaces (ZeroGPU): a GPU is attached only while a decorated call runs
    import spaces
except ImportError:
    spaces = None

GPU_SECONDS = 120  # ZeroGPU time asked for per model call
PREVIEW_SIZE = 128  # pixels a side of the pictures of the outline search's samples


def on_gpu(fn):
    """`spaces.GPU` on a Hugging Face Space (ZeroGPU attaches a GPU for the call), a no-op elsewhere."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn


@on_gpu
def generate_tokens(checkpoint: str, image: str | None, text: str | None, seed: int, settings: dict,
                    progress=None) -> dict:
    """vat.pipeline.Pipeline.generate, reduced to plain data: the tokens per scale, the image the
    model saw, how its background was found, the timings, the search's samples (vat.tokens.Sample without
    occupancy) and a PREVIEW_SIZE picture of each that has a surface (seed -> uint8 [H, W, 3], floaters left out).
    `settings`: generate's keyword arguments."""
    samples = settings.get("search", 1)  # at most SEARCH.maximum = SAMPLE_BATCH: drawn as one batch

    def on_scale(done: int, total: int) -> None:
        if progress is not None:
            desc = f"Sampling scale {done} of {total}" + (f", {samples} samples at once" if samples > 1 else "")
            progress((done, total), desc=desc, unit="scales")

    result = models_for(checkpoint).pipeline().generate(image=image, text=text, seed=seed, progress=on_scale,
                                                        **settings)
    # The search's samples travel without their occupancy grids; a small picture of each stands in for them,
    # without the floaters the shown mesh loses (vat.geometry.extract.postprocess).
    previews = {s.seed: shaded_view(drop_floaters(s.occupancy), *s.view, size=PREVIEW_SIZE) for s in result.samples
                if s.outline_score >= 0}
    samples = [Sample(s.seed, s.indices, s.outline_score, s.view) for s in result.samples]
    return dict(indices=result.indices, input_image=result.input_image, method=result.preprocess_method,
                timings=result.timings, settings=result.settings, seed=result.seed, warning=result.preprocess_warning,
                samples=samples, previews=previews)


@on_gpu
def tokens_to_mesh(checkpoint: str, indices: list, scales: int, resolution: int, clean: bool = True):
    """The mesh (in the unit cube) of the first `scales` scales of `indices` at `resolution`, cleaned or raw:
    vat.tokens.Tokens.mesh of tokens made for this call, so the caller's session stays the one mesh cache."""
    return Tokens(list(indices), models_for(checkpoint).codec(), resolution=resolution).mesh(scales, clean=clean)


@on_gpu
def encode_mesh(checkpoint: str, mesh):
    """vat.pipeline.MeshCodec.encode (with the encoder-side search and refinement `vat encode` uses): a
    vat.tokens.Tokens with its .vat file written (pickled across without its codec: set .codec again)."""
    return models_for(checkpoint).codec().encode(mesh, search=DEFAULT_SEARCH, refine=DEFAULT_REFINE,
                                                  average=DEFAULT_AVERAGE)
