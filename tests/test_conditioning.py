"""Condition encoders (DINOv2 image tokens, CLIP text embedding): shapes, freezing, input forms,
checkpoints, offline loading and its errors, the three condition combinations through the generator,
and an overfit run that regenerates four rendered shapes' tokens from their images and captions."""

import dataclasses
import json

import numpy as np
import pytest
import torch


from vat.errors import VatError
from vat.models import gpt
from vat.models.conditioning import (PRESETS, ConditionConfig, ConditionEncoders, ImageEncoder, ImageEncoderConfig,
                                     TextEncoder, TextEncoderConfig, to_pixels)
from vat.models.quantizer import MultiScaleQuantizer

# Same classes as the paper's encoders, a few thousand parameters: 28 px in 14 px patches -> 2 x 2 + CLS.
MICRO_DINOV2 = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                "image_size": 28, "patch_size": 14}
MICRO_TOWER = {"embed_dim": 24, "context_length": 16, "width": 32, "heads": 2, "layers": 1}
MICRO = ConditionConfig(image=ImageEncoderConfig(pretrained=None, dinov2=MICRO_DINOV2, image_size=28),
                        text=TextEncoderConfig(pretrained=None, tower=MICRO_TOWER))
CAPTIONS = ["a red box", "a cone joined to a sphere", "a torus"]


def images(batch=3, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return ConditionEncoders(MICRO)


@pytest.mark.slow
def test_tiny_preset_matches_the_tiny_generator():
    torch.manual_seed(0)
    encoders = ConditionEncoders(PRESETS["tiny"])
    image_BNC, text_BC = encoders.encode(images(2, 112), CAPTIONS[:2])
    tiny = gpt.PRESETS["tiny"]
    assert image_BNC.shape == (2, tiny.image_tokens, tiny.image_channels) == (2, 65, 128)
    assert text_BC.shape == (2, tiny.text_channels) == (2, 128)
    assert tiny.matching_encoders(encoders) == tiny


def test_frozen_by_default_and_trainable_on_request(micro):
    assert not any(p.requires_grad for p in micro.parameters())
    micro.train()  # a parent module switching to training must not wake frozen encoders
    assert not micro.training and not micro.image.model.training
    image_BNC, text_BC = micro.encode(images(), CAPTIONS)
    assert not image_BNC.requires_grad and not text_BC.requires_grad

    torch.manual_seed(0)
    trained = ConditionEncoders(MICRO, trainable=True)
    # All but DINOv2's mask token, which only its masked pretraining uses.
    assert {n for n, p in trained.named_parameters() if not p.requires_grad} == {"image.model.embeddings.mask_token"}
    assert trained.training
    image_BNC, text_BC = trained.encode(images(), CAPTIONS)
    (image_BNC.square().mean() + text_BC.square().mean()).backward()
    assert trained.image.model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    assert trained.text.tower.token_embedding.weight.grad.abs().sum() > 0
    trained.set_trainable(False)
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())


def test_shapes_and_distinct_inputs_give_distinct_conditions(micro):
    image_BNC, text_BC = micro.encode(images(), CAPTIONS)
    assert image_BNC.shape == (3, micro.image_tokens, 32) and micro.image_tokens == 5
    assert text_BC.shape == (3, 24) and micro.text_channels == 24
    assert not torch.allclose(image_BNC[0], image_BNC[1]) and not torch.allclose(text_BC[0], text_BC[1])
    assert micro.encode(texts=CAPTIONS[0])[1].shape == (1, 24)  # one string is a batch of one
    assert micro.encode(images=images())[1] is None and micro.encode(texts=CAPTIONS)[0] is None


