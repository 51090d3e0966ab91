"""The next-scale generator: block-causal mask, kv-cache equal to the full pass, sampling filters,
seeds, classifier-free guidance, condition dropout, checkpoints, and an overfit run that learns."""

import dataclasses
import json

import pytest
import torch

from vat.errors import VatError
from vat.models.gpt import (PRESETS, GeneratorConfig, NextScaleGPT, condition_pmi, guidance_weight,
                            image_retrieval_losses, retrieval_scores, scale_temperature, top_k_filter, top_p_filter)
from vat.models.quantizer import MultiScaleQuantizer

MICRO = GeneratorConfig(width=32, depth=2, heads=2, vocabulary=32, latent_channels=8, scale_sides=(1, 2, 3, 4),
                        image_channels=12, image_tokens=5, text_channels=10)
GLOBAL = dataclasses.replace(MICRO, global_image=True)


def micro(config=MICRO, seed=0):
    """A micro generator and quantiser; weights jittered so that the zero-initialised AdaLN gates open
    (at init every block is the identity, which would make mask and cache tests vacuous)."""
    torch.manual_seed(seed)
    model = NextScaleGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
    return model, quantizer


def conditions(batch=2, config=MICRO, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, config.image_tokens, config.image_channels, generator=g),
            torch.randn(batch, config.text_channels, generator=g))


@torch.no_grad()
def ground_truth(quantizer, batch=2, seed=2):
    """Indices per scale from a random latent grid, and the teacher-forcing input built from them."""
    g = torch.Generator().manual_seed(seed)
    side = quantizer.scale_sides[-1]
    indices = quantizer(torch.randn(batch, quantizer.channels, side, side, generator=g)).indices
    return indices, quantizer.teacher_forcing_input(indices)


def scale_slices(config):
    ends = [0]
    for n in config.tokens_per_scale:
        ends.append(ends[-1] + n)
    return [slice(a, b) for a, b in zip(ends[:-1], ends[1:])]


def test_presets():
    paper, tiny = PRESETS["paper"], PRESETS["tiny"]
    assert (paper.width, paper.depth, paper.image_channels, paper.text_channels) == (1280, 12, 1024, 768)
    assert len(tiny.scale_sides) == 10 and tiny.vocabulary == 1024 and tiny.latent_channels == 16
    assert GeneratorConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    with pytest.raises(ValueError, match="heads"):
        dataclasses.replace(MICRO, heads=3)


def test_mask_is_block_causal_over_levels():
    model, _ = micro()
    mask = model.attention_mask()
    levels = [0] * MICRO.image_tokens + [s + 1 for s, n in enumerate(MICRO.tokens_per_scale) for _ in range(n)]
    assert mask.shape == (len(levels), len(levels))
    for i, li in enumerate(levels):
        assert mask[i].tolist() == [lj <= li for lj in levels]


def test_teacher_forced_logits_shape_and_perturbations():
    model, quantizer = micro()
    image, text = conditions()
    _, x = ground_truth(quantizer)
    logits = model(image, text, x)
    assert logits.shape == (2, sum(MICRO.tokens_per_scale), MICRO.vocabulary)
    scales = scale_slices(MICRO)
    for s in range(1, len(scales)):
        x2 = x.clone()
        x2[:, scales[s].start - 1:scales[s].stop - 1] += 1.0  # x has no start token: scale s is shifted by one
        changed = model(image, text, x2)
        for r in range(len(scales)):
            same = torch.allclose(changed[:, scales[r]], logits[:, scales[r]], atol=1e-6)
            assert same == (r < s), (s, r)
    for other in (model(image + 1.0, text, x), model(image, text + 1.0, x)):
        for sl in scales:
            assert not torch.allclose(other[:, sl], logits[:, sl], atol=1e-4)
    for s in (1, 3):  # the first s scales alone: a shorter pass, the same logits
        torch.testing.assert_close(model(image, text, x, scales=s), logits[:, :scales[s - 1].stop], atol=1e-5, rtol=1e-5)
    with pytest.raises(VatError, match="scales"):
        model(image, text, x, scales=len(scales) + 1)


