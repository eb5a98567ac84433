"""The protocol a distillation method implements.

A method is an ``nn.Module``: its own trainable parts (a discriminator,
feature connectors) are submodules, so the trainer optimises them, wraps them
in DDP with the student and checkpoints them, but never saves them with the
student.  State that is not a parameter (a prediction bank) goes through
:meth:`extra_state`.  The trainer knows no method by name.

A method's settings are one dataclass, a subclass of :class:`MethodConfig`; the built-in ones are
declared in :mod:`hfkd.methods.configs`, which imports no torch, so the command line reads them cheaply.
The constructor, :meth:`DistillationMethod.hparams`, the command line, YAML files and the model card
all read that one declaration.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from ..models.backbone import Backbone, BackboneOutput, OutputRequest
from ..settings import shorten
from ..tasks import create_task
# MethodConfig and the checks live in configs.py (torch-free); imported here for the methods written against base.
from .configs import MethodConfig, check_positive, check_probability  # noqa: F401


def build_config(config_class: Type[MethodConfig], config: Optional[MethodConfig], overrides: Dict[str, Any],
                 method_name: str = "") -> MethodConfig:
    """``config`` (or the defaults) with ``overrides`` applied; unknown names are an error listing the valid ones."""
    names = [f.name for f in dataclasses.fields(config_class) if f.init]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"method {method_name!r} does not take {unknown}; its settings ({config_class.__name__}) "
                         f"are {names}")
    if config is None:
        return config_class(**overrides)
    if not isinstance(config, config_class):
        raise TypeError(f"method {method_name!r} takes a {config_class.__name__}, not a {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


@dataclass
class MethodContext:
    """What a method may know about the run, given once before training."""

    num_classes: int
    num_train_samples: int
    num_epochs: int
    steps_per_epoch: int
    student: Backbone
    teachers: Sequence[Any] = ()
    accelerator: Any = None
    #: the run's :class:`hfkd.tasks.Task` (``None``: classification) and seed (for per-sample draws)
    task: Any = None
    seed: int = 0

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1


def gather_rows(context: Optional[MethodContext], *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Concatenate tensors over processes along dim 0, rank after rank, even if row counts differ.

    Returns ``(gathered..., offset)`` where ``offset`` is where this process's rows start.
    ``accelerator.gather`` needs equal shapes; sizes are gathered first and the rows padded
    to the largest count (``accelerator.pad_across_processes``), then the padding is cut out.
    """
    if context is None or context.num_processes == 1:
        return (*tensors, 0)
    acc = context.accelerator
    n = tensors[0].shape[0]
    sizes = acc.gather(torch.tensor([n], device=tensors[0].device)).tolist()
    offset = sum(sizes[:acc.process_index])
    out = []
    for t in tensors:
        if min(sizes) != max(sizes):
            t = acc.pad_across_processes(t, dim=0)
        g = acc.gather(t.contiguous())
        if min(sizes) != max(sizes):
            width = max(sizes)
            g = torch.cat([g[r * width:r * width + s] for r, s in enumerate(sizes)])
        out.append(g)
    return (*out, offset)


def dry_forward(student: Backbone, request: OutputRequest) -> Tuple[torch.Tensor, BackboneOutput]:
    """The student's outputs on a zero batch of its input size, and that batch: what a method sizes its own
    modules from in ``setup``.  Run in eval mode, since a forward in train mode would move BatchNorm's running
    statistics."""
    dummy = torch.zeros(2, *student.preprocess.input_size, device=next(student.parameters()).device)
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            return dummy, student(dummy, request)
    finally:
        student.train(was_training)


def without_labels_problem(method: "DistillationMethod", columns: Sequence[str]) -> Optional[str]:
    """Why ``method`` cannot train on a train split without a label column (``columns`` are its columns), with the
    fix; ``None`` when it reads no labels.  The trainer raises it, the command line's checks list it."""
    if not method.uses_labels:
        return None
    return (f"method {method.name!r} needs labels, but the train split has no label column (its columns: "
            f"{shorten(list(columns))}): {method.labels_reason()}. Either give the data labels (an image folder with "
            "one sub-folder per class, or name the column with label_column=... / --label_column), or train with a "
            "method that needs none: meal_v2, feature_kd with ce_weight 0, kd with alpha 1 (docs/any_teacher.md, "
            "\"Without labels\")")


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: Dict[str, torch.Tensor] = field(default_factory=dict)