def test_image_forms_agree(micro):
    """uint8 HWC, float CHW and a list of PIL images are the same pixels; a non-square image is
    padded to a square with white before resizing."""
    from PIL import Image

    batch = images(2, 28)
    reference = to_pixels(batch, 28)
    assert reference.shape == (2, 3, 28, 28) and 0 <= reference.min() and reference.max() <= 1
    torch.testing.assert_close(to_pixels(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255, 28), reference)
    torch.testing.assert_close(to_pixels([Image.fromarray(b) for b in batch], 28), reference)
    tall = images(1, 28)[0][:, 7:21]  # 28 x 14
    padded = np.full((28, 28, 3), 255, np.uint8)
    padded[:, 7:21] = tall
    torch.testing.assert_close(to_pixels([tall], 28), to_pixels([padded], 28))
    torch.testing.assert_close(micro.encode_images([tall]), micro.encode_images(padded[None]))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 8, 8, 4), np.uint8), "RGB"),
    (np.zeros((8, 8, 3), np.uint8), "batch"),
    (np.full((1, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
    (np.zeros((1, 8, 8, 3), np.int32), "uint8"),
    ([], "non-empty"),
])
def test_bad_images_are_refused(micro, bad, message):
    with pytest.raises(VatError, match=message):
        micro.encode_images(bad)


def test_bad_texts_and_missing_encoders_are_refused(micro):
    with pytest.raises(VatError, match="strings"):
        micro.encode(texts=[1, 2])
    with pytest.raises(VatError, match="3 images but 2 texts"):
        micro.encode(images(3), CAPTIONS[:2])
    text_only = ConditionEncoders(dataclasses.replace(MICRO, image=None))
    with pytest.raises(VatError, match="no image encoder"):
        text_only.encode(images=images())
    with pytest.raises(ValueError, match="exactly one"):
        ImageEncoderConfig(pretrained=None)


def test_save_load_round_trip(micro, tmp_path):
    micro.save_pretrained(tmp_path, dtype=torch.float32)
    loaded = ConditionEncoders.from_pretrained(tmp_path)
    assert loaded.config == MICRO and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    for a, b in zip(micro.encode(images(), CAPTIONS), loaded.encode(images(), CAPTIONS)):
        assert torch.equal(a, b)
    json.loads((tmp_path / "conditioning_config.json").read_text())  # readable by a person


@pytest.fixture(scope="module")
def hub_like_folders(tmp_path_factory):
    """A DINOv2 folder as transformers saves it and an open_clip folder as the hub holds it
    (open_clip_config.json + open_clip_model.safetensors of a whole CLIP model, vision tower included)."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(1)
    dinov2 = Dinov2Model(Dinov2Config(**MICRO_DINOV2)).eval()
    dinov2.save_pretrained(root / "dinov2")
    model_cfg = {"embed_dim": 24, "quick_gelu": True,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                 "text_cfg": {k: v for k, v in MICRO_TOWER.items() if k != "embed_dim"}}
    clip = open_clip.model.CLIP(embed_dim=24, vision_cfg=model_cfg["vision_cfg"], text_cfg=model_cfg["text_cfg"],
                                quick_gelu=True).eval()
    (root / "clip").mkdir()
    (root / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, root / "clip" / "open_clip_model.safetensors")
    return root, dinov2, clip


def test_pretrained_folders_load_the_same_models(hub_like_folders, tmp_path):
    root, dinov2, clip = hub_like_folders
    config = ConditionConfig(image=ImageEncoderConfig(pretrained=str(root / "dinov2"), image_size=28),
                             text=TextEncoderConfig(pretrained=str(root / "clip")))
    encoders = ConditionEncoders(config)
    pixels = (to_pixels(images(), 28) - encoders.image.mean) / encoders.image.std
    image_BNC, text_BC = encoders.encode(images(), CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(image_BNC, dinov2(pixel_values=pixels).last_hidden_state)
        torch.testing.assert_close(text_BC, clip.encode_text(encoders.tokenize(CAPTIONS)))
    assert not hasattr(encoders.text.tower, "visual")  # the vision tower is never built

    # Frozen hub encoders are saved as references; trained ones as their architecture + weights.
    encoders.save_pretrained(tmp_path / "frozen", dtype=torch.float32)
    saved = json.loads((tmp_path / "frozen" / "conditioning_config.json").read_text())
    assert saved["image"]["pretrained"] == str(root / "dinov2") and saved["text"]["pretrained"] == str(root / "clip")
    from safetensors.torch import load_file
    assert load_file(tmp_path / "frozen" / "conditioning.safetensors") == {}
    reloaded = ConditionEncoders.from_pretrained(tmp_path / "frozen")
    assert torch.equal(reloaded.encode(images(), CAPTIONS)[1], text_BC)

    encoders.set_trainable(True)
    with torch.no_grad():
        encoders.text.tower.text_projection.add_(1.0)  # as if training had moved it
    encoders.save_pretrained(tmp_path / "trained", dtype=torch.float32)
    saved = json.loads((tmp_path / "trained" / "conditioning_config.json").read_text())
    assert saved["text"]["pretrained"] is None and saved["text"]["tower"]["quick_gelu"] is True
    trained = ConditionEncoders.from_pretrained(tmp_path / "trained")
    for a, b in zip(encoders.encode(images(), CAPTIONS), trained.encode(images(), CAPTIONS)):
        torch.testing.assert_close(a, b)


def test_missing_weights_name_the_model_and_how_to_get_them(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VatError, match=r"DINOv2 weights 'facebook/dinov2-large' not found offline: "
                                       r"run `hf download facebook/dinov2-large`.*--image-encoder PATH"):
        ImageEncoder(ImageEncoderConfig())
    with pytest.raises(VatError, match=r"CLIP text weights 'ViT-L-14' \(Hugging Face repo "
                                       r"timm/vit_large_patch14_clip_224.openai\) not found offline.*--text-encoder"):
        TextEncoder(TextEncoderConfig())
    with pytest.raises(VatError, match="vat-tests/no-such-clip"):
        TextEncoder(TextEncoderConfig(pretrained="hf-hub:vat-tests/no-such-clip"))
    with pytest.raises(VatError, match="not a folder"):
        ImageEncoder(ImageEncoderConfig(pretrained=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VatError, match="does not hold an open_clip model"):
        TextEncoder(TextEncoderConfig(pretrained=str(tmp_path / "empty")))


MICRO_GPT = gpt.GeneratorConfig(width=32, depth=2, heads=2, vocabulary=32, latent_channels=8, scale_sides=(1, 2, 3))


@pytest.mark.parametrize("use_image, use_text", [(True, False), (False, True), (True, True)])
def test_conditions_drive_the_generator(micro, use_image, use_text):
    """Image only, text only and both: the generator built to the encoders' sizes samples, and
    different conditions give different predictions."""
    config = MICRO_GPT.matching_encoders(micro)
    assert (config.image_tokens, config.image_channels, config.text_channels) == (5, 32, 24)
    torch.manual_seed(0)
    model = gpt.NextScaleGPT(config).eval()
    with torch.no_grad():  # open the zero-initialised AdaLN gates, so conditions matter at init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
    image_BNC, text_BC = micro.encode(images(3) if use_image else None, CAPTIONS if use_text else None)
    tokens = model.generate(quantizer, image_BNC, text_BC, top_k=1, cfg=1.0)
    assert [t.shape for t in tokens] == [(3, n) for n in config.tokens_per_scale]
    logits = model(image_BNC, text_BC, quantizer.teacher_forcing_input(tokens))
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)  # the conditions reach the output


def test_text_only_and_image_only_encoders(micro):
    image_only = ConditionEncoders(dataclasses.replace(MICRO, text=None))
    assert image_only.text_channels is None
    config = MICRO_GPT.matching_encoders(image_only)
    assert config.text_channels == MICRO_GPT.text_channels and config.image_channels == 32
    model = gpt.NextScaleGPT(config).eval()
    quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
    image_BNC, text_BC = image_only.encode(images=images(2))
    assert text_BC is None
    assert [t.shape[0] for t in model.generate(quantizer, image_BNC, text_BC, seed=0)] == [2, 2, 2]


def _render_four_shapes(size):
    """One render of each of procedural shapes 0-3, composited on white, and their captions."""
    from vat.geometry.procedural import random_shape
    from vat.geometry.render import composite_on_white, render_views

    views, captions = [], []
    for seed in range(4):
        shape = random_shape(seed)
        try:
            views.append(composite_on_white(render_views(shape.mesh, 1, size, seed=seed)[0].rgba))
        except VatError as exc:  # no OpenGL on this machine
            pytest.skip(f"cannot render here: {exc}")
        captions.append(shape.caption)
    return np.stack(views), captions


@pytest.mark.slow
def test_overfit_four_rendered_shapes_and_regenerate_their_tokens():
    """The issue's overfit test: a small generator memorises the tokens of 4 shapes given their
    renders and captions, through the real classes (renders -> frozen tiny DINOv2 and CLIP text
    encoders -> NextScaleGPT -> the quantiser's next-scale inputs), and greedy sampling with
    guidance regenerates them (token accuracy >= 0.95). The targets are the quantiser's tokens of
    a fixed random latent grid per shape: an untrained tokenizer maps all shapes to nearly the same
    tokens, and training one would not fit the time budget."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        renders, captions = _render_four_shapes(112)
        encoders = ConditionEncoders(PRESETS["tiny"])
        image_BNC, text_BC = encoders.encode(renders, captions)
        config = dataclasses.replace(gpt.PRESETS["tiny"], width=64, depth=2, heads=4, vocabulary=256,
                                     scale_sides=(1, 2, 3, 4, 6, 8)).matching_encoders(encoders)
        quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
        with torch.no_grad():
            indices = quantizer(torch.randn(4, config.latent_channels, 8, 8)).indices
            x_BLC = quantizer.teacher_forcing_input(indices)
        target = torch.cat(indices, dim=1)
        model = gpt.NextScaleGPT(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        model.train()
        for _ in range(150):
            logits = model(image_BNC, text_BC, x_BLC)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        generated = torch.cat(model.generate(quantizer, image_BNC, text_BC, top_k=1), dim=1)
    finally:
        torch.set_num_threads(threads)
    accuracy = (generated == target).float().mean().item()
    assert accuracy >= 0.95, (accuracy, loss.item())


def test_dinov2_configs_have_a_kind_and_older_files_without_one_still_match(micro):
    """DINOv2's config is tagged like EfficientNet's and read through the same reader: configs saved
    before it had a kind are DINOv2, and image features a generator data folder cached with such a
    config still count as the same encoder's (train_generator then reads them instead of the views)."""
    from vat.models.conditioning import image_encoder_config
    from vat.training.distributed import encoder_fingerprints
    from vat.training.generator_data import condition_sources

    assert MICRO.image.kind == "dinov2" and MICRO.to_dict()["image"]["kind"] == "dinov2"
    assert ConditionConfig.from_dict(MICRO.to_dict()) == MICRO
    without_kind = {k: v for k, v in MICRO.to_dict()["image"].items() if k != "kind"}
    assert image_encoder_config(without_kind) == MICRO.image
    with pytest.raises(ValueError, match="has kind 'dinov2'"):
        ImageEncoderConfig(kind="efficientnet")
    saved = json.loads(json.dumps(encoder_fingerprints(micro)))
    del saved["image"]["config"]["kind"]  # as a manifest written before the kind
    assert condition_sources(micro, {"encoders": saved}, True, True, augment=False) == ("features", "features")
    saved["image"]["config"]["image_size"] = 56  # another encoder: its features are not used
    assert condition_sources(micro, {"encoders": saved}, True, True, augment=False) == ("views", "features")
