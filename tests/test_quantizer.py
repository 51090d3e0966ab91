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
