"""What the command line and the demo share with their users: the ranges and defaults of the values a
user sets (one range everywhere), and the words for results. Light on purpose (no torch, no numpy):
`vat --help` imports it.
"""

from __future__ import annotations

MAX_SEED = 2**31 - 1  # seeds are 0 .. MAX_SEED in the CLI, the demo and its API
# Marching-cubes grids, in cells per side. The demo offers RESOLUTIONS; the CLI takes any value in
# [MIN_RESOLUTION, MAX_RESOLUTION] (below, the grid misses whole parts; above, a CPU takes many minutes).
RESOLUTIONS = (64, 128, 256)
DEFAULT_RESOLUTION = 128  # the demo's "Standard", and `vat generate` / `vat decode`
PROTOCOL_RESOLUTION = 256  # the evaluation protocol's grid (docs/protocol.md): the eval commands' and the bench's
MIN_RESOLUTION, MAX_RESOLUTION = 16, 512
# "Simplify to faces": a mesh decoded at 256^3 has well under this many faces.
MAX_TARGET_FACES = 1_000_000
# Samples of the searches (vat.pipeline.MeshCodec.encode and Pipeline.generate, whose own default is 1).
DEFAULT_SEARCH = 8  # what `vat encode`, `vat eval-recon` and the demo use
DEFAULT_GENERATE_SEARCH = 8  # what `vat generate`, `vat eval-gen` and the demo use
# Drafts of the generator-side search (Pipeline.generate(drafts=M)): how many first scales a draft has.
DEFAULT_DRAFT_SCALES = 6
# Refinement steps of the encoder's latent (vat.refine; MeshCodec.encode's own default is 0). On 7 validation
# pieces (search 8, 128^3) F@0.01 was 0.577 / 0.584 / 0.643 / 0.644 for N = 0 / 10 / 20 / 40.
DEFAULT_REFINE = 20  # what `vat encode`, `vat eval-recon`, `vat bench` and the demo use
# Samplings of the surface averaged into each candidate's latent (MeshCodec.encode(average=A); its own default is 1).
DEFAULT_AVERAGE = 1  # what `vat encode`, `vat eval-recon`, `vat bench` and the demo use
MAX_AVERAGE = 64

# How the object was cut out of an input image (vat.preprocess: Preprocessed.method), in words that
# follow "Background: ".
BACKGROUND_METHODS = {
    "alpha": "the image's own transparency",
    "rembg": "removed by rembg's segmentation model",
    "grabcut": "removed with OpenCV's GrabCut, started from a cut-out by colour (rembg's model is not on this "
               "machine); a transparent PNG is surest",
    "builtin": "removed by colour: what differs from the colour along the image's border is the object (rembg's "
               "model is not on this machine); works for an object on a plain background, or give a transparent PNG",
    "none": "kept (removal skipped)",
}
# Pipeline.generate's timings, in words (decoding a mesh is timed as "decode...").
STAGES = {"preprocess": "preprocessing", "condition": "encoding the image", "sample": "sampling tokens",
          "draft": "drafting coarse scales", "draft_search": "choosing drafts", "search": "outline search",
          "decode": "decoding the mesh"}


def stage_times(timings: dict, sep: str = ", ") -> str:
    """'preprocessing 0.02 s, sampling tokens 1.50 s, ...': a Generation's timings for people; the
    decodes of every mesh (keys decode_s<S>...) add up under one label."""
    seconds: dict[str, float] = {}
    for key, value in timings.items():
        stage = "decode" if key.startswith("decode") else key
        seconds[stage] = seconds.get(stage, 0.0) + value
    return sep.join(f"{STAGES.get(stage, stage)} {value:.2f} s" for stage, value in seconds.items())


def byte_count(size: int) -> str:
    """'875 B', '46,400 B': a file size as the readouts print it."""
    return f"{size:,} B"


def size_change(input_bytes: int, vat_bytes: int) -> str:
    """What encoding did to the size, said plainly whichever way it went: 'compression ratio 53x (the
    .vat's 875 B against the input's 46,400 B)', or 'no compression: the .vat (875 B) is 1.9x larger
    than the input (464 B)'."""
    if vat_bytes <= 0 or input_bytes <= 0:
        raise ValueError(f"sizes must be positive, got {input_bytes} and {vat_bytes}")
    ratio = input_bytes / vat_bytes
    if ratio < 1:
        return (f"no compression: the .vat ({byte_count(vat_bytes)}) is {_times(1 / ratio)} larger than the "
                f"input ({byte_count(input_bytes)})")
    return (f"compression ratio {_times(ratio)} (the .vat's {byte_count(vat_bytes)} against the input's "
            f"{byte_count(input_bytes)})")


def _times(ratio: float) -> str:
    """1.9x, 12x, 1,320x: two significant digits at most where it matters."""
    return f"{ratio:.1f}x" if ratio < 10 else f"{ratio:,.0f}x"
