"""scripts/: the README figure maker runs end to end on a tiny random checkpoint."""

import runpy
import sys
from pathlib import Path

import pytest
from conftest import draw_object_image
from PIL import Image

from vat.errors import VatError
from vat.geometry.io import export_mesh
from vat.geometry.procedural import random_shape

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "coarse_to_fine.py"


def run_script(*argv):
    old = sys.argv
    sys.argv = [str(SCRIPT), *map(str, argv)]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old


@pytest.fixture(autouse=True)
def can_render():
    from vat.geometry.render import render_views

    try:
        render_views(random_shape(0).mesh, 1, 16)
    except VatError as exc:
        pytest.skip(f"cannot render here: {exc}")


def test_coarse_to_fine_of_a_generation(tiny_checkpoint, tmp_path):
    image = draw_object_image(tmp_path / "in.png")
    run_script(image, "-o", tmp_path / "fig.png", "--checkpoint", tiny_checkpoint, "--resolution", "24", "--size", "32")
    with Image.open(tmp_path / "fig.png") as figure:
        from vat.models.tokenizer import VAT

        scales = len(VAT.from_pretrained(tiny_checkpoint).config.scale_sides)
        assert figure.size == (32 * (scales + 1), 32 + 28)


def test_coarse_to_fine_of_a_mesh(tiny_checkpoint, tmp_path):
    export_mesh(random_shape(3).mesh, tmp_path / "shape.ply")
    run_script("--mesh", tmp_path / "shape.ply", "-o", tmp_path / "fig.png", "--checkpoint", tiny_checkpoint,
               "--resolution", "24", "--size", "32")
    assert Image.open(tmp_path / "fig.png").size[1] == 60
    with pytest.raises(SystemExit):
        run_script("-o", tmp_path / "x.png")  # neither an image nor a mesh
