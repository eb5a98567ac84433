"""Frozen teachers: eval mode for good, no gradients, their own preprocessing."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .backbone import Backbone, BackboneOutput, OutputRequest
from .factory import ModelSource, create_backbone, is_zero_shot_source
from .preprocess import PreprocessConfig, adapt_batch


def check_teacher_labels(
    teacher: Backbone,
    num_classes: int,
    label_names: Optional[Sequence[str]],
    label_mapping: Optional[Dict[str, str]] = None,
    align_labels_by_name: bool = False,
) -> Optional[List[int]]:
    """Check a teacher predicts the student's classes; return a column permutation if needed.

    The permutation ``perm`` is such that ``teacher_logits[:, perm]`` is in the
    student's class order.  ``label_mapping`` maps teacher label -> student label.
    """
    if teacher.num_classes != num_classes:
        raise ValueError(
            f"teacher {teacher.name} predicts {teacher.num_classes} classes but the student predicts {num_classes}; "
            "fine-tune the teacher on this dataset first (recipes/train.py) or pick a teacher of the same label set"
        )
    t_names = teacher.label_names
    if label_names is None or t_names is None:
        if label_mapping:
            raise ValueError(f"label_mapping needs label names on both sides; teacher {teacher.name} or the student has none")
        return None
    t_names = [str(n) for n in t_names]
    s_names = [str(n) for n in label_names]
    if label_mapping:
        unknown = [k for k in label_mapping if k not in t_names]
        if unknown:
            raise ValueError(f"label_mapping names teacher labels {unknown[:5]} that teacher {teacher.name} does not have")
        t_names = [label_mapping.get(n, n) for n in t_names]
    if t_names == s_names:
        return None
    if sorted(t_names) == sorted(s_names) and len(set(t_names)) == len(t_names) and (align_labels_by_name or label_mapping):
        index = {n: i for i, n in enumerate(t_names)}
        return [index[n] for n in s_names]
    diff = [(i, t, s) for i, (t, s) in enumerate(zip(t_names, s_names)) if t != s][:5]
    raise ValueError(
        f"teacher {teacher.name} and the student name their classes differently (index, teacher, student): {diff}. "
        "If they are the same classes in another order pass align_labels_by_name=True; if the names differ, "
        "pass label_mapping={teacher_label: student_label}"
    )


class Teacher(nn.Module):
    """A frozen backbone that takes the student's batch and adapts it to itself."""

    def __init__(self, backbone: Backbone, student_preprocess: Optional[PreprocessConfig] = None,
                 permutation: Optional[Sequence[int]] = None, weight: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.student_preprocess = student_preprocess or backbone.preprocess
        self.register_buffer("permutation", torch.as_tensor(permutation) if permutation is not None else None,
                             persistent=False)
        self.weight = float(weight)
        # None: the caller's precision (autocast included); a dtype: weights and inputs in it, autocast off.
        self.compute_dtype: Optional[torch.dtype] = None
        backbone.requires_grad_(False)
        super().train(False)

    def set_compute_dtype(self, dtype: Optional[torch.dtype]) -> "Teacher":
        """Run the teacher in ``dtype`` whatever the student's mixed precision; outputs stay float32."""
        if dtype is not None:
            self.backbone.to(dtype)
        self.compute_dtype = dtype
        return self

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.backbone.preprocess

    def train(self, mode: bool = True) -> "Teacher":
        # A teacher's BatchNorm statistics and dropout are part of what it teaches: never train mode.
        return super().train(False)

    def prepare_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return adapt_batch(pixel_values, self.student_preprocess, self.preprocess)

    def forward(self, pixel_values: torch.Tensor, request: OutputRequest = OutputRequest()) -> BackboneOutput:
        # inference_mode frees each teacher's activations as soon as its forward ends: several teachers
        # one after another never hold more than one teacher's activations at a time.
        with torch.inference_mode():
            x = self.prepare_input(pixel_values)
            if self.compute_dtype is None:
                out = self.backbone(x, request)
            else:
                with torch.autocast(x.device.type, enabled=False):
                    out = self.backbone(x.to(self.compute_dtype), request)
        # Inference tensors cannot be saved for backward; losses multiply by them, so copy them out
        # (as float32 when the teacher ran in a dtype of its own).
        dtype = torch.float32 if self.compute_dtype is not None else None

        def copy(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype or t.dtype, copy=True)

        logits = copy(out.logits)
        if self.permutation is not None:
            logits = logits[:, self.permutation]
        return BackboneOutput(
            logits=logits,
            pooled=copy(out.pooled) if out.pooled is not None else None,
            feature_maps={k: copy(v) for k, v in out.feature_maps.items()},
        )


def bind_teacher(teacher: Union[ModelSource, Teacher], student_preprocess: Optional[PreprocessConfig],
                 num_classes: Optional[int], label_names: Optional[Sequence[str]]) -> Teacher:
    """A :class:`Teacher` for a student with this preprocessing and these classes.

    A ``create_teacher`` result already checked against these labels is kept as it is: re-creating it would drop
    its ``align_labels_by_name`` / ``label_mapping`` alignment.
    """
    if isinstance(teacher, Teacher):
        checked = getattr(teacher, "checked_label_names", None)
        if (teacher.backbone.num_classes == num_classes and checked is not None
                and [str(n) for n in checked] == [str(n) for n in (label_names or [])]):
            teacher.student_preprocess = student_preprocess
            return teacher
    return create_teacher(teacher, student_preprocess, num_classes, label_names)


def create_teacher(
    model: Union[ModelSource, Teacher],
    student_preprocess: Optional[PreprocessConfig] = None,
    num_classes: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    label_mapping: Optional[Dict[str, str]] = None,
    align_labels_by_name: bool = False,
    weight: float = 1.0,
    **backbone_kwargs,
) -> Teacher:
    """Load (pretrained by default) and freeze a teacher, checked against the student's classes.

    ``backbone_kwargs`` go to :func:`create_backbone`, e.g. ``revision``, ``trust_remote_code=True`` (a teacher
    built by its own code) or ``allow_pickle_weights=True`` (a teacher folder of pickled weights); both opt-ins
    are off by default, as for students.

    A zero-shot (CLIP) teacher takes the student's ``label_names`` as its classes (``prompt_templates`` in
    ``backbone_kwargs`` say how they are phrased), so it needs no label alignment.
    """
    if isinstance(model, Teacher):
        backbone, weight = model.backbone, model.weight
    elif is_zero_shot_source(model, backbone_kwargs.get("revision")):
        backbone = create_backbone(model, label_names=label_names, **backbone_kwargs)
    else:
        backbone = create_backbone(model, **backbone_kwargs)
    perm = None
    if num_classes is not None:
        perm = check_teacher_labels(backbone, num_classes, label_names, label_mapping, align_labels_by_name)
    teacher = Teacher(backbone, student_preprocess, perm, weight)
    # The student labels it was checked (and aligned) against: the trainer keeps such a teacher as is.
    teacher.checked_label_names = list(label_names) if num_classes is not None and label_names is not None else None
    return teacher
