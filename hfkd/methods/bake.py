"""BAKE: Batch Knowledge Ensembling (Ge et al., 2021).

Soft targets without a teacher: each image's prediction is refined by those of the
*other images in the batch* it resembles.  What the official code does and this
module reproduces (docs/methods.md, "BAKE"):

* ``A`` = row softmax of the cosine similarities of the L2-normalised pooled features
  (before the classifier), diagonal masked out, **no temperature on the affinity**;
* ``Q = (1 - w) (I - w A)^-1 softmax(z / T)``, the fixed point of ``P' <- w A P' + (1 - w) P``,
  from the **detached** features and logits of the current network on the current batch
  (no EMA, no memory bank), in float32 even under bf16;
* loss ``CE(z, y) + lambda * T^2 * KL(Q || softmax(z / T))`` averaged over the batch, on every
  image of the batch (anchors and partners);
* class-aware batches: ``N / (M + 1)`` anchors, each followed by ``M`` images of its class
  (:class:`~hfkd.data.samplers.ClassAwareBatchSampler`); ``M = 0`` falls back to shuffled batches;
* ``global_ensemble=True`` (the ImageNet setting) all-gathers features and logits, builds ``Q``
  over the global batch and keeps this process's rows.

Default ``M = 1``: the ImageNet configuration, and the one that keeps the epoch cost closest
to the baseline (2x the images per epoch; ``M = 3``, the CIFAR-100 setting, gives 4x).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.samplers import ClassAwareBatchSampler
from ..losses import bake_targets, soft_kl_div
from ..models.backbone import OutputRequest
from .base import DistillationMethod, LossOutput, gather_rows
from .configs import BAKEConfig
from .registry import register_method

__all__ = ["BAKE", "BAKEConfig"]


@register_method
class BAKE(DistillationMethod):
    """Batch knowledge ensembling; settings in :class:`BAKEConfig` (``kd_weight`` is ``lambda``)."""

    name = "bake"
    needs_random_access = ("its class-aware sampler draws each batch's images by row from the labels of the whole "
                           "split, which a stream can neither list in advance nor read out of order")
    citation = (
        "@article{ge2021self,\n  title={Self-distillation with Batch Knowledge Ensembling Improves ImageNet "
        "Classification},\n  author={Ge, Yixiao and Zhang, Xiao and Choi, Ching Lam and Cheung, Ka Chun and "
        "Zhao, Peipei and Zhu, Feng and Wang, Xiaogang and Zhao, Rui and Li, Hongsheng},\n"
        "  journal={arXiv preprint arXiv:2104.13298},\n  year={2021}\n}"
    )
    max_teachers = 0
    student_request = OutputRequest(pooled=True)
    config_class = BAKEConfig

    def __init__(self, config: Optional[BAKEConfig] = None, **kwargs):
        super().__init__(config, **kwargs)

    def train_batch_sampler(self, labels: Sequence[int], batch_size: int, seed: int):
        # The trainer sets the sampler's epoch (also inside accelerate's BatchSamplerShard). Its batches can only
        # be skipped whole, so the trainer refuses a mid-epoch resume whose position is not a whole number of the
        # new run's steps (another number of processes or batch size; docs/launch.md).
        if self.config.intra_class_images == 0:
            return None
        return ClassAwareBatchSampler(labels, batch_size, self.config.intra_class_images, seed)

    def targets(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``Q`` for this process's rows, from the local or (``global_ensemble``) the global batch."""
        features, logits = features.detach(), logits.detach()
        cfg = self.config
        if cfg.global_ensemble:
            all_features, all_logits, offset = gather_rows(self.context, features.float(), logits.float())
            q = bake_targets(all_features, all_logits, cfg.omega, cfg.temperature)
            return q[offset:offset + logits.shape[0]]
        return bake_targets(features, logits, cfg.omega, cfg.temperature)

    def labels_reason(self) -> str:
        return "its loss includes a cross-entropy on the labels, and its batches draw images of the same class"

    def compute_loss(self, batch, student, teachers):
        if student.pooled is None:
            raise ValueError("bake needs the student's pooled features (student_request pooled=True); the backbone "
                             "returned none")
        logits = student.logits
        q = self.targets(student.pooled, logits)
        ce = F.cross_entropy(logits.float(), batch["labels"])
        kd = soft_kl_div(logits, q, self.config.temperature)
        return LossOutput(ce + self.config.kd_weight * kd, {"ce": ce.detach(), "kd": kd.detach()})
