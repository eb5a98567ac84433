"""MEAL V2 (Shen & Savvides, 2020): ensemble distillation without hard labels, plus a discriminator.

What the official code (szq0214/MEAL-V2, ``train.py``) does, and what this module reproduces
(docs/methods.md, "MEAL V2"):

* the target is the **mean of the teachers' softmax probabilities** at temperature 1, not the
  softmax of their mean logits;
* the student minimises the soft cross-entropy to that target and **no hard-label term**;
* a small discriminator ``D`` sees the student's **logits** and the teachers' **mean logits** and
  is trained with BCE-with-logits to tell them apart.  Student and ``D`` minimise the *same*
  ``L_sim + L_D`` with one optimiser in one backward pass: there is no min-max game and no
  gradient reversal.  The maintainer describes ``D`` as a regulariser (issues #2, #6).

The student's initialisation from pretrained weights, which the paper calls critical, is the
recipe's business (``--student_pretrained true`` or ``--student path/to/a/trained/student``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import meal_v2_loss
from .base import DistillationMethod, LossOutput, MethodContext
from .configs import MEALv2Config
from .registry import register_method

__all__ = ["MEALv2", "MEALv2Config", "MEALv2Discriminator"]

# Row labels of the discriminator's two outputs, as in the official code: column 0 = "student", 1 = "teacher".
STUDENT_TARGET = (1.0, 0.0)
TEACHER_TARGET = (0.0, 1.0)


class MEALv2Discriminator(nn.Module):
    """MEAL V2's discriminator: ``C -> C//r -> C//r//r -> 2`` with a ReLU after every layer.

    The official network is three 1x1 convolutions on a ``[N, C, 1, 1]`` view of the logits; a
    1x1 convolution on a 1x1 map is a linear layer with the same weights, fan-in and default
    initialisation, so this uses ``nn.Linear``.  For ``C = 1000`` and ``r = 8`` the widths are
    1000 -> 125 -> 15 -> 2 (127,047 parameters).

    The ReLU after the **last** layer is in the official code and kept: the two outputs are
    ``>= 0`` before BCE-with-logits, so a "student" row can never score below 0.5 on column 0.

    With few classes the official widths would reach 0 (``C = 10``: 10 -> 1 -> 0); here each
    hidden width is at least 1 (10 -> 1 -> 1 -> 2), which no official setting reaches.
    """

    def __init__(self, num_classes: int, reduction: int = 8):
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"MEALv2Discriminator: num_classes must be >= 1, got {num_classes}")
        if int(reduction) < 1:
            raise ValueError(f"MEALv2Discriminator: reduction must be >= 1, got {reduction}")
        self.num_classes, self.reduction = int(num_classes), int(reduction)
        hidden1 = max(1, self.num_classes // self.reduction)
        hidden2 = max(1, hidden1 // self.reduction)
        self.layers = nn.Sequential(
            nn.Linear(self.num_classes, hidden1), nn.ReLU(),
            nn.Linear(hidden1, hidden2), nn.ReLU(),
            nn.Linear(hidden2, 2), nn.ReLU(),
        )

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"MEALv2Discriminator expects logits of shape [N, {self.num_classes}], got {tuple(logits.shape)}"
            )
        return self.layers(logits)


def discriminator_targets(num_rows_per_side: int, device=None) -> torch.Tensor:
    """``[2N, 2]`` one-hot targets: ``[1, 0]`` for the N student rows, then ``[0, 1]`` for the N teacher rows."""
    rows = [STUDENT_TARGET] * num_rows_per_side + [TEACHER_TARGET] * num_rows_per_side
    return torch.tensor(rows, dtype=torch.float32, device=device)


@register_method
class MEALv2(DistillationMethod):
    """``L = H(mean_k softmax(z_k), softmax(z_s)) + w_D * BCE(D([z_s; mean_k z_k]), [student; teacher])``.

    Settings (:class:`MEALv2Config`): ``use_discriminator``, ``discriminator_weight`` (``w_D``, 1 in
    the official code), ``discriminator_reduction`` (``r``, official 8), ``discriminator_lr`` (``None``
    puts the discriminator at the student's rate and schedule, which is what the official code
    effectively did: its ``--d_lr 1e-4`` is overwritten every epoch by the student's rate, issue #9)
    and ``hard_label_weight`` (0, the paper's "the one-hot/hard label should not be used").

    Args:
        config: the settings; keyword arguments build or override them.
        num_classes: build the discriminator now instead of in :meth:`setup` (for use outside the trainer).

    The logged ``meal_v2_ce`` is the soft cross-entropy, so it includes the target's entropy and
    does not go to 0 (as in the official logs); ``discriminator`` is the BCE and
    ``discriminator_accuracy`` the fraction of rows it labels correctly.
    """

    name = "meal_v2"
    citation = (
        "@article{shen2020mealv2,\n  title={MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet "
        "without Tricks},\n  author={Shen, Zhiqiang and Savvides, Marios},\n  journal={arXiv preprint arXiv:2009.08453},\n"
        "  year={2020}\n}"
    )
    min_teachers = 1
    config_class = MEALv2Config
    starts_from_trained_student = True  # the paper calls the pretrained initialisation critical

    def __init__(self, config: Optional[MEALv2Config] = None, num_classes: Optional[int] = None, **kwargs):
        super().__init__(config, **kwargs)
        self.uses_labels = self.config.hard_label_weight > 0
        self.discriminator: Optional[MEALv2Discriminator] = None
        if self.config.use_discriminator and num_classes is not None:
            self.discriminator = MEALv2Discriminator(num_classes, self.config.discriminator_reduction)

    def setup(self, context: MethodContext) -> None:
        super().setup(context)
        if not self.config.use_discriminator:
            return
        if self.discriminator is None:
            # Built here, before the trainer creates the optimiser and wraps the module in DDP.
            self.discriminator = MEALv2Discriminator(context.num_classes, self.config.discriminator_reduction)
        elif self.discriminator.num_classes != context.num_classes:
            raise ValueError(
                f"meal_v2: the discriminator was built for {self.discriminator.num_classes} classes but the student "
                f"predicts {context.num_classes}; create the method with num_classes={context.num_classes} or without it"
            )

    def labels_reason(self) -> str:
        return (f"hard_label_weight={self.config.hard_label_weight:g} adds a cross-entropy on the labels; the "
                "paper's hard_label_weight=0 (--hard_label_weight 0) needs none")

    # -- the loss ---------------------------------------------------------------------------------
    def _mean_teacher_logits(self, teacher_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The (weighted) mean of the teachers' logits: the discriminator's "teacher" rows."""
        weights = self.teacher_weights() or [1.0] * len(teacher_logits)
        w = torch.as_tensor(weights, dtype=torch.float32)
        w = w / w.sum()
        stacked = torch.stack([t.detach().float() for t in teacher_logits])
        return torch.einsum("k,knc->nc", w.to(stacked.device), stacked)

    def discriminator_loss(self, student_logits: torch.Tensor, teacher_mean_logits: torch.Tensor):
        """BCE-with-logits of ``D`` over the ``2N x 2`` outputs, and the fraction of rows ``D`` gets right."""
        if self.discriminator is None:
            raise RuntimeError("meal_v2: the discriminator is not built; call setup() or pass num_classes")
        n = student_logits.shape[0]
        # The discriminator is tiny: run it in float32 whatever the autocast dtype.
        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            inputs = torch.cat([student_logits.float(), teacher_mean_logits.float()], dim=0)
            outputs = self.discriminator(inputs)
            targets = discriminator_targets(n, outputs.device)
            loss = F.binary_cross_entropy_with_logits(outputs, targets)
        accuracy = (outputs.detach().argmax(dim=1) == targets.argmax(dim=1)).float().mean()
        return loss, accuracy

    def compute_loss(self, batch, student, teachers) -> LossOutput:
        teacher_logits = [t.logits for t in teachers]
        if not teacher_logits:
            raise ValueError("meal_v2 needs at least one teacher's outputs")
        cfg = self.config
        similarity = meal_v2_loss(student.logits, teacher_logits, self.teacher_weights())
        loss = similarity
        logs: Dict[str, torch.Tensor] = {"meal_v2_ce": similarity.detach()}
        if cfg.use_discriminator:
            d_loss, d_acc = self.discriminator_loss(student.logits, self._mean_teacher_logits(teacher_logits))
            loss = loss + cfg.discriminator_weight * d_loss
            logs.update(discriminator=d_loss.detach(), discriminator_accuracy=d_acc)
        if self.uses_labels:
            hard = F.cross_entropy(student.logits.float(), batch["labels"])
            loss = loss + cfg.hard_label_weight * hard
            logs["ce"] = hard.detach()
        return LossOutput(loss, logs)

    # -- optimiser and metadata -------------------------------------------------------------------
    def param_groups(self, learning_rate: float) -> List[Dict[str, Any]]:
        if self.discriminator is None:
            return []
        group: Dict[str, Any] = {"params": list(self.discriminator.parameters())}
        if self.config.discriminator_lr is not None:
            group["lr"] = self.config.discriminator_lr
        return [group]
