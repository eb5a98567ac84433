"""Plain cross-entropy: trains teachers and no-KD baselines."""
from __future__ import annotations

from .base import DistillationMethod, LossOutput, check_probability
from .registry import register_method


@register_method
class Supervised(DistillationMethod):
    name = "supervised"
    max_teachers = 0
    supported_tasks = ("classification", "regression")

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = check_probability("label_smoothing", label_smoothing)

    def compute_loss(self, batch, student, teachers):
        task = self.task
        loss = task.supervised_loss(student.logits, batch["labels"], label_smoothing=self.label_smoothing)
        return LossOutput(loss, {"ce" if task.name == "classification" else "nll": loss.detach()})

    def hparams(self):
        return {"label_smoothing": self.label_smoothing}
