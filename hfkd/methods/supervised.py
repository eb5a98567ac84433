"""Plain cross-entropy: trains teachers and no-KD baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .base import DistillationMethod, LossOutput, MethodConfig, check_probability
from .registry import register_method


@dataclass
class SupervisedConfig(MethodConfig):
    """Settings of plain supervised training (method ``supervised``)."""

    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the cross-entropy, in [0, 1]."})

    def __post_init__(self):
        self.label_smoothing = check_probability("label_smoothing", self.label_smoothing)


@register_method
class Supervised(DistillationMethod):
    name = "supervised"
    max_teachers = 0
    config_class = SupervisedConfig
    supported_tasks = ("classification", "regression")

    def __init__(self, config: Optional[SupervisedConfig] = None, **kwargs):
        super().__init__(config, **kwargs)

    def compute_loss(self, batch, student, teachers):
        task = self.task
        loss = task.supervised_loss(student.logits, batch["labels"], label_smoothing=self.config.label_smoothing)
        return LossOutput(loss, {"ce" if task.name == "classification" else "nll": loss.detach()})
