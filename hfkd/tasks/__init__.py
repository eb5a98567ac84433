"""What the student predicts: a task tells the trainer how to read targets, supervise and evaluate.

Classification (the default): integer labels, cross-entropy, top-1/top-5, NLL and calibration.
Regression (:class:`RegressionTask`) reads float targets and a Gaussian head (a mean and a
log-variance per target), trains with the Gaussian NLL and reports MAE / RMSE.  Methods see the task
in ``MethodContext.task``; a method lists the tasks it supports in ``supported_tasks``.
"""
from __future__ import annotations

from typing import Optional, Union

from .base import ClassificationTask, Task
from .evaluation import evaluate_logits
from .regression import RegressionTask

_TASKS = {"classification": ClassificationTask, "regression": RegressionTask}


def create_task(task: Union[None, str, Task] = None, **kwargs) -> Task:
    """A :class:`Task` from a name (``"classification"``, ``"regression"``) or an instance; ``None`` = classification."""
    if task is None:
        task = "classification"
    if isinstance(task, Task):
        if kwargs:
            raise ValueError(f"create_task: options {sorted(kwargs)} given with an already built {type(task).__name__}")
        return task
    if not isinstance(task, str) or task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; available tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[task](**kwargs)


__all__ = ["Task", "ClassificationTask", "RegressionTask", "create_task", "evaluate_logits"]
