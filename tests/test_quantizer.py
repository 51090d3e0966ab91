"""The multi-scale residual quantiser: exact index round trip, schedules, teacher forcing."""

import pytest
import torch

from vat.models.quantizer import SCALE_SIDES, MultiScaleQuantizer, default_scale_sides


@pytest.mark.parametrize("k, scales", [(256, 10), (576, 11), (1024, 12)])
def test_paper_schedules(k, scales):
    sides = default_scale_sides(k)
    assert len(sides) == scales and sides[-1] ** 2 == k and sides[0] == 1


def test_paper_1024_token_counts():
    assert [s * s for s in SCALE_SIDES[1024]] == [1, 4, 9, 16, 25, 36, 64, 100, 169, 196, 576, 1024]


def test_non_square_token_count_is_refused():
    with pytest.raises(ValueError, match="square"):
        default_scale_sides(300)


def quantizer(sides=(1, 2, 4, 8)):
    torch.manual_seed(0)
    return MultiScaleQuantizer(channels=8, codebook_size=64, scale_sides=sides)


def test_indices_decode_to_exactly_the_forward_z_hat():
    q = quantizer().eval()
    f = torch.randn(3, 8, 8, 8)
    out = q(f)
    assert [i.shape for i in out.indices] == [(3, 1), (3, 4), (3, 16), (3, 64)]
    assert torch.equal(q.indices_to_f_hat(out.indices), out.f_hat_BChw)


def test_more_scales_reconstruct_better_and_gradients_reach_input():
    q = quantizer()
    f = torch.randn(4, 8, 8, 8, requires_grad=True)
    out = q(f)
    errors = [(q.indices_to_f_hat(out.indices[:s]) - f).pow(2).mean().item() for s in range(1, 5)]
    assert errors[-1] < errors[0]
    (out.f_hat_BChw.sum() + out.codebook_loss).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert q.codebook.weight.grad.abs().sum() > 0


def test_teacher_forcing_matches_step_by_step():
    q = quantizer().eval()
    out = q(torch.randn(2, 8, 8, 8))
    tf = q.teacher_forcing_input(out.indices)
    assert tf.shape == (2, 4 + 16 + 64, 8)
    f_hat, steps = None, []
    for si, idx in enumerate(out.indices):
        f_hat, x = q.next_scale_input(si, f_hat, idx)
        if x is not None:
            steps.append(x)
    assert torch.allclose(torch.cat(steps, 1), tf)
    assert torch.equal(f_hat, out.f_hat_BChw)


def test_dead_codes_restart_onto_samples():
    q = quantizer()
    q.usage.zero_()
    q.usage[:10] = 1.0
    samples = torch.randn(100, 8)
    assert q.restart_dead_codes(samples) == 54
    moved = q.codebook.weight[10:]
    assert all((moved[i] - samples).abs().sum(1).min() < 1e-6 for i in range(len(moved)))


def test_self_correcting_input_is_teacher_forcing_at_rate_0_and_corrects_mistakes_above():
    q = quantizer().eval()
    indices = q(torch.randn(3, 8, 8, 8)).indices
    torch.manual_seed(1)
    x, targets = q.self_correcting_input(indices, torch.zeros(3))
    assert torch.equal(x, q.teacher_forcing_input(indices)) and torch.equal(targets, torch.cat(indices, 1))
    # Rate 1 with one near miss: every earlier token of samples 1 and 2 is the second nearest code.
    x, targets = q.self_correcting_input(indices, torch.tensor([0.0, 1.0, 1.0]), near=1)
    clean = q.teacher_forcing_input(indices)
    assert torch.equal(x[0], clean[0]) and torch.equal(targets[0], torch.cat(indices, 1)[0])
    assert not torch.allclose(x[1:], clean[1:])
    # The reference, scale by scale: the first target is the true token, each later one the code nearest to
    # the true token's code plus what the fed prefix's mistakes leave out (all of the grid: scale 1 was wrong).
    true_hat = fed_hat = None
    expected, inputs = [indices[0][1:]], []
    for si, side in enumerate((1, 2, 4, 8)):
        z = q._lookup(indices[si][1:], side)
        if si:
            z = z + torch.nn.functional.interpolate(true_hat - fed_hat, size=(side, side), mode="area")
        ranked = q._distances(z.permute(0, 2, 3, 1).reshape(-1, 8)).argsort(dim=1)
        if si:
            expected.append(ranked[:, 0].view(2, -1))
        if si < 3:
            true_hat, _ = q.next_scale_input(si, true_hat, indices[si][1:])
            fed_hat, x_next = q.next_scale_input(si, fed_hat, ranked[:, 1].view(2, -1))
            inputs.append(x_next)
    assert torch.equal(targets[1:], torch.cat(expected, 1))
    assert torch.allclose(x[1:], torch.cat(inputs, 1))
    assert not torch.equal(targets[1:, 5:], torch.cat(indices, 1)[1:, 5:])  # the later targets changed
    with pytest.raises(ValueError, match="all 4 scales"):
        q.self_correcting_input(indices[:2], torch.zeros(3))


def test_near_misses_swap_tokens_for_codes_near_their_own_at_the_rate_given():
    q = quantizer().eval()
    indices = q(torch.randn(3, 8, 8, 8)).indices
    torch.manual_seed(0)
    noisy = q.near_misses(indices, torch.tensor([0.0, 1.0, 0.5]), near=2)
    assert [x.shape for x in noisy] == [x.shape for x in indices]
    flat, noisy_flat = torch.cat(indices, 1), torch.cat(noisy, 1)
    assert torch.equal(noisy_flat[0], flat[0])  # rate 0: untouched
    assert (noisy_flat[1] != flat[1]).all()  # rate 1: every token of every scale replaced...
    ranked = q._distances(q.codebook.weight).argsort(dim=1)[:, 1:3]  # ...by one of the 2 codes nearest its own
    assert (ranked[flat[1]] == noisy_flat[1][:, None]).any(dim=1).all()
    share = (noisy_flat[2] != flat[2]).float().mean().item()
    assert 0.3 < share < 0.7, share
    # decoding the mistakes: Z_hat after each scale, the last one what indices_to_f_hat gives
    prefixes = q.prefix_f_hats(noisy)
    assert len(prefixes) == 4 and torch.equal(prefixes[-1], q.indices_to_f_hat(noisy))
    assert torch.equal(prefixes[1], q.indices_to_f_hat(noisy[:2]))
