"""Plain cross-entropy: trains teachers and no-KD baselines."""
from __future__ import annotations

from typing import Optional

from .base import DistillationMethod, LossOutput
from .configs import SupervisedConfig
from .registry import register_method


@register_method
class Supervised(DistillationMethod):
    name = "supervised"
    max_teachers = 0
    config_class = SupervisedConfig
    supported_tasks = ("classification", "regression")

    def __init__(self, config: Optional[SupervisedConfig] = None, **kwargs):
        super().__init__(config, **kwargs)

    def labels_reason(self) -> str:
        return "it trains on the labels alone (no teacher)"

    def compute_loss(self, batch, student, teachers):
        task = self.task
        loss = task.supervised_loss(student.logits, batch["labels"], label_smoothing=self.config.label_smoothing)
        return LossOutput(loss, {"ce" if task.name == "classification" else "nll": loss.detach()})
