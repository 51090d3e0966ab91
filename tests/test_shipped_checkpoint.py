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
    # Entropy-coded with the generator's prior: well under the 876 bytes of the raw tokens.
    assert len(result.vat()) < 600 and len(result.vat(3)) < len(result.vat())


def test_codec_round_trip(pipeline):
    codec = pipeline.codec
    encoded = codec.encode(random_shape(0).mesh)
    assert encoded.entropy_coded and len(encoded.data) < 600
    assert all((a == b).all() for a, b in zip(codec.read(encoded.data), encoded.indices, strict=True))
    mesh = codec.decode_mesh(codec.read(encoded.data), resolution=64)
    assert len(mesh.faces) > 0 and (abs(mesh.vertices) <= GRID_BOUND + 1e-6).all()


def test_default_is_the_grid_tokenizer_with_the_pretrained_image_encoder(pipeline):
    """The shipped pair: the locality-prior tokenizer and EfficientNet-Lite0 image features."""
    assert pipeline.codec.tokenizer.config.locality == "grid"
    assert pipeline.encoders.config.image.kind == "efficientnet"


def test_generator_follows_its_input(pipeline):
    """Different images give different shapes: the meshes generated from a car and from a bar stool
    (seed 0) are far apart (F-score@0.01 0.07 at 128^3 when this checkpoint shipped), where the
    earlier default, which ignored its input, gave the same box for both (F-score 0.98-1.0)."""
    from vat.metrics import compare_meshes

    meshes = [pipeline.generate(image=Image.open(ROOT / "examples" / f"{name}.png"), seed=0, resolution=64).mesh()
              for name in ("VW-new-beetle", "bar-stool")]
    assert compare_meshes(*meshes, normalize="each")["f_score"] < 0.5


def test_encoder_search_keeps_the_candidate_that_decodes_closest(pipeline):
    """MeshCodec.encode(search=K) encodes K samplings of the surface and keeps the tokens whose decoded
    occupancy has the highest IoU with the mesh's own at the search's points (its own seed): the choice
    is one of the single-sampling encodings, the best of them by that IoU, and the candidates differ."""
    import numpy as np

    from vat.errors import VatError
    from vat.geometry.io import normalize_mesh
    from vat.metrics import iou, protocol_queries
    from vat.pipeline import SEARCH_QUERIES, SEARCH_SEED_OFFSET

    codec, mesh = pipeline.codec, random_shape(3).mesh
    normalized, _ = normalize_mesh(mesh)
    queries = protocol_queries(normalized, *SEARCH_QUERIES, seed=SEARCH_SEED_OFFSET)
    singles = [codec.encode(mesh, seed=k) for k in range(4)]
    scores = [iou(codec.occupancy_fn(e.indices)(queries["points"]) > 0, queries["inside"]) for e in singles]
    assert len({e.data for e in singles}) > 1 and len(set(scores)) > 1
    searched = codec.encode(mesh, search=4)
    assert searched.data == singles[int(np.argmax(scores))].data and len(searched.data) < 600
    with pytest.raises(VatError, match="search"):
        codec.encode(mesh, search=0)


def test_the_sampling_settings_are_the_ones_the_card_reports():
    """sampling_config.json holds the setting chosen on the validation split (model card: a constant
    temperature; the per-scale measurement that chose it is in the card)."""
    from vat.pipeline import SAMPLING_DEFAULTS, read_sampling

    assert read_sampling(CHECKPOINT) == SAMPLING_DEFAULTS
    assert (CHECKPOINT / "sampling_config.json").is_file()
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    assert "--per-scale" in card and "temperature_last: null" in card


def _box_with_a_hole():
    import trimesh

    return trimesh.boolean.difference([trimesh.creation.box((1.0, 0.6, 0.4)),
                                       trimesh.creation.cylinder(radius=0.15, height=1.0)], engine="manifold")


