r"""The README's coarse-to-fine figure: generate from an image with the shipped (or any) model, decode
the mesh from the first s scales for every s, render one view of each, and tile them with the
input image on the left and the token count and .vat bytes under each.

    python scripts/coarse_to_fine.py examples/office-chair.png -o coarse-to-fine.png --seed 0
    python scripts/coarse_to_fine.py examples/*.png --scales 1,3,6,10 -o docs/examples-scales.png   # a row each
    python scripts/coarse_to_fine.py --mesh chair.obj -o docs/chair-scales.png   # the tokenizer alone

With --mesh the tokenizer encodes that mesh instead (reconstruction per scale, no generator).
Run it with vat importable: after `pip install -e .` (the README's install), or with the repository on the path
(`PYTHONPATH=. python scripts/coarse_to_fine.py ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from vat.errors import VatError
from vat.geometry.io import load_mesh
from vat.geometry.render import composite_on_white, render_view
from vat.pipeline import DEFAULT_GENERATE_SEARCH, DEFAULT_SEARCH, MeshCodec, Pipeline
from vat.sampling_config import DEFAULT_SAMPLING
from vat.tokens import Tokens


def tile(panels: list[tuple[Image.Image, str]], size: int) -> Image.Image:
    """One row of square panels, each with a caption underneath."""
    caption = 28
    sheet = Image.new("RGB", (size * len(panels), size + caption), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, text) in enumerate(panels):
        sheet.paste(image.convert("RGB").resize((size, size)), (k * size, 0))
        draw.text((k * size + 6, size + 7), text, fill=(40, 40, 40))
    return sheet


def first_panel(args, image: str | None = None) -> tuple[list[tuple[Image.Image, str]], Tokens]:
    """The input panel and the tokens: a generation from the image, or (--mesh) the mesh's own
    tokens; both are Tokens, so they decode, count and size scales the same way."""
    if args.mesh:
        codec = MeshCodec.from_pretrained(args.checkpoint)
        mesh = load_mesh(args.mesh)
        first = render_view(mesh, args.azimuth, args.elevation, args.size)
        result = codec.encode(mesh, search=DEFAULT_SEARCH)  # as `vat encode` does
        return [(Image.fromarray(composite_on_white(first.rgba)), "input mesh")], result
    result = Pipeline.from_pretrained(args.checkpoint).generate(image=image, seed=args.seed, cfg=args.cfg,
                                                                resolution=args.resolution, search=args.search)
    return [(result.input_image, f"{Path(image).stem} (seed {args.seed})")], result


def row(args, image: str | None = None) -> Image.Image:
    """The input's panel and one panel per scale of --scales (default: every scale)."""
    panels, result = first_panel(args, image)
    scales = [int(s) for s in args.scales.split(",")] if args.scales else range(1, result.num_scales + 1)
    for s in scales:
        try:
            view = render_view(result.mesh(s, args.resolution), args.azimuth, args.elevation, args.size)
            picture = Image.fromarray(composite_on_white(view.rgba))
        except VatError as exc:  # an empty coarse scale has no surface to draw
            picture = Image.new("RGB", (args.size, args.size), "white")
            ImageDraw.Draw(picture).text((8, args.size // 2), f"no surface ({type(exc).__name__})", fill=(120, 0, 0))
        panels.append((picture, f"s={s}: {result.tokens_at(s)} tok, {len(result.vat(s))} B"))
    return tile(panels, args.size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="*", help="input image(s) (generation; one row each)")
    p.add_argument("--mesh", help="encode this mesh instead of generating")
    p.add_argument("-o", "--out", required=True, help="PNG to write")
    p.add_argument("--checkpoint", default="checkpoints", help="model folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, default=DEFAULT_SAMPLING.cfg,
                   help=f"classifier-free guidance scale (default {DEFAULT_SAMPLING.cfg}: the library's)")
    p.add_argument("--search", type=int, default=DEFAULT_GENERATE_SEARCH,
                   help=f"samples to keep the best outline of (default {DEFAULT_GENERATE_SEARCH}, as the demo)")
    p.add_argument("--resolution", type=int, default=128, help="marching-cubes grid per panel")
    p.add_argument("--size", type=int, default=192, help="panel side in pixels")
    p.add_argument("--azimuth", type=float, default=35.0)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--scales", help="the scales to show, e.g. 1,3,6,10 (default: every scale)")
    args = p.parse_args(argv)
    if bool(args.image) == bool(args.mesh):
        p.error("give images or --mesh")

    try:
        rows = [row(args, image) for image in args.image] if args.image else [row(args)]
    except VatError as exc:  # a missing checkpoint, a bad image or mesh: one line, no traceback
        raise SystemExit(f"coarse_to_fine: {exc}") from exc
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    for k, picture in enumerate(rows):
        sheet.paste(picture, (0, sum(r.height for r in rows[:k])))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(rows)} row(s) of the input and {args.scales or 'every scale'}")


if __name__ == "__main__":
    main()