@pytest.mark.parametrize("config", [MICRO, GLOBAL], ids=["paper", "global_image"])
def test_kv_cache_logits_equal_the_full_pass_at_every_scale(config):
    model, quantizer = micro(config)
    image, text = conditions()
    indices, x = ground_truth(quantizer)
    full = model(image, text, x)
    # The cached path, fed the ground truth one scale at a time.
    image_BNW, text_BW = model.condition(image, text, 2)
    caches = [{} for _ in model.blocks]
    new, f_hat = torch.cat([image_BNW, model.scale_tokens(0, None, text_BW)], dim=1), None
    mask = model.attention_mask()
    for si, sl in enumerate(scale_slices(MICRO)):
        end = model.ends[si + 1]
        h = model._transformer(new, text_BW, mask[end - new.shape[1]:end, :end], caches)
        step = model._logits(h[:, -(sl.stop - sl.start):], text_BW)
        torch.testing.assert_close(step, full[:, sl], atol=1e-5, rtol=1e-5)
        f_hat, x_next = quantizer.next_scale_input(si, f_hat, indices[si])
        if x_next is not None:
            new = model.scale_tokens(si + 1, x_next, text_BW)


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    kept = top_k_filter(logits, 2).isfinite()
    assert kept.sum(1).tolist() == [2, 2] and kept[0].tolist() == [False, True, True, False, False]
    assert top_k_filter(logits, 3)[0].isfinite().tolist() == [False, True, True, True, False]
    assert torch.equal(top_k_filter(logits, 0), logits)


