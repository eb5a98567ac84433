"""What every workflow shares: the parsed settings, and the teachers a method loads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from ...methods.base import DistillationMethod, MethodConfig
from ...methods.registry import create_method, get_method_class
from ...training.args import DistillationArguments
from ..arguments import DataArguments, ModelArguments, RunArguments
from ..demo import resolve_teachers


@dataclass
class RunSettings:
    """Everything one command parsed: one object per ``--help`` group."""

    method: str
    model: ModelArguments
    data: DataArguments
    training: DistillationArguments
    method_config: MethodConfig
    run: RunArguments

    def create_method(self) -> DistillationMethod:
        return create_method(self.method, self.method_config)

    def groups(self):
        return (self.model, self.data, self.training, self.method_config, self.run)


def method_teachers(settings: RunSettings, train: bool = True) -> List[str]:
    """The teachers a method loads: the given ones, or the demo's on the embedded digits when it needs some.

    None with ``--teacher_cache``: the cache's stored outputs stand in for the teachers.  ``train=False``
    names the demo teachers' folders without training them (a dry run).
    """
    cls = get_method_class(settings.method)
    if settings.model.teachers and cls.max_teachers == 0:
        raise ValueError(f"{settings.method} is self-distillation and takes no --teachers; use --method kd or "
                         "meal_v2 to distil teachers")
    # From a teacher cache no teacher is loaded (the trainer refuses --teachers with a cache).
    needed = cls.min_teachers > 0 and not settings.training.teacher_cache
    return resolve_teachers(settings.model.teachers, settings.data.dataset, what=settings.method, needed=needed,
                            train=train)
