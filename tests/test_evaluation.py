"""Evaluation metrics: expected calibration error by hand, and through the gathered eval loop."""
import pytest
import torch
from torch.utils.data import DataLoader

from hfkd.tasks.evaluation import calibration_bins, calibration_error, evaluate_logits

# confidence 0.9 right, 0.6 wrong, 0.8 right, 0.95 wrong
PROBS = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.95, 0.05]])
LABELS = torch.tensor([0, 1, 1, 1])


def test_ece_by_hand_one_sample_per_bin():
    # 15 bins: the four confidences fall in four different bins, so ECE is the mean |conf - correct|.
    ece = calibration_error(calibration_bins(PROBS, LABELS, 15), 4)
    assert ece == pytest.approx((0.1 + 0.6 + 0.2 + 0.95) / 4)


def test_ece_with_one_bin_is_the_gap_between_mean_confidence_and_accuracy():
    ece = calibration_error(calibration_bins(PROBS, LABELS, 1), 4)
    assert ece == pytest.approx(abs((0.9 + 0.6 + 0.8 + 0.95) / 4 - 0.5))


def test_ece_bins_add_over_batches_and_edges_stay_in_range():
    whole = calibration_bins(PROBS, LABELS)
    parts = calibration_bins(PROBS[:1], LABELS[:1]) + calibration_bins(PROBS[1:], LABELS[1:])
    assert torch.allclose(whole, parts)
    # confidence exactly 1 lands in the last bin, exactly 1/B (uniform over B classes) in the first
    edges = calibration_bins(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 0]), num_bins=2)
    assert edges[0].tolist() == [0.5, 1.0] and edges[1].tolist() == [1.0, 1.0]


def test_ece_is_zero_when_confidence_equals_accuracy():
    # Two samples at confidence 0.5, one right and one wrong: perfectly calibrated.
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert calibration_error(calibration_bins(probs, torch.tensor([0, 1])), 2) == pytest.approx(0.0)


def test_evaluate_logits_reports_ece_and_nll_over_all_batches():
    from accelerate import Accelerator

    torch.manual_seed(0)
    logits = torch.randn(10, 4) * 3
    labels = torch.randint(0, 4, (10,))
    rows = [{"pixel_values": z, "labels": y} for z, y in zip(logits, labels)]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=3))
    metrics = evaluate_logits(accelerator, loader, predict=lambda x: x)
    expected = calibration_error(calibration_bins(logits.softmax(-1), labels), 10)
    assert metrics["eval_ece"] == pytest.approx(expected)
    assert metrics["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert metrics["eval_samples"] == 10
