"""Gaussian outputs: gaussian_kl / gaussian_nll against torch.distributions, the regression task, gap closed."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from hfkd.losses import gaussian_kl, gaussian_nll, split_gaussian
from hfkd.results import gap_closed
from hfkd.tasks import ClassificationTask, RegressionTask, create_task


def _params(seed, n=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g) * 2, torch.randn(n, 3, generator=g)


def test_gaussian_kl_matches_torch_distributions():
    (mp, lp), (mq, lq) = _params(0), _params(1)
    expected = kl_divergence(Normal(mp, (0.5 * lp).exp()), Normal(mq, (0.5 * lq).exp()))
    assert torch.allclose(gaussian_kl(mp, lp, mq, lq), expected, atol=1e-5, rtol=1e-5)


def test_gaussian_kl_by_hand_zero_for_identical_and_asymmetric():
    # KL(N(0, 1) || N(1, 4)) = 0.5 (log 4 + (1 + 1) / 4 - 1)
    kl = gaussian_kl(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([math.log(4.0)]))
    assert kl.item() == pytest.approx(0.5 * (math.log(4.0) + 0.5 - 1.0), rel=1e-6)
    back = gaussian_kl(torch.tensor([1.0]), torch.tensor([math.log(4.0)]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert back.item() == pytest.approx(0.5 * (-math.log(4.0) + 4.0 + 1.0 - 1.0), rel=1e-6)  # != kl: not symmetric
    assert back.item() != pytest.approx(kl.item())
    m, lv = _params(2)
    assert torch.equal(gaussian_kl(m, lv, m, lv), torch.zeros_like(m))
    (mq, lq) = _params(3)
    assert (gaussian_kl(m, lv, mq, lq) >= 0).all()


def test_gaussian_losses_compute_in_float32_with_gradients():
    m, lv = (t.to(torch.bfloat16) for t in _params(4))
    assert gaussian_kl(m, lv, m.float(), lv.float()).dtype == torch.float32
    mq = torch.zeros(64, 3, requires_grad=True)
    gaussian_kl(m, lv, mq, torch.zeros(64, 3)).sum().backward()
    assert mq.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one shape"):
        gaussian_kl(torch.zeros(2), torch.zeros(2), torch.zeros(3), torch.zeros(3))


def test_gaussian_nll_matches_torch_distributions():
    m, lv = _params(5)
    y = torch.randn(64, 3, generator=torch.Generator().manual_seed(6))
    expected = -Normal(m, (0.5 * lv).exp()).log_prob(y)
    assert torch.allclose(gaussian_nll(m, lv, y), expected, atol=1e-5, rtol=1e-5)


def test_split_gaussian_means_first_then_log_variances():
    mean, log_var = split_gaussian(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert mean.tolist() == [[1.0, 2.0]] and log_var.tolist() == [[3.0, 4.0]]
    with pytest.raises(ValueError, match="num_classes = 2"):
        split_gaussian(torch.zeros(2, 3))


def test_regression_ensemble_is_the_moment_matched_mixture():
    a = torch.tensor([[0.0, 0.0]])                   # N(0, 1)
    b = torch.tensor([[2.0, math.log(3.0)]])         # N(2, 3)
    task = RegressionTask(log_var_bound=None)
    mean, log_var = task.gaussian(task.ensemble([a, b]))
    assert mean.item() == pytest.approx(1.0)
    assert log_var.exp().item() == pytest.approx((1 + 3) / 2 + 1.0)  # mean variance + variance of the means
    mean, _ = task.gaussian(task.ensemble([a, b], weights=[3.0, 1.0]))
    assert mean.item() == pytest.approx(0.5)


def test_log_variance_is_bounded_smoothly_and_the_ensemble_round_trips():
    task = RegressionTask(log_var_bound=6.0)
    _, log_var = task.gaussian(torch.tensor([[0.0, -100.0], [0.0, 3.0]]))
    assert log_var[0].item() == pytest.approx(-6.0) and log_var[1].item() == pytest.approx(6 * math.tanh(0.5))
    one = torch.tensor([[0.3, -2.0]])
    assert torch.allclose(task.gaussian(task.ensemble([one]))[1], task.gaussian(one)[1], atol=1e-5)


def test_regression_supervised_loss_uses_the_target_scale():
    task = RegressionTask(num_targets=1, target_scale=10.0)
    outputs = torch.tensor([[0.5, 0.0]])
    assert task.supervised_loss(outputs, torch.tensor([[5.0]])).item() == pytest.approx(0.5 * math.log(2 * math.pi))
    with pytest.raises(ValueError, match="label_smoothing"):
        task.supervised_loss(outputs, torch.tensor([[5.0]]), label_smoothing=0.1)


def test_create_task():
    assert isinstance(create_task(None), ClassificationTask)
    assert create_task("regression", num_targets=2).num_targets == 2
    with pytest.raises(ValueError, match="available tasks"):
        create_task("segmentation")
    with pytest.raises(ValueError, match="target_scale"):
        RegressionTask(target_scale=0)


def test_gap_closed_by_hand():
    assert gap_closed(0.775, 0.75, 0.80) == pytest.approx(0.5)   # accuracy: teacher 80, KD 75, method 77.5
    assert gap_closed(2.0, 3.0, 1.0) == pytest.approx(0.5)       # errors: teacher 1, KD 3, method 2
    assert gap_closed(0.70, 0.75, 0.80) == pytest.approx(-1.0)   # worse than KD
    assert gap_closed(0.8, 0.8, 0.8) is None and gap_closed(None, 0.7, 0.8) is None


def test_results_table_shows_the_gap_closed_column_only_when_measured():
    from hfkd.results import results_table

    rows = [{"model": "m", "role": "student, kd", "eval_accuracy": 0.75, "params": 10**6}]
    assert "gap closed" not in results_table(rows)
    rows.append({"model": "m", "role": "student, el", "eval_accuracy": 0.775, "params": 10**6, "gap_closed": 0.5})
    assert results_table(rows).splitlines()[-1] == "| m | student, el | 77.50 | - | - | - | 50.0 | 1.00M |"


def test_card_reports_the_gap_closed():
    from hfkd.hub.card import create_model_card

    lineage = {"method": {"name": "extracurricular"}, "student": {"name": "s", "num_parameters": 10},
               "teachers": [{"name": "t", "metrics": {"eval_accuracy": 0.80, "eval_samples": 10}}],
               "metrics": {"eval_accuracy": 0.775}, "dataset": {"id": "hfkd/digits"}}
    card = str(create_model_card(lineage, kd_reference={"eval_accuracy": 0.75}))
    assert "**50.0 %** of the teacher-student gap" in card
    assert "Gap closed" not in str(create_model_card(lineage))
