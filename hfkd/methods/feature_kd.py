"""Feature distillation: the student's pooled features (and, optionally, its last feature map), projected, matched
to each teacher's pooled embedding (and patch-token grid).

The teachers need no classes of their own (a CLIP image tower, a timm backbone, a transformers encoder): only
their features are read.  The projectors (one per teacher and term, student width -> teacher width) are trained
with the student and checkpointed with the method, never saved with the student.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import feature_distillation_loss
from ..models.backbone import LAST_STAGE, OutputRequest, prefix_tokens
from .base import DistillationMethod, LossOutput, MethodContext, dry_forward
from .configs import FeatureKDConfig
from .registry import register_method


def make_projector(kind: str, in_features: int, out_features: int) -> nn.Module:
    """``linear``, or ``mlp``: Linear, LayerNorm, GELU, Linear (AM-RADIO's adaptor head), the teacher's width
    inside.  It acts on the last axis, so on pooled features [N, C] and on tokens [N, L, C] alike."""
    if kind == "linear":
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, out_features), nn.LayerNorm(out_features), nn.GELU(),
                         nn.Linear(out_features, out_features))


def token_grid(features: torch.Tensor, prefix: int, image_size: Sequence[int]) -> torch.Tensor:
    """A spatial output as a grid ``[N, D, h, w]``: a feature map as it is; tokens ``[N, L, D]`` without their first
    ``prefix`` (class, register) tokens, the rest laid out row by row on the grid of the image's aspect."""
    if features.dim() == 4:
        return features
    if features.dim() != 3:
        raise ValueError(f"feature_kd: a spatial output has shape [N, C, H, W] or [N, L, D], got {tuple(features.shape)}")
    tokens = features[:, prefix:]
    n, (height, width) = tokens.shape[1], image_size
    rows = max(1, round(math.sqrt(n * height / width)))
    if n == 0 or n % rows:
        raise ValueError(f"feature_kd: {n} tokens (after {prefix} class/register tokens) do not form a grid of a "
                         f"{height}x{width} image; match='tokens' needs patch tokens on a regular grid")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, n // rows)


def spatial_pair(student_map: torch.Tensor, teacher_map: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The student's grid resized (bilinear) to the teacher's, both as tokens ``[N, h*w, C]`` in the same order."""
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        student_map = F.interpolate(student_map.float(), size=teacher_map.shape[-2:], mode="bilinear",
                                    align_corners=False)
    return student_map.flatten(2).transpose(1, 2), teacher_map.flatten(2).transpose(1, 2)


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
        # Without labels the head never learns: the student is saved as a backbone, for `hfkd train` to give a head.
        self.trains_student_head = self.uses_labels
        self.match_pooled = self.config.match in ("pooled", "both")
        self.match_tokens = self.config.match in ("tokens", "both")
        if self.match_tokens:  # the last stage: a CNN's final feature map, a transformer's output tokens
            self.student_request = OutputRequest(pooled=True, feature_stages=(LAST_STAGE,))
            self.teacher_request = OutputRequest(pooled=self.match_pooled, feature_stages=(LAST_STAGE,))
        self.projectors = nn.ModuleList()  # pooled features, one per teacher
        self.spatial_projectors = nn.ModuleList()  # per position of the token grid, one per teacher
        # per teacher: (prefix tokens, image size) to lay its tokens on a grid; the student's prefix
        self._teacher_grids: List[Tuple[int, Tuple[int, int]]] = []
        self._student_prefix = 0
        self._student_image_size: Tuple[int, int] = (1, 1)

    def labels_reason(self) -> str:
        return (f"ce_weight={self.config.ce_weight:g} adds a cross-entropy on the labels; ce_weight=0 (the default) "
                "matches the teachers' features alone")

    def setup(self, context: MethodContext) -> None:
        super().setup(context)
        student = context.student
        dummy, s_out = dry_forward(student, self.student_request)
        t_outs = [t(dummy, self.teacher_request) for t in context.teachers]
        self._student_prefix = prefix_tokens(student)
        self._student_image_size = tuple(student.preprocess.image_size)
        self._teacher_grids = [(prefix_tokens(t.backbone), tuple(t.backbone.preprocess.image_size))
                               for t in context.teachers]
        shapes = {}
        if self.match_pooled:
            shapes["projectors"] = [(s_out.pooled.shape[-1], t.pooled.shape[-1]) for t in t_outs]
        if self.match_tokens:  # checked here, before the first step: each output must form a grid
            s_grid = token_grid(s_out.feature_maps[LAST_STAGE], self._student_prefix, dummy.shape[-2:])
            t_grids = [token_grid(t.feature_maps[LAST_STAGE], *grid) for t, grid in zip(t_outs, self._teacher_grids)]
            shapes["spatial_projectors"] = [(s_grid.shape[1], g.shape[1]) for g in t_grids]
        for name, wanted in shapes.items():
            projectors = getattr(self, name)
            if len(projectors):
                # Set up again (a resumed or repeated run): keep the trained projectors if they still fit.
                have = [(p_in(p), p_out(p)) for p in projectors]
                if have != wanted:
                    raise ValueError(f"feature_kd: the projectors map {have}, but the student and teachers now need "
                                     f"{wanted}; create a new method for other models")
            else:
                for width_in, width_out in wanted:
                    projectors.append(make_projector(self.config.projector, width_in, width_out))
        self.projectors.to(dummy.device)
        self.spatial_projectors.to(dummy.device)

    def _pooled_term(self, n: int, student, teacher) -> torch.Tensor:
        return feature_distillation_loss(self.projectors[n](student.pooled.float()), teacher.pooled,
                                         self.config.distance)

    def _spatial_term(self, n: int, student, teacher, image_size) -> torch.Tensor:
        s_map = token_grid(student.feature_maps[LAST_STAGE].float(), self._student_prefix, image_size)
        t_map = token_grid(teacher.feature_maps[LAST_STAGE], *self._teacher_grids[n])
        s_tokens, t_tokens = spatial_pair(s_map, t_map)
        return feature_distillation_loss(self.spatial_projectors[n](s_tokens), t_tokens, self.config.distance)

    def compute_loss(self, batch, student, teachers) -> LossOutput:
        expected = len(self.projectors) if self.match_pooled else len(self.spatial_projectors)
        if len(teachers) != expected:
            raise RuntimeError("feature_kd: call setup(context) before computing the loss (the trainer does)")
        weights = self.teacher_weights() or [1.0] * len(teachers)
        total = sum(weights)
        logs: Dict[str, torch.Tensor] = {}
        terms = []
        pixels = batch.get("pixel_values") if isinstance(batch, dict) else None
        image_size = tuple(pixels.shape[-2:]) if pixels is not None else self._student_image_size
        for n, teacher in enumerate(teachers):
            # The projectors run in float32 as the loss does: they are small and their targets are unnormalised.
            with torch.autocast(device_type=student.pooled.device.type, enabled=False):
                parts = []
                if self.match_pooled:
                    parts.append(self._pooled_term(n, student, teacher))
                    logs[f"feature_{n}"] = parts[-1].detach()
                if self.match_tokens:
                    parts.append(self._spatial_term(n, student, teacher, image_size))
                    logs[f"spatial_{n}"] = parts[-1].detach()
                term = parts[0] if len(parts) == 1 else parts[0] + parts[1]
            terms.append(weights[n] / total * term)
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
        params = list(self.projectors.parameters()) + list(self.spatial_projectors.parameters())
        return [{"params": params}] if params else []


def p_in(projector: nn.Module) -> int:
    first = projector if isinstance(projector, nn.Linear) else projector[0]
    return first.in_features


def p_out(projector: nn.Module) -> int:
    last = projector if isinstance(projector, nn.Linear) else projector[-1]
    return last.out_features
