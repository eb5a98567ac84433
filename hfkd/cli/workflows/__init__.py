"""What ``hfkd distill --method NAME`` (and ``recipes/NAME.py``) runs once the settings are parsed.

Most methods share :func:`distill`: the teachers (the cached demo teachers on the embedded
digits when none are given), a no-KD baseline, the distilled student, a results table.
A method whose recipe does more registers its own workflow with extra run options
(``bake``: the baseline protocol; ``feed``: sequential generations and seeds; ``extracurricular``:
classic KD as a reference, seeds, the regression demo, the gap closed vs KD), and, where it loads
other teachers than the method's own needs say, how it resolves them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type

from ...methods.registry import normalize_name
from ..arguments import RUN_ARGUMENTS, DistillRunArguments, RunArguments, run_arguments
from . import bake, extracurricular, feed
from .base import RunSettings, default_data, method_teachers, no_labels_needed, no_task
from .distill import distill, train


@dataclass(frozen=True)
class Workflow:
    run: Callable[[RunSettings], Any]
    arguments: Type[RunArguments] = DistillRunArguments
    #: ``teachers(settings, train) -> paths``: the teachers it loads (the dry run lists them untrained)
    teachers: Callable[[RunSettings, bool], List[str]] = method_teachers
    #: ``load(settings) -> data``: what it trains on
    load: Callable[[RunSettings], Any] = default_data
    #: ``task(settings)``: the student's task (``None``: classification)
    task: Callable[[RunSettings], Any] = no_task
    #: ``labels_needed(settings)``: why the workflow itself trains on labels whatever the method (a baseline it
    #: needs), with the fix; ``None`` when it does not.  Data without labels is then refused before anything trains.
    labels_needed: Callable[[RunSettings], Optional[str]] = no_labels_needed


# Each workflow's run options are named in cli/arguments.py (RUN_ARGUMENTS), which the parser reads without
# importing the workflows.
_WORKFLOWS: Dict[str, Workflow] = {
    "supervised": Workflow(train, run_arguments("supervised")),
    "bake": Workflow(bake.run_bake, run_arguments("bake")),
    "feed": Workflow(feed.run_feed, run_arguments("feed"), feed.teachers, labels_needed=feed.labels_needed),
    "extracurricular": Workflow(extracurricular.run_extracurricular, run_arguments("extracurricular"),
                                extracurricular.teachers, extracurricular.load, extracurricular.task),
}


def register_workflow(method_name: str, run: Callable[[RunSettings], Any],
                      arguments: Type[RunArguments] = DistillRunArguments,
                      teachers: Callable[[RunSettings, bool], List[str]] = method_teachers) -> None:
    _WORKFLOWS[normalize_name(method_name)] = Workflow(run, arguments, teachers)
    RUN_ARGUMENTS[normalize_name(method_name)] = arguments


def get_workflow(method_name: str) -> Workflow:
    return _WORKFLOWS.get(normalize_name(method_name), Workflow(distill))


__all__ = ["RunSettings", "Workflow", "get_workflow", "register_workflow", "method_teachers", "distill", "train"]
