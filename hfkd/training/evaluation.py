"""Top-1 / top-5 accuracy and loss over an eval loader, gathered across processes."""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_logits(accelerator, dataloader, predict: Callable[[torch.Tensor], torch.Tensor],
                    prefix: str = "eval") -> Dict[str, float]:
    """Run ``predict(pixel_values) -> logits`` over ``dataloader``; metrics over the whole eval set."""
    correct1 = correct5 = total = 0
    loss_sum = 0.0
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
        total += labels.numel()
    if total == 0:
        raise ValueError("the eval set is empty")
    return {f"{prefix}_accuracy": correct1 / total, f"{prefix}_top5_accuracy": correct5 / total,
            f"{prefix}_loss": loss_sum / total, f"{prefix}_samples": total}