# Measured when this test was written, with this test's calls in a script (MeshCodec.from_pretrained("checkpoints"),
# encode(mesh, seed=s), protocol_queries(seed=0), decode_mesh(resolution=64), chamfer_fscore(seed=0)), seed 0:
#   icosphere: IoU 0.820, F@0.01 0.923; box with a hole: IoU 0.719, F@0.01 0.857.
# Seeds 1 and 2 gave IoU 0.829/0.820, F 0.949/0.953 and IoU 0.727/0.716, F 0.877/0.865: the floors sit 0.05
# below the seed-0 values. A failing run prints the measured (iou, f_score).
QUALITY_FLOORS = {"icosphere": (0.77, 0.87), "box with a hole": (0.67, 0.80)}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(QUALITY_FLOORS))
def test_codec_quality_floor_on_procedural_shapes(pipeline, shape):
    """The shipped codec at its default settings (MeshCodec.encode: seed 0, one sampling, no refinement)
    keeps the protocol's IoU (occupancy at 40k uniform + 40k near-surface points) and F-score@0.01 (the
    mesh decoded at 64^3) above a floor measured on an icosphere and a box with a cylindrical hole."""
    import trimesh

    from vat.geometry.io import normalize_mesh
    from vat.metrics import chamfer_fscore, iou, protocol_queries

    mesh = trimesh.creation.icosphere(4, radius=0.4) if shape == "icosphere" else _box_with_a_hole()
    codec = pipeline.codec
    encoded = codec.encode(mesh)
    unit, _ = normalize_mesh(mesh)
    queries = protocol_queries(unit, seed=0)
    measured_iou = iou(codec.occupancy_fn(encoded.indices)(queries["points"]) > 0, queries["inside"])
    f_score = chamfer_fscore(unit, codec.decode_mesh(encoded.indices, resolution=64), seed=0)["f_score"]
    iou_floor, f_floor = QUALITY_FLOORS[shape]
    assert measured_iou >= iou_floor and f_score >= f_floor, (measured_iou, f_score)


def test_encoder_average_quantises_the_mean_latent_of_its_samplings(pipeline):
    """MeshCodec.encode(average=A): each candidate is the mean of the encoder's latents of A samplings,
    quantised once; candidate k of a search of K averages seeds k, k + K, ...; a search keeps the candidate
    that decodes closest, as without averaging; A must be a whole number of at least 1."""
    import numpy as np

    from vat.errors import VatError
    from vat.geometry.io import normalize_mesh
    from vat.geometry.sampling import sample_surface
    from vat.metrics import iou, protocol_queries
    from vat.pipeline import SEARCH_QUERIES, SEARCH_SEED_OFFSET

    codec, mesh = pipeline.codec, random_shape(3).mesh
    normalized, _ = normalize_mesh(mesh)
    tokenizer = codec.tokenizer

    def tokens_of_mean(seeds):
        clouds = [sample_surface(normalized, codec.config.num_points, s) for s in seeds]
        with torch.no_grad():
            z, _ = tokenizer.latent(torch.as_tensor(np.stack([p for p, _ in clouds])),
                                    torch.as_tensor(np.stack([n for _, n in clouds])), sample=False)
            idx = tokenizer.quantize(z.mean(0, keepdim=True))
        return [i[0].numpy() for i in idx]

    averaged = codec.encode(mesh, average=3)
    assert all((a == b).all() for a, b in zip(averaged.indices, tokens_of_mean([0, 1, 2]), strict=True))
    one = codec.encode(mesh, average=1)  # one sampling: the tokens of seed 0's cloud alone, as before the option
    assert all((a == b).all() for a, b in zip(one.indices, tokens_of_mean([0]), strict=True))
    candidates = [tokens_of_mean([0, 2]), tokens_of_mean([1, 3])]
    queries = protocol_queries(normalized, *SEARCH_QUERIES, seed=SEARCH_SEED_OFFSET)
    scores = [iou(codec.occupancy_fn(c)(queries["points"]) > 0, queries["inside"]) for c in candidates]
    searched = codec.encode(mesh, search=2, average=2)
    kept = candidates[int(np.argmax(scores))]
    assert all((a == b).all() for a, b in zip(searched.indices, kept, strict=True))
    for bad in (0, 1.5):
        with pytest.raises(VatError, match="average"):
            codec.encode(mesh, average=bad)
