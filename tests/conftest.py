"""Shared fixtures: a tiny random checkpoint folder (every model of the pipeline, real classes, random
weights) that the app and its tests run end to end on a CPU in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Nothing in the tests may reach the network: no gradio telemetry, no hub look-ups.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vat.bench import free_port  # noqa: E402, F401  (the app tests launch servers on one)

# Sizes of the tiny checkpoint: 64 latent tokens in 6 scales (1, 2, 3, 4, 6, 8), a 64-entry codebook,
# 28 px images in 14 px patches (2 x 2 + CLS tokens); a few hundred thousand parameters in all.
TINY_TOKENIZER = dict(num_points=512, width=32, heads=2, num_queries=32, num_latents=64, encoder_layers=1,
                      decoder_layers=1, latent_channels=4, codebook_size=64, triplane_tokens=2, plane_channels=4,
                      mlp_hidden=16, num_frequencies=4)
# The same sizes in the shipped design (locality="grid", preset tiny-grid): the 64 tokens are a 4 x 4 x 4
# latent grid, decoded with one x2 upsampling.
TINY_GRID_TOKENIZER = dict(num_points=512, width=32, heads=2, num_latents=64, encoder_layers=1, decoder_layers=1,
                           latent_channels=4, codebook_size=64, plane_channels=4, mlp_hidden=16, num_frequencies=4,
                           locality="grid", grid_up_levels=1)
DESIGNS = {"triplane": TINY_TOKENIZER, "grid": TINY_GRID_TOKENIZER}  # the paper's design and the shipped one
TINY_DINOV2 = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": 28, "patch_size": 14}
TINY_TEXT_TOWER = {"embed_dim": 24, "context_length": 16, "width": 32, "heads": 2, "layers": 1}
INSIDE_FRACTION = 0.3  # share of the unit cube the random field calls inside


def _smooth_random_field(tokenizer, seed: int) -> None:
    """Make a random tokenizer's field a few smooth blobs for any tokens (see make_tiny_checkpoint)."""
    import torch

    from vat.geometry.extract import grid_points
    from vat.pipeline import MeshCodec

    config = tokenizer.config
    with torch.no_grad():
        first = tokenizer.field.mlp[0].weight
        if config.locality == "grid":
            # [hidden, latent cells' width + finer levels + query features]: the MLP reads the 4 x 4 x 4
            # latent cells alone, whose learned positions (at unit scale, as the triplane's tokens) shape it.
            first[:, config.width:] = 0.0
            tokenizer.field.attention.position.mul_(50.0)
        else:
            # [hidden, 3 planes x (4 + 2 + 1) x plane_channels]: the coarsest mip level alone.
            per_plane, coarse = 7 * config.decoder.plane_channels, 4 * config.decoder.plane_channels
            for plane in range(3):
                first[:, plane * per_plane + coarse:(plane + 1) * per_plane] = 0.0
        tokenizer.from_latent.weight.mul_(0.1)
        axis = grid_points(16)
        points_N3 = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        indices = [np.random.default_rng(seed).integers(0, config.codebook_size, side * side)
                   for side in config.scale_sides]
        logits_N = MeshCodec(tokenizer, "cpu").occupancy_fn(indices)(points_N3)
        tokenizer.field.mlp[-1].bias -= float(np.quantile(logits_N, 1.0 - INSIDE_FRACTION))