@pytest.mark.parametrize("p, kept", [(0.01, {0}), (0.45, {0}), (0.6, {0, 1}), (0.9, {0, 1, 2}), (0.99, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_nucleus(p, kept):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    order = torch.tensor([2, 0, 3, 1])  # shuffled so the result must be scattered back
    logits = probs.log()[order][None]
    survivors = {int(order[i]) for i in top_p_filter(logits, p)[0].isfinite().nonzero().flatten()}
    assert survivors == kept
    assert torch.equal(top_p_filter(logits, 0.0), logits)


def test_seeds_and_cache_give_reproducible_tokens():
    model, quantizer = micro()
    image, text = conditions()
    a = model.generate(quantizer, image, text, seed=3)
    b = model.generate(quantizer, image, text, seed=3, use_cache=False)
    c = model.generate(quantizer, image, text, seed=torch.Generator().manual_seed(3))
    d = model.generate(quantizer, image, text, seed=4)
    assert [i.shape for i in a] == [(2, n) for n in MICRO.tokens_per_scale]
    assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))
    assert not all(torch.equal(x, y) for x, y in zip(a, d))


def test_a_list_of_seeds_samples_one_row_per_seed_as_each_seed_alone():
    model, quantizer = micro()
    image, text = conditions(batch=1)
    rows = model.generate(quantizer, image, text, cfg=2.0, top_k=5, seed=[3, 4, 3])
    assert [i.shape for i in rows] == [(3, n) for n in MICRO.tokens_per_scale]
    for r, seed in enumerate([3, 4, 3]):
        alone = model.generate(quantizer, image, text, cfg=2.0, top_k=5, seed=seed)
        assert all(torch.equal(x[r], y[0]) for x, y in zip(rows, alone))
    assert not all(torch.equal(x[0], x[1]) for x in rows)
    with pytest.raises(VatError, match="at least one seed"):
        model.generate(quantizer, image, text, seed=[])


@pytest.mark.parametrize("use_image, use_text", [(True, False), (False, True), (True, True), (False, False)])
def test_any_combination_of_conditions_samples(use_image, use_text):
    model, quantizer = micro()
    image, text = conditions(batch=3)
    out = model.generate(quantizer, image if use_image else None, text if use_text else None, batch_size=3,
                         cfg=2.0, top_k=5, top_p=0.9, temperature=0.8, seed=0)
    assert [i.shape for i in out] == [(3, n) for n in MICRO.tokens_per_scale]
    assert all(((i >= 0) & (i < MICRO.vocabulary)).all() for i in out)


@pytest.mark.parametrize("cfg, schedule, config", [(0.0, "linear", MICRO), (2.0, "linear", MICRO),
                                                   (3.0, "constant", MICRO), (2.0, "linear", GLOBAL)])
def test_greedy_sampling_follows_the_guided_teacher_forced_logits(cfg, schedule, config):
    """Greedy tokens must be the argmax of (1 + w) * cond - w * uncond from the full pass over those
    very tokens; at w = 0 that is the conditional model alone."""
    model, quantizer = micro(config)
    image, text = conditions()
    tokens = model.generate(quantizer, image, text, cfg=cfg, cfg_schedule=schedule, top_k=1)
    x = quantizer.teacher_forcing_input(tokens)
    cond, uncond = model(image, text, x), model(None, None, x)
    for si, sl in enumerate(scale_slices(MICRO)):
        w = guidance_weight(cfg, si, len(MICRO.scale_sides), schedule)
        assert torch.equal(((1 + w) * cond[:, sl] - w * uncond[:, sl]).argmax(-1), tokens[si])


def test_global_image_joins_the_adaln_condition():
    """global_image: the condition vector that modulates every block (and starts the sequence) depends on
    the image; in the paper's layout it is the text's alone. Dropping the conditions gives the null vector."""
    image, text = conditions()
    other = image.flip(0)
    paper, _ = micro(MICRO)
    assert torch.equal(paper.condition(image, text, 2)[1], paper.condition(other, text, 2)[1])
    model, _ = micro(GLOBAL)
    cond, moved = model.condition(image, text, 2)[1], model.condition(other, text, 2)[1]
    assert not torch.allclose(cond, moved, atol=1e-4)
    dropped = model.condition(image, text, 2, drop_B=torch.tensor([True, False]))[1]
    torch.testing.assert_close(dropped[0], model.condition(None, None, 1)[1][0])
    torch.testing.assert_close(dropped[1], cond[1])
    fresh = NextScaleGPT(GLOBAL)  # zero-initialised: starts as the paper's layout
    assert torch.equal(fresh.condition(image, text, 2)[1], fresh.condition(other, text, 2)[1])
    legacy = {k: v for k, v in GLOBAL.to_dict().items() if k != "global_image"}
    assert GeneratorConfig.from_dict(legacy).global_image is False  # configs saved before the field load


def test_guidance_weight_schedules():
    assert [guidance_weight(3.0, s, 4, "linear") for s in range(4)] == [0.0, 1.0, 2.0, 3.0]
    assert guidance_weight(3.0, 0, 4, "constant") == 3.0
    with pytest.raises(VatError, match="cfg_schedule"):
        guidance_weight(3.0, 0, 4, "cosine")


def test_the_temperature_falls_linearly_over_the_scales(monkeypatch):
    assert [scale_temperature(1.0, 0.25, s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [scale_temperature(0.8, None, s, 4) for s in range(4)] == [0.8] * 4
    import vat.models.gpt as gpt

    used, sample = [], gpt.sample_tokens
    monkeypatch.setattr(gpt, "sample_tokens", lambda logits, t, *args: used.append(t) or sample(logits, t, *args))
    model, quantizer = micro()
    image, text = conditions(batch=1)
    cooled = model.generate(quantizer, image, text, seed=3, temperature=1.0, temperature_last=0.25)
    assert used == [1.0, 0.75, 0.5, 0.25]
    used.clear()
    constant = model.generate(quantizer, image, text, seed=3, temperature=0.7)
    assert used == [0.7] * 4
    assert all(torch.equal(a, b) for a, b in
               zip(constant, model.generate(quantizer, image, text, seed=3, temperature=0.7, temperature_last=0.7)))
    assert torch.equal(cooled[0], model.generate(quantizer, image, text, seed=3)[0])  # scale 1 as without cooling


def test_condition_dropout_only_in_training():
    model, quantizer = micro(dataclasses.replace(MICRO, condition_dropout=1.0))
    image, text = conditions()
    _, x = ground_truth(quantizer)
    unconditional = model(None, None, x)
    assert not torch.allclose(model(image, text, x), unconditional)
    model.train()
    torch.testing.assert_close(model(image, text, x), unconditional)
    # text_dropout drops the text alone: the image still counts.
    model, _ = micro(dataclasses.replace(MICRO, condition_dropout=0.0, text_dropout=1.0))
    image_only, both = model(image, None, x), model(image, text, x)
    assert not torch.allclose(both, image_only)
    model.train()
    torch.testing.assert_close(model(image, text, x), image_only)
    assert not torch.allclose(model(image, text, x), model(None, None, x))


def test_residual_dropout_only_in_training_and_saved_with_the_config(tmp_path):
    model, quantizer = micro(dataclasses.replace(MICRO, condition_dropout=0.0, dropout=0.5))
    image, text = conditions()
    _, x = ground_truth(quantizer)
    evaluated = model(image, text, x)
    torch.testing.assert_close(model(image, text, x), evaluated)  # eval mode: deterministic, no dropout
    plain, _ = micro(dataclasses.replace(MICRO, condition_dropout=0.0))  # same seed: the same weights
    torch.testing.assert_close(plain(image, text, x), evaluated)
    model.train()
    torch.manual_seed(0)
    first = model(image, text, x)
    torch.manual_seed(1)
    assert not torch.allclose(model(image, text, x), first)  # a different mask
    torch.manual_seed(0)
    torch.testing.assert_close(model(image, text, x), first)  # seeded: a resumed step replays it
    model.eval().save_pretrained(tmp_path, dtype=torch.float32)
    assert json.loads((tmp_path / "generator_config.json").read_text())["dropout"] == 0.5
    torch.testing.assert_close(NextScaleGPT.from_pretrained(tmp_path)(image, text, x), evaluated)
    with pytest.raises(ValueError, match="dropout"):
        dataclasses.replace(MICRO, dropout=1.0)


def test_bad_condition_shapes_are_refused():
    model, quantizer = micro()
    image, text = conditions()
    _, x = ground_truth(quantizer)
    with pytest.raises(VatError, match="image tokens"):
        model(image[:, :3], text, x)
    with pytest.raises(VatError, match="text"):
        model(image, text[:, :4], x)
    with pytest.raises(VatError, match="quantiser"):
        model.generate(MultiScaleQuantizer(8, 16, MICRO.scale_sides), image, text)


def test_save_load_round_trip(tmp_path):
    model, quantizer = micro()
    image, text = conditions()
    _, x = ground_truth(quantizer)
    model.save_pretrained(tmp_path / "fp32", dtype=torch.float32)
    assert torch.equal(NextScaleGPT.from_pretrained(tmp_path / "fp32")(image, text, x), model(image, text, x))
    model.save_pretrained(tmp_path / "fp16")
    loaded = NextScaleGPT.from_pretrained(tmp_path / "fp16")
    assert loaded.config == MICRO and not loaded.training
    torch.testing.assert_close(loaded(image, text, x), model(image, text, x), atol=0.05, rtol=0.05)


def test_mismatched_or_missing_checkpoint_raises(tmp_path):
    NextScaleGPT(MICRO).save_pretrained(tmp_path)
    config_path = tmp_path / "generator_config.json"
    config_path.write_text(json.dumps({**MICRO.to_dict(), "width": 64}))
    with pytest.raises(VatError, match="does not match"):
        NextScaleGPT.from_pretrained(tmp_path)
    config_path.write_text(json.dumps({**MICRO.to_dict(), "colour": "red"}))
    with pytest.raises(VatError, match="not a valid generator config"):
        NextScaleGPT.from_pretrained(tmp_path)
    with pytest.raises(VatError, match="no generator"):
        NextScaleGPT.from_pretrained(tmp_path / "missing")


def test_overfit_four_shapes_and_regenerate_them_greedily():
    """Four random image-token tensors stand in for the DINOv2 features of four shapes' renders (the
    render -> DINOv2 pipeline comes later); the generator must memorise each one's 155 tokens and
    regenerate them greedily, with the default condition dropout in training and guidance in sampling."""
    config = dataclasses.replace(MICRO, width=64, heads=4, scale_sides=(1, 2, 3, 4, 5, 6, 8), vocabulary=256)
    torch.manual_seed(0)
    model = NextScaleGPT(config)
    quantizer = MultiScaleQuantizer(config.latent_channels, config.vocabulary, config.scale_sides).eval()
    image, _ = conditions(batch=4, config=config)
    indices, x = ground_truth(quantizer, batch=4)
    target = torch.cat(indices, dim=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(image, None, x).flatten(0, 1), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    generated = torch.cat(model.generate(quantizer, image, top_k=1), dim=1)
    assert (generated == target).float().mean() >= 0.95, loss.item()
    # Teacher-forced retrieval: each shape's own image explains its tokens best; split over two
    # "ranks", the matrices add up to the whole; one image for all shapes ties, which counts against.
    losses = image_retrieval_losses(model, target, x, image)
    halves = image_retrieval_losses(model, target, x, image, 0, 2) + image_retrieval_losses(model, target, x, image, 1, 2)
    torch.testing.assert_close(halves, losses, atol=0, rtol=0)
    torch.testing.assert_close(image_retrieval_losses(model, target, x, image, chunk=3), losses, atol=1e-5, rtol=1e-5)
    assert retrieval_scores(losses) == {"retrieval_top1": 1.0, "retrieval_rank": 1.0, "retrieval_shapes": 4.0}
    same = retrieval_scores(image_retrieval_losses(model, target, x, image[:1].expand(4, -1, -1)))
    assert same["retrieval_top1"] == 0.0 and same["retrieval_rank"] == 4.0
    # The same seen from the shapes' side: each image makes its own shape's tokens the most likely
    # against no input (the search's pmi score), over all scales and over the coarse ones.
    for scales in (None, 3):
        pmi = torch.stack([condition_pmi(model, quantizer, indices, image[j:j + 1], None, scales) for j in range(4)])
        assert (pmi.argmax(dim=1) == torch.arange(4)).all(), pmi  # row j: image j, column i: shape i
        assert (pmi.diagonal() > 0).all()


def test_condition_pmi_is_the_log_likelihood_gain_over_no_input():
    model, quantizer = micro()
    image, text = conditions(batch=1)
    indices, x = ground_truth(quantizer, batch=3)
    target = torch.cat(indices, dim=1)
    expected = []
    for cond in ((image.expand(3, -1, -1), text.expand(3, -1)), (None, None)):
        expected.append(torch.log_softmax(model(*cond, x).float(), -1).gather(-1, target[..., None])[..., 0])
    gain = expected[0] - expected[1]
    torch.testing.assert_close(condition_pmi(model, quantizer, indices, image, text), gain.mean(1), atol=1e-5, rtol=1e-5)
    first = sum(MICRO.tokens_per_scale[:2])  # over the first two scales only
    torch.testing.assert_close(condition_pmi(model, quantizer, indices, image, text, scales=2), gain[:, :first].mean(1),
                               atol=1e-5, rtol=1e-5)
    assert condition_pmi(model, quantizer, indices, None, None).abs().max() == 0  # no input: no gain


def test_generate_a_prefix_of_scales():
    model, quantizer = micro()
    image, text = conditions(batch=1)
    full = model.generate(quantizer, image, text, seed=[3, 4])
    prefix = model.generate(quantizer, image, text, seed=[3, 4], scales=2)
    assert len(prefix) == 2
    for a, b in zip(prefix, full):
        torch.testing.assert_close(a, b)
    with pytest.raises(VatError, match="scales must be 1 to"):
        model.generate(quantizer, image, text, seed=3, scales=len(MICRO.scale_sides) + 1)


def test_config_matches_the_condition_encoders():
    """matching_encoders takes the encoders' token count and widths; an absent encoder (None) leaves
    its condition's sizes, which then only shape the null embedding."""
    from types import SimpleNamespace

    both = MICRO.matching_encoders(SimpleNamespace(image_tokens=65, image_channels=128, text_channels=96))
    assert both == dataclasses.replace(MICRO, image_tokens=65, image_channels=128, text_channels=96)
    text_only = MICRO.matching_encoders(SimpleNamespace(image_tokens=None, image_channels=None, text_channels=96))
    assert text_only == dataclasses.replace(MICRO, text_channels=96)
