"""Classic knowledge distillation (Hinton, Vinyals & Dean, 2015)."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F

from ..losses import ensemble_probs, soft_kl_div
from .base import DistillationMethod, LossOutput
from .configs import KDConfig
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
    config_class = KDConfig

    def __init__(self, config: Optional[KDConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        self.uses_labels = self.config.alpha < 1.0

    def labels_reason(self) -> str:
        return (f"alpha={self.config.alpha:g} weighs a cross-entropy on the labels by 1 - alpha; alpha=1 (--alpha 1) "
                "distils from the teachers' soft labels alone")

    def compute_loss(self, batch, student, teachers):
        cfg = self.config
        target = ensemble_probs([t.logits for t in teachers], self.teacher_weights(), cfg.temperature)
        soft = soft_kl_div(student.logits, target, cfg.temperature)
        logs = {"kd": soft.detach()}
        loss = cfg.alpha * soft
        if self.uses_labels:
            hard = F.cross_entropy(student.logits.float(), batch["labels"])
            loss = loss + (1.0 - cfg.alpha) * hard
            logs["ce"] = hard.detach()
        return LossOutput(loss, logs)