class DistillationMethod(nn.Module):
    """Base class; subclasses set ``name`` and ``config_class`` and implement :meth:`compute_loss`.

    ``Method(config)`` or ``Method(**settings)``: keyword arguments build the config or override
    fields of the one given; the result is ``self.config``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[Type[MethodConfig]] = MethodConfig
    citation: ClassVar[str] = ""
    min_teachers: ClassVar[int] = 0
    max_teachers: ClassVar[Optional[int]] = None
    #: whether the loss reads the ground-truth labels (set per instance where a setting decides it); the trainer
    #: refuses data without a label column when it does, giving :meth:`labels_reason`
    uses_labels: bool = True
    #: whether the loss reads the teachers' logits; if not (feature distillation), a teacher needs no classes of
    #: the student's and is neither label-checked nor evaluated
    reads_teacher_logits: ClassVar[bool] = True
    #: whether the loss trains the student's classifier; if not (feature distillation without labels), the
    #: student is saved without it, as a backbone (hfkd/models/heads.py)
    trains_student_head: bool = True
    #: the method expects a trained (pretrained) student to start from; the demo then provides one
    starts_from_trained_student: ClassVar[bool] = False
    #: why the method needs to address training samples by row (a per-sample store, its own batch sampler), which a
    #: streamed split cannot give; ``None`` when each batch is enough.  A stream is refused with this reason.
    needs_random_access: ClassVar[Optional[str]] = None
    #: the tasks (``hfkd.tasks``) whose outputs the loss understands
    supported_tasks: ClassVar[Tuple[str, ...]] = ("classification",)
    student_request: OutputRequest = OutputRequest()
    teacher_request: OutputRequest = OutputRequest()

    def __init__(self, config: Optional[MethodConfig] = None, **kwargs):
        super().__init__()
        self.config = build_config(self.config_class, config, kwargs, self.name)
        self.context: Optional[MethodContext] = None
        self.epoch = 0

    def labels_reason(self) -> str:
        """Why the method, with its settings, reads labels, and the setting that would make it label-free (what the
        refusal of data without labels says; the trainer names no method)."""
        return "its loss reads the labels"

    # -- lifecycle --------------------------------------------------------------------------------
    def check_teachers(self, num_teachers: int) -> None:
        if num_teachers < self.min_teachers:
            raise ValueError(f"method {self.name!r} needs at least {self.min_teachers} teacher(s), got {num_teachers}")
        if self.max_teachers is not None and num_teachers > self.max_teachers:
            raise ValueError(
                f"method {self.name!r} takes at most {self.max_teachers} teacher(s), got {num_teachers}"
                + ("; use method 'kd' or 'meal_v2' to distil from teachers" if self.max_teachers == 0 else "")
            )

    def setup(self, context: MethodContext) -> None:
        """Called once before training; build modules that depend on the models here."""
        self.check_teachers(len(context.teachers))
        task = getattr(context.task, "name", "classification")
        if task not in self.supported_tasks:
            raise ValueError(f"method {self.name!r} supports {list(self.supported_tasks)} tasks, not {task!r}")
        self.context = context

    @property
    def task(self):
        """The run's task (classification until :meth:`setup` says otherwise)."""
        return create_task(self.context.task if self.context is not None else None)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int) -> None:
        pass

    # -- the batch and the loss ---------------------------------------------------------------------
    def prepare_batch(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Transform a training batch before the teachers and the student see it (default: unchanged).

        A method that trains on more inputs than the loader gives (extra samples made from the batch)
        returns the enlarged batch here; the trainer runs the teachers and the student on
        ``batch["pixel_values"]`` of what this returns.
        """
        return batch

    def compute_loss(self, batch: Mapping[str, torch.Tensor], student: BackboneOutput,
                     teachers: Sequence[BackboneOutput]) -> LossOutput:
        raise NotImplementedError

    def forward(self, batch, student, teachers) -> LossOutput:
        return self.compute_loss(batch, student, teachers)

    # -- optional extras --------------------------------------------------------------------------
    def param_groups(self, learning_rate: float) -> List[Dict[str, Any]]:
        """Optimiser groups for the method's own parameters (default: one group at the student's lr)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    def train_batch_sampler(self, labels: Sequence[int], batch_size: int, seed: int):
        """A batch sampler over the train set, or ``None`` for the trainer's shuffled one."""
        return None

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """Non-parameter state to checkpoint (tensors only: stored as safetensors)."""
        return {}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        pass

    def hparams(self) -> Dict[str, Any]:
        """The method's settings (``self.config`` as a dict), for logs, checkpoints and model cards."""
        return dataclasses.asdict(self.config)

    def teacher_weights(self) -> Optional[List[float]]:
        if self.context is None or not self.context.teachers:
            return None
        return [getattr(t, "weight", 1.0) for t in self.context.teachers]

