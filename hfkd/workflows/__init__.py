"""What ``hfkd distill --method NAME`` (and ``recipes/NAME.py``) runs once the settings are parsed.

Most methods share :func:`distill`: the teachers (the cached demo teachers on the embedded
digits when none are given), a no-KD baseline, the distilled student, a results table.
A method whose recipe does more registers its own workflow with extra run options
(``bake``: the baseline protocol; ``feed``: sequential generations and seeds; ``extracurricular``:
classic KD as a reference, seeds, the regression demo, the gap closed vs KD).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Type

from ..arguments import DataArguments, DistillRunArguments, ModelArguments, RunArguments
from ..methods.base import DistillationMethod, MethodConfig
from ..methods.registry import create_method, get_method_class, normalize_name
from ..training.args import DistillationArguments


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


@dataclass(frozen=True)
class Workflow:
    run: Callable[[RunSettings], List[Dict[str, Any]]]
    arguments: Type[RunArguments] = DistillRunArguments


_WORKFLOWS: Dict[str, Workflow] = {}


def register_workflow(method_name: str, run: Callable[[RunSettings], Any],
                      arguments: Type[RunArguments] = DistillRunArguments) -> None:
    _WORKFLOWS[normalize_name(method_name)] = Workflow(run, arguments)


def get_workflow(method_name: str) -> Workflow:
    return _WORKFLOWS.get(normalize_name(method_name), Workflow(distill))


def teacher_paths(settings: RunSettings, data) -> List[str]:
    """The teachers to load: the given ones, or the cached demo teachers for the demo dataset.

    None with ``--teacher_cache``: the cache's stored outputs stand in for the teachers.
    """
    from ..data.default import DEFAULT_DATASET
    from ..demo import demo_teachers

    cls = get_method_class(settings.method)
    teachers = list(settings.model.teachers)
    if teachers and cls.max_teachers == 0:
        raise ValueError(f"{settings.method} is self-distillation and takes no --teachers; use --method kd or "
                         "meal_v2 to distil teachers")
    if teachers or cls.min_teachers == 0 or settings.training.teacher_cache:
        # From a teacher cache no teacher is loaded (the trainer refuses --teachers with a cache).
        return teachers
    if settings.data.dataset != DEFAULT_DATASET:
        raise ValueError(f"{settings.method} on {settings.data.dataset} needs --teachers (models trained on it); the "
                         "cached demo teachers only know the embedded digits")
    return demo_teachers(data)


def distill(settings: RunSettings) -> List[Dict[str, Any]]:
    """Baseline and distilled student (see the module docstring); returns the results rows."""
    from ..demo import DEMO_STUDENT, demo_teachers
    from ..pipeline import load_data, run_with_baseline, write_results
    from ..results import results_table

    args, model_args = settings.training, settings.model
    data = load_data(settings.data, seed=args.seed)
    teachers = teacher_paths(settings, data)
    method = settings.create_method()
    if (method.starts_from_trained_student and not settings.model.teachers and model_args.student == DEMO_STUDENT
            and not model_args.student_pretrained):
        # The demo downloads nothing: its stand-in for pretrained weights is the demo student trained
        # with cross-entropy on the digits, cached like the demo teachers.
        (initialisation,) = demo_teachers(data, names=[DEMO_STUDENT], seed=0)
        model_args = dataclasses.replace(model_args, student=initialisation, student_pretrained=True)
    rows = run_with_baseline(method, model_args, settings.data, args, teachers,
                             baseline=getattr(settings.run, "baseline", False), data=data)
    write_results(args.output_dir, results_table(rows), rows)
    return rows


def train(settings: RunSettings) -> Dict[str, float]:
    """Supervised training of ``--student`` (teachers, baselines); returns the eval metrics."""
    from ..pipeline import build_student, load_data, run

    args = settings.training
    data = load_data(settings.data, seed=args.seed)
    student = build_student(settings.model, data, seed=args.seed)
    _, metrics = run(settings.create_method(), student, [], data, args, settings.data, license=settings.model.license)
    print({k: v for k, v in metrics.items() if k.startswith("eval_")})
    return metrics


register_workflow("supervised", train, RunArguments)
from . import bake, extracurricular, feed  # noqa: E402,F401  (registration)
