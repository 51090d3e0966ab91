"""The shipped default checkpoint (checkpoints/): it loads offline, is small, is documented, and
generates and round-trips meshes (what the demo does first on a fresh machine)."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from vat.geometry.extract import GRID_BOUND
from vat.geometry.procedural import random_shape
from vat.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints"
PARTS = ("tokenizer", "generator", "conditioning")


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline.from_pretrained(CHECKPOINT, device="cpu")


def test_folder_is_small_float16_and_has_a_model_card():
    total = sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file())
    assert total < 50 * 2**20
    for part in PARTS:
        with safe_open(CHECKPOINT / f"{part}.safetensors", "pt") as f:
            floats = {f.get_tensor(k).dtype for k in f.keys()} - {torch.int64, torch.int32, torch.bool}
            assert floats == {torch.float16}, part
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    assert "KatorLegaz" in card and "vat eval-recon" in card and "vat eval-gen" in card


def test_generates_a_mesh_from_an_example(pipeline):
    image = Image.open(ROOT / "examples" / "office-chair.png")
    result = pipeline.generate(image=image, seed=0, resolution=64)
    coarse, final = result.mesh(3), result.mesh()
    assert len(final.faces) > 0 and len(coarse.faces) > 0
    assert len(result.vat()) == 875 and len(result.vat(3)) < 875


def test_codec_round_trip(pipeline):
    codec = pipeline.codec
    encoded = codec.encode(random_shape(0).mesh)
    assert len(encoded.data) == 875
    mesh = codec.decode_mesh(codec.read(encoded.data), resolution=64)
    assert len(mesh.faces) > 0 and (abs(mesh.vertices) <= GRID_BOUND + 1e-6).all()


def test_grid_tokenizer_is_a_float16_codec_with_its_card():
    """checkpoints/tokenizer-tiny-grid: the locality-prior tokenizer on its own (no generator yet),
    a codec for vat encode / decode / eval-recon --checkpoint."""
    from vat.pipeline import MeshCodec

    folder = CHECKPOINT / "tokenizer-tiny-grid"
    with safe_open(folder / "tokenizer.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    codec = MeshCodec.from_pretrained(folder)
    assert codec.tokenizer.config.locality == "grid"
    encoded = codec.encode(random_shape(0).mesh)
    assert len(encoded.data) == 875
    mesh = codec.decode_mesh(codec.read(encoded.data), resolution=64)
    assert len(mesh.faces) > 0 and (abs(mesh.vertices) <= GRID_BOUND + 1e-6).all()
    card = (folder / "MODEL_CARD.md").read_text()
    assert "KatorLegaz" in card and "vat eval-recon" in card