def make_tiny_checkpoint(folder: str | os.PathLike, seed: int = 0, design: str = "triplane") -> Path:
    """Write a checkpoint folder (tokenizer, generator, condition encoders) with random weights; the
    tokenizer in one of DESIGNS ("triplane": the paper's, "grid": the shipped locality prior).

    A random decoder's occupancy field need not cross zero, and a random field of fine detail
    gives a sponge of a million faces. Three edits make every token sequence decode to a few
    smooth blobs: the field's MLP reads only its coarsest features (the triplane is 2 x 2 tokens and the
    MLP reads only the coarsest mip level, 4 x 4 cells per plane; the grid's MLP reads only the 4 x 4 x 4
    latent cells); the latent tokens are scaled down (x 0.1) so that they move the field a little but
    cannot shift it as a whole; and the MLP's last bias is set so that INSIDE_FRACTION of a grid over
    the cube is inside. The decoded mesh is then non-empty for any tokens, and still depends on them
    (scales and seeds give different meshes)."""
    import torch

    from vat.models.conditioning import ConditionConfig, ConditionEncoders, ImageEncoderConfig, TextEncoderConfig
    from vat.models.gpt import GeneratorConfig, NextScaleGPT
    from vat.models.tokenizer import VAT, TokenizerConfig

    folder = Path(folder)
    torch.manual_seed(seed)
    config = TokenizerConfig(**DESIGNS[design])
    tokenizer = VAT(config).eval()
    _smooth_random_field(tokenizer, seed)
    encoders = ConditionEncoders(ConditionConfig(image=ImageEncoderConfig(pretrained=None, dinov2=TINY_DINOV2,
                                                                          image_size=28),
                                                 text=TextEncoderConfig(pretrained=None, tower=TINY_TEXT_TOWER)))
    generator_config = GeneratorConfig(width=32, depth=2, heads=2).matching(config).matching_encoders(encoders)
    generator = NextScaleGPT(generator_config)
    # float32 on disk: the bias above is tuned to the float32 field, and fp16 rounding would move it.
    tokenizer.save_pretrained(folder, dtype=torch.float32)
    generator.save_pretrained(folder, dtype=torch.float32)
    encoders.save_pretrained(folder, dtype=torch.float32)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A folder with a tiny random tokenizer, generator and condition encoders (see make_tiny_checkpoint)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_grid_checkpoint(tmp_path_factory) -> Path:
    """The same in the shipped tokenizer design (locality="grid")."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-grid-checkpoint"), design="grid")


@pytest.fixture(params=list(DESIGNS))
def tiny_checkpoint_of_each_design(request) -> Path:
    """tiny_checkpoint, then tiny_grid_checkpoint: a test that takes it runs once per tokenizer design."""
    return request.getfixturevalue("tiny_checkpoint" if request.param == "triplane" else "tiny_grid_checkpoint")


@pytest.fixture(scope="session")
def empty_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder without weights, as a fresh clone has."""
    return tmp_path_factory.mktemp("no-weights")


ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> object:
    """A script of train/ whose code lives in the script itself (prepare_data, filter_shapes, export_meshes,
    calibrate_tokenizer) imported as a module, e.g. load_script("prepare_data"); the trainers, the data
    preparation of stage 2 and the arm runners are modules of vat.training, imported as such."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def draw_object_image(path: str | os.PathLike, size: tuple[int, int] = (240, 200), transparent: bool = False) -> Path:
    """A red disc with a blue bar on a white (or transparent) background: an 'object photo'."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA" if transparent else "RGB", size, (255, 255, 255, 0) if transparent else "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.2, w * 0.7, h * 0.7), fill=(200, 30, 30, 255))
    draw.rectangle((w * 0.45, h * 0.6, w * 0.55, h * 0.85), fill=(30, 60, 200, 255))
    image.save(path)
    return Path(path)


def mesh_facts(source) -> list[float]:
    """A mesh's faces, bounds and area, of a trimesh or of the mesh in a file (a 3D view's box edges are no
    faces): files keep float32, so compare them with like(expected)."""
    import trimesh

    mesh = source if isinstance(source, trimesh.Trimesh) else trimesh.load(source, force="mesh")
    return [len(mesh.faces), *np.asarray(mesh.bounds).ravel().tolist(), float(mesh.area)]


def like(mesh):
    """mesh_facts of `mesh`, to the precision a mesh file keeps: `mesh_facts(path) == like(mesh)` when the file
    holds that mesh (the same face count; bounds and area to 1e-5)."""
    return pytest.approx(mesh_facts(mesh), rel=1e-5, abs=1e-5)


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    """An examples/ folder with one image (and a README, which the gallery must skip)."""
    folder = tmp_path_factory.mktemp("examples")
    draw_object_image(folder / "red-disc.png")
    (folder / "README.md").write_text("test images, made by the tests\n")
    return folder


@pytest.fixture(scope="session")
def app_url(tiny_checkpoint, examples_dir):
    """The demo over the tiny checkpoint, launched (queue and all, as `python app.py` does) on a free
    local port for the whole test session."""
    import app

    demo = app.build_demo(tiny_checkpoint, examples_dir)
    port = free_port()
    app.serve(demo, port=port, prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
