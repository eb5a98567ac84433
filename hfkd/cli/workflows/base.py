"""What every workflow shares: the parsed settings, and the teachers a method loads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from ...methods.base import DistillationMethod, MethodConfig
from ...methods.registry import create_method, get_method_class
from ...training.args import DistillationArguments
from ..arguments import DataArguments, ModelArguments, RunArguments
from ..demo import resolve_teachers
from ..preset import Preset
from ..pipeline import classes_from_teachers, load_data


@dataclass
class RunSettings:
    """Everything one command parsed: one object per ``--help`` group."""

    method: str
    model: ModelArguments
    data: DataArguments
    training: DistillationArguments
    method_config: MethodConfig
    run: RunArguments
    #: the demo preset as it was applied (``preset.applied``: what it set; nothing off the embedded data)
    preset: Optional[Preset] = field(default=None, compare=False, repr=False)
    #: the data, once loaded (the checks load it before anything trains; the workflow reuses it)
    loaded_data: Any = field(default=None, compare=False, repr=False)

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


def default_data(settings: RunSettings):
    """The run's data: ``--dataset`` and its splits, split with ``--seed``; data without labels or label names
    takes its classes from the first classifier teacher."""
    return classes_from_teachers(load_data(settings.data, seed=settings.training.seed), settings.model)


def run_data(settings: RunSettings, load: Callable[[RunSettings], Any] = default_data):
    """The run's data, loaded once (``load(settings)``) and kept on ``settings``."""
    if settings.loaded_data is None:
        settings.loaded_data = load(settings)
    return settings.loaded_data


def no_task(settings: RunSettings):
    """Classification: the trainer's default task."""
    return None


def no_labels_needed(settings: RunSettings) -> None:
    """The workflow trains only the method (and ``--baseline``, checked on its own): nothing else reads labels."""
    return None
