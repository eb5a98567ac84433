"""Top-1 / top-5 accuracy, cross-entropy (NLL) and calibration over an eval loader, gathered across processes."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F


ECE_BINS = 15  # the usual choice (Guo et al. 2017), also PS-KD's


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, num_bins: int = ECE_BINS) -> torch.Tensor:
    """Per confidence bin ``(lo, hi]`` of width ``1 / num_bins``: ``[sum of confidences, number correct]``.

    Sums, not means, so that batches (and processes) can be added before the ECE is taken.
    """
    confidence, predicted = probs.float().max(dim=-1)
    correct = predicted.eq(labels).float()
    bins = (confidence * num_bins).ceil().long().clamp_(1, num_bins) - 1
    sums = torch.zeros(2, num_bins, dtype=torch.float64, device=probs.device)
    sums[0].index_add_(0, bins, confidence.double())
    sums[1].index_add_(0, bins, correct.double())
    return sums


def calibration_error(bins: torch.Tensor, total: int) -> float:
    """Expected calibration error ``sum_b (n_b / N) |mean confidence_b - accuracy_b|`` from summed bins."""
    return float((bins[0] - bins[1]).abs().sum() / total)


@torch.no_grad()
def evaluate_logits(accelerator, dataloader, predict: Callable[[torch.Tensor], torch.Tensor],
                    prefix: str = "eval") -> Dict[str, float]:
    """Run ``predict(pixel_values) -> logits`` over ``dataloader``; metrics over the whole eval set."""
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    bins = None
    for batch in dataloader:
        with accelerator.autocast():
            logits = predict(batch["pixel_values"])
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        hits = top.eq(labels.unsqueeze(1))
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        batch_bins = calibration_bins(logits.softmax(-1), labels)
        bins = batch_bins if bins is None else bins + batch_bins
        total += labels.numel()
    if total == 0:
        raise ValueError("the eval set is empty")
    return {f"{prefix}_accuracy": correct1 / total, f"{prefix}_top5_accuracy": correct5 / total,
            f"{prefix}_loss": loss_sum / total, f"{prefix}_ece": calibration_error(bins, total),
            f"{prefix}_samples": total}


#: what an evaluation without labels records instead of accuracy (``<prefix>_accuracy_note``), for hfkd.json and the card
NO_LABELS_NOTE = ("accuracy was not measured: the eval split has no labels; eval_agreement is the share of eval images "
                  "whose top-1 class the student and the teachers' ensemble agree on")


@torch.no_grad()
def evaluate_agreement(accelerator, dataloader, forward: Callable, num_teachers: int,
                       ensemble: Optional[Callable[[List[torch.Tensor]], torch.Tensor]] = None,
                       prefix: str = "eval") -> Dict[str, object]:
    """Evaluation without labels: the student's top-1 agreement with each teacher and with their ensemble, and the
    distillation loss, over the whole eval set (gathered across processes).

    ``forward(batch) -> (student_logits, [teacher_logits, ...], loss or None)``; ``ensemble(teacher_logits)`` gives
    the ensemble's scores (default: the one teacher).  Metrics: ``<prefix>_agreement_teacher_<i>`` per teacher,
    ``<prefix>_agreement`` with the ensemble (the one teacher when there is one), ``<prefix>_distillation_loss``
    (the mean of the batches' losses, weighted by their sizes), ``<prefix>_samples`` and ``<prefix>_accuracy_note``.
    """
    agree = torch.zeros(num_teachers + 1, dtype=torch.float64)
    total = 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    loss_rows = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for batch in dataloader:
        with accelerator.autocast():
            student, teachers, loss = forward(batch)
        rows = student.shape[0]
        if loss is not None:
            loss_sum += loss.detach().double() * rows
            loss_rows += rows
        predictions = [student.float().argmax(-1)] + [t.float().argmax(-1) for t in teachers]
        if teachers:
            combined = ensemble([t.float() for t in teachers]) if ensemble is not None and len(teachers) > 1 \
                else teachers[0].float()
            predictions.append(combined.argmax(-1))
        gathered = accelerator.gather_for_metrics(tuple(predictions))
        student_top1 = gathered[0]
        for i, other in enumerate(gathered[1:]):
            agree[i] += student_top1.eq(other).sum().item()
        total += student_top1.numel()
    if total == 0:
        raise ValueError("the eval set is empty")
    metrics: Dict[str, object] = {f"{prefix}_samples": total, f"{prefix}_accuracy_note": NO_LABELS_NOTE}
    if num_teachers:
        for i in range(num_teachers):
            metrics[f"{prefix}_agreement_teacher_{i}"] = float(agree[i]) / total
        metrics[f"{prefix}_agreement"] = float(agree[num_teachers]) / total
    loss_sum, loss_rows = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(loss_rows, "sum")
    if float(loss_rows) > 0:
        metrics[f"{prefix}_distillation_loss"] = float(loss_sum / loss_rows)
    return metrics
