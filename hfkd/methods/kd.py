"""Classic knowledge distillation (Hinton, Vinyals & Dean, 2015)."""
from __future__ import annotations

import torch.nn.functional as F

from ..losses import ensemble_probs, soft_kl_div
from .base import DistillationMethod, LossOutput, check_positive, check_probability
from .registry import register_method


@register_method
class KD(DistillationMethod):
    """``(1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(p_T || softmax(z_s / T))``.

    With several teachers ``p_T`` is the (weighted) mean of their
    temperature-softened probabilities.
    """

    name = "kd"
    citation = (
        "@article{hinton2015distilling,\n  title={Distilling the Knowledge in a Neural Network},\n"
        "  author={Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},\n  journal={arXiv preprint arXiv:1503.02531},\n"
        "  year={2015}\n}"
    )
    min_teachers = 1

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.alpha = check_probability("alpha", alpha)
        self.uses_labels = self.alpha < 1.0

    def compute_loss(self, batch, student, teachers):
        target = ensemble_probs([t.logits for t in teachers], self.teacher_weights(), self.temperature)
        soft = soft_kl_div(student.logits, target, self.temperature)
        logs = {"kd": soft.detach()}
        loss = self.alpha * soft
        if self.uses_labels:
            hard = F.cross_entropy(student.logits.float(), batch["labels"])
            loss = loss + (1.0 - self.alpha) * hard
            logs["ce"] = hard.detach()
        return LossOutput(loss, logs)

    def hparams(self):
        return {"temperature": self.temperature, "alpha": self.alpha}
