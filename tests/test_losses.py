"""Foundation losses against hand computation from the formulas, and their properties."""
import math

import pytest
import torch

from hfkd import losses


def _softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    s = sum(e)
    return [x / s for x in e]


def test_soft_cross_entropy_by_hand():
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    p = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    expected = 0.0
    for zi, pi in zip(z.tolist(), p.tolist()):
        q = _softmax(zi)
        expected += -sum(pc * math.log(qc) for pc, qc in zip(pi, q))
    expected /= 2
    assert losses.soft_cross_entropy(z, p).item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_with_onehot_equals_cross_entropy():
    z = torch.randn(5, 7)
    y = torch.tensor([0, 3, 6, 2, 2])
    onehot = torch.nn.functional.one_hot(y, 7).float()
    assert torch.allclose(losses.soft_cross_entropy(z, onehot), torch.nn.functional.cross_entropy(z, y))


def test_kd_kl_div_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[2.0, 0.5, 0.0]])  # not a constant shift of s: the KL is not zero
    T = 2.0
    p, q = _softmax(t[0].tolist(), T), _softmax(s[0].tolist(), T)
    kl = sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
    assert losses.kd_kl_div(s, t, T).item() == pytest.approx(T * T * kl, rel=1e-5)


def test_kd_kl_div_properties():
    z = torch.randn(4, 10)
    assert losses.kd_kl_div(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # shifting logits by a per-row constant leaves both softmaxes unchanged
    shift = torch.randn(4, 1)
    t = torch.randn(4, 10)
    assert torch.allclose(losses.kd_kl_div(z + shift, t, 4.0), losses.kd_kl_div(z, t - shift, 4.0), atol=1e-6)
    assert losses.kd_kl_div(z, t, 4.0) > 0
    # batchmean: duplicating the batch leaves the value unchanged
    assert torch.allclose(losses.kd_kl_div(torch.cat([z, z]), torch.cat([t, t]), 2.0), losses.kd_kl_div(z, t, 2.0))


def test_kd_kl_div_gradient_flows_to_student_only():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 5, requires_grad=True)
    losses.kd_kl_div(s, t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_kl_div_gradient_matches_hinton():
    # d/dz_s of T^2 * KL = T * (q - p), batch mean
    s = torch.randn(2, 4, requires_grad=True)
    t = torch.randn(2, 4)
    T = 3.0
    losses.kd_kl_div(s, t, T).backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 2
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_ensemble_probs_is_mean_of_probabilities():
    a = torch.tensor([[2.0, 0.0]])
    b = torch.tensor([[0.0, 4.0]])
    pa, pb = _softmax([2.0, 0.0]), _softmax([0.0, 4.0])
    got = losses.ensemble_probs([a, b])[0].tolist()
    assert got == pytest.approx([(pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2], rel=1e-6)
    # not the softmax of the mean logits
    assert not torch.allclose(losses.ensemble_probs([a, b]), torch.softmax((a + b) / 2, -1), atol=1e-3)


def test_ensemble_probs_weights_and_rows_sum_to_one():
    ts = [torch.randn(6, 9) for _ in range(3)]
    p = losses.ensemble_probs(ts, weights=[1.0, 2.0, 1.0])
    assert torch.allclose(p.sum(-1), torch.ones(6))
    manual = (torch.softmax(ts[0], -1) + 2 * torch.softmax(ts[1], -1) + torch.softmax(ts[2], -1)) / 4
    assert torch.allclose(p, manual, atol=1e-6)
    # a single teacher: just its softmax; a zero weight removes a teacher
    assert torch.allclose(losses.ensemble_probs(ts[:1]), torch.softmax(ts[0], -1))
    assert torch.allclose(losses.ensemble_probs(ts[:2], weights=[1.0, 0.0]), torch.softmax(ts[0], -1))


def test_losses_compute_in_float32_under_bf16_inputs():
    z = torch.randn(4, 10)
    t = torch.randn(4, 10)
    exact = losses.kd_kl_div(z, t, 4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = losses.kd_kl_div(z.bfloat16(), t.bfloat16(), 4.0)
    assert low.dtype == torch.float32
    # only the bf16 rounding of the inputs remains
    assert torch.allclose(low, losses.kd_kl_div(z.bfloat16().float(), t.bfloat16().float(), 4.0), atol=1e-6)
    assert torch.allclose(low, exact, rtol=0.05)


@pytest.mark.parametrize("call", [
    lambda: losses.soft_cross_entropy(torch.randn(2, 3), torch.rand(2, 4)),
    lambda: losses.kd_kl_div(torch.randn(2, 3), torch.randn(2, 3), 0.0),
    lambda: losses.kd_kl_div(torch.randn(2, 3), torch.randn(2, 5), 1.0),
    lambda: losses.ensemble_probs([]),
    lambda: losses.ensemble_probs([torch.randn(2, 3)], weights=[1.0, 1.0]),
    lambda: losses.ensemble_probs([torch.randn(2, 3), torch.randn(2, 3)], weights=[-1.0, 1.0]),
])
def test_losses_reject_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_feature_distillation_loss_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[6.0, 8.0], [0.0, 2.0]])
    # cosine: row 0 points the same way (cos 1), row 1 is orthogonal (cos 0): mean of 1 - cos = 0.5
    assert losses.feature_distillation_loss(s, t, "cosine").item() == pytest.approx(0.5)
    # mse: squared differences 9, 16, 1, 4 -> mean 7.5
    assert losses.feature_distillation_loss(s, t, "mse").item() == pytest.approx(7.5)
    # smooth L1 (beta 1): |d| = 3, 4 -> |d| - 0.5; |d| = 1, 2 -> 0.5, 1.5: (2.5 + 3.5 + 0.5 + 1.5) / 4
    assert losses.feature_distillation_loss(s, t, "smooth_l1").item() == pytest.approx(2.0)
    # a spatial map [N, L, D]: the cosine is per token
    maps_s, maps_t = s.detach().view(1, 2, 2), t.view(1, 2, 2)
    assert losses.feature_distillation_loss(maps_s, maps_t).item() == pytest.approx(0.5)
    # the teacher is a constant
    t_grad = t.clone().requires_grad_(True)
    losses.feature_distillation_loss(s, t_grad, "mse").backward()
    assert s.grad is not None and t_grad.grad is None
    with pytest.raises(ValueError, match="differ"):
        losses.feature_distillation_loss(s, t[:, :1])
    with pytest.raises(ValueError, match="distance must be one of"):
        losses.feature_distillation_loss(s, t, "l3")
