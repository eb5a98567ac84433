"""Feature distillation: the student's pooled features, projected, matched to each teacher's pooled embedding.

The teachers need no classes of their own (a CLIP image tower, a timm backbone, a transformers encoder): only
their pooled features are read.  The projectors (one per teacher, student width -> teacher width) are trained with
the student and checkpointed with the method, never saved with the student.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import feature_distillation_loss
from ..models.backbone import OutputRequest
from .base import DistillationMethod, LossOutput, MethodContext
from .configs import FeatureKDConfig
from .registry import register_method


def make_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))


@register_method
class FeatureKD(DistillationMethod):
    """``feature_weight * sum_n w_n d(P_n(f_s), f_n) + ce_weight * CE(z_s, y)``, ``d`` the configured distance."""

    name = "feature_kd"
    citation = (
        "@inproceedings{ranzinger2024radio,\n  title={AM-RADIO: Agglomerative Vision Foundation Model Reduce All "
        "Domains Into One},\n  author={Ranzinger, Mike and Heinrich, Greg and Kautz, Jan and Molchanov, Pavlo},\n"
        "  booktitle={CVPR},\n  year={2024}\n}"
    )
    min_teachers = 1
    config_class = FeatureKDConfig
    #: only the teachers' pooled features are read: a teacher needs no classes, let alone the student's
    reads_teacher_logits = False
    student_request = OutputRequest(pooled=True)
    teacher_request = OutputRequest(pooled=True)

    def __init__(self, config: Optional[FeatureKDConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        self.uses_labels = self.config.ce_weight > 0
        self.projectors = nn.ModuleList()

    def labels_reason(self) -> str:
        return (f"ce_weight={self.config.ce_weight:g} adds a cross-entropy on the labels; ce_weight=0 (the default) "
                "matches the teachers' features alone")

    def setup(self, context: MethodContext) -> None:
        super().setup(context)
        student = context.student
        device = next(student.parameters()).device
        dummy = torch.zeros(2, *student.preprocess.input_size, device=device)
        was_training = student.training
        student.eval()  # a dry forward in train mode would move BatchNorm's running statistics
        try:
            with torch.no_grad():
                width = student(dummy, self.student_request).pooled.shape[-1]
        finally:
            student.train(was_training)
        widths = [t(dummy, self.teacher_request).pooled.shape[-1] for t in context.teachers]
        if len(self.projectors):
            # Set up again (a resumed or repeated run): keep the trained projectors if they still fit.
            shapes = [(p_in(p), p_out(p)) for p in self.projectors]
            if shapes != [(width, w) for w in widths]:
                raise ValueError(f"feature_kd: the projectors map {shapes}, but the student and teachers now need "
                                 f"{[(width, w) for w in widths]}; create a new method for other models")
        else:
            for w in widths:
                self.projectors.append(make_projector(self.config.projector, width, w))
        self.projectors.to(device)

    def compute_loss(self, batch, student, teachers) -> LossOutput:
        if len(teachers) != len(self.projectors):
            raise RuntimeError("feature_kd: call setup(context) before computing the loss (the trainer does)")
        weights = self.teacher_weights() or [1.0] * len(teachers)
        total = sum(weights)
        logs: Dict[str, torch.Tensor] = {}
        terms = []
        for n, (projector, teacher) in enumerate(zip(self.projectors, teachers)):
            # The projector runs in float32 as the loss does: it is small and its targets are unnormalised.
            with torch.autocast(device_type=student.pooled.device.type, enabled=False):
                term = feature_distillation_loss(projector(student.pooled.float()), teacher.pooled,
                                                 self.config.distance)
            terms.append(weights[n] / total * term)
            logs[f"feature_{n}"] = term.detach()
        feature = torch.stack(terms).sum()
        logs["feature"] = feature.detach()
        loss = self.config.feature_weight * feature
        if self.uses_labels:
            ce = F.cross_entropy(student.logits.float(), batch["labels"])
            loss = loss + self.config.ce_weight * ce
            logs["ce"] = ce.detach()
        else:
            # Without labels the student's head has no part in the loss, and DDP (without the slower
            # find_unused_parameters) stops at a parameter without gradient: give the head an exact zero gradient.
            loss = loss + 0.0 * student.logits.float().sum()
        return LossOutput(loss, logs)

    def param_groups(self, learning_rate: float) -> List[Dict[str, Any]]:
        return [{"params": list(self.projectors.parameters())}] if len(self.projectors) else []


def p_in(projector: nn.Module) -> int:
    first = projector if isinstance(projector, nn.Linear) else projector[0]
    return first.in_features


def p_out(projector: nn.Module) -> int:
    last = projector if isinstance(projector, nn.Linear) else projector[-1]
    return last.out_features
