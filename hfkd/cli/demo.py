"""The embedded demo's models: trained once and cached (the preset itself is :mod:`hfkd.cli.preset`).

Everything here runs offline on the embedded digits at 32x32 in minutes on two CPU cores.
Demo models (teachers, MEAL V2's starting student, the regression teacher, the compression
demo's KD student) are trained once and cached in ``$HFKD_CACHE`` (default ``~/.cache/hfkd``) in
timm's native format, in folders whose names record their training settings, then loaded like
any Hub model.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..data.loading import load_image_dataset
from ..data.rotated_digits import load_rotated_digits
from ..methods.registry import create_method
from ..tasks import RegressionTask
from ..training.args import DistillationArguments
from ..training.trainer import DistillationTrainer
from .arguments import ModelArguments
from .pipeline import build_student
from .preset import (DEFAULT_TEACHER_EPOCHS, DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_KD_EPOCHS, DEMO_LEARNING_RATE,
                     DEMO_STUDENT, DEMO_TEACHERS, REGRESSION_TEACHERS, is_demo_data)


# -- the demo models: trained once, cached ----------------------------------------------------------
def cache_dir() -> str:
    return os.environ.get("HFKD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hfkd"))


def demo_args(output_dir: str, **overrides) -> DistillationArguments:
    kwargs: Dict[str, Any] = dict(output_dir=output_dir, per_device_train_batch_size=64, learning_rate=DEMO_LEARNING_RATE,
                                  weight_decay=0.05, save_strategy="no", eval_strategy="no", logging_steps=10)
    kwargs.update(overrides)
    return DistillationArguments(**kwargs)


def demo_cache_path(folder: str, name: str, epochs: int, seed: int = 0, task: str = "") -> str:
    """Where a model the demo trains is cached: ``$HFKD_CACHE/<folder>/<name>-<task>digits32-e<epochs>-lr<lr>-seed<s>``.

    The folder names the training settings, so a cache made with other demo settings is never reused.
    """
    tag = f"{task}digits{DEMO_IMAGE_SIZE}-e{epochs}-lr{DEMO_LEARNING_RATE:g}-seed{seed}"
    return os.path.join(cache_dir(), folder, f"{name}-{tag}")


def demo_teacher_path(name: str, seed: int = 0) -> str:
    """Where the demo teacher ``name`` is cached (it may not be trained yet)."""
    return demo_cache_path("demo_teachers", name, DEMO_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed)


def regression_teacher_path(name: str, task: RegressionTask, seed: int = 0) -> str:
    """Where the regression demo's teacher ``name`` is cached (it may not be trained yet)."""
    return demo_cache_path("demo_teachers", name, REGRESSION_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed,
                           task=f"rotation{task.target_scale:g}-")


def demo_student_path(seed: int = 0) -> str:
    """Where the compression demo's KD student is cached (it may not be trained yet)."""
    return demo_cache_path("demo_students", DEMO_STUDENT, DEMO_KD_EPOCHS, seed, task="kd-")


def regression_task(max_angle: float) -> RegressionTask:
    """One target, the angle in degrees, predicted in units of ``max_angle``."""
    return RegressionTask(num_targets=1, target_scale=max_angle)


def train_demo_model(model: str, data, output_dir: str, num_epochs: int, seed: int = 42, task=None,
                     method: str = "supervised", teachers: Sequence[str] = (), **arg_overrides) -> DistillationTrainer:
    """Train ``model`` from scratch at 32 px with the demo's settings: cross-entropy (or ``task``'s loss, e.g. a
    regression task's Gaussian NLL), or ``method`` from ``teachers``; returns the evaluated trainer."""
    # The seed fixes the initialisation too, so that a cached model does not depend on what ran before.
    student = build_student(ModelArguments(student=model, student_pretrained=False, image_size=DEMO_IMAGE_SIZE), data, seed=seed, task=task)
    args = demo_args(output_dir, num_train_epochs=num_epochs, seed=seed, **arg_overrides)
    trainer = DistillationTrainer(student, teachers=list(teachers), method=create_method(method), args=args,
                                  train_dataset=data.train, eval_dataset=data.eval, augment=DEMO_AUGMENT, task=task,
                                  image_column=data.image_column, label_column=data.label_column)
    trainer.train()
    trainer.evaluate()  # so that a cached model's card and hfkd.json carry its metrics
    return trainer


def cached(path: str, train: Callable[[str], DistillationTrainer]) -> str:
    """``path``, trained (``train(scratch_folder)``) and saved there the first time it is asked for."""
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        train(path + ".run").save_model(path)
    return path


def _demo_models(paths: Mapping[str, str], epochs: Mapping[str, int], load: Callable, seed: int, train: bool,
                 task: Optional[RegressionTask] = None) -> List[str]:
    """``paths`` (name -> folder), each model trained from scratch for its ``epochs`` on ``load()`` where missing.

    The data is loaded once, and only when a model has to be trained; ``train=False`` trains nothing.
    """
    if train:
        data = functools.lru_cache(maxsize=1)(load)
        for name, path in paths.items():
            cached(path, lambda out, name=name: train_demo_model(
                name, data(), out, epochs.get(name, DEFAULT_TEACHER_EPOCHS), seed=seed, task=task))
    return list(paths.values())


def demo_teachers(names: Optional[Sequence[str]] = None, seed: int = 0, train: bool = True) -> List[str]:
    """Folders of the demo teachers, trained on all the training digits (and cached) where missing.

    Always with the demo's settings, which the folder names: other settings would need another folder.
    ``train=False`` gives the folders without training anything (a dry run).
    """
    paths = {name: demo_teacher_path(name, seed) for name in names or DEMO_TEACHERS}
    return _demo_models(paths, DEMO_TEACHERS, load_image_dataset, seed, train)


def regression_demo_teachers(task: RegressionTask, names: Optional[Sequence[str]] = None, seed: int = 0,
                             train: bool = True) -> List[str]:
    """Folders of the Gaussian-head demo teachers, trained on all the rotated digits (and cached) where missing."""
    paths = {name: regression_teacher_path(name, task, seed) for name in names or REGRESSION_TEACHERS}
    return _demo_models(paths, REGRESSION_TEACHERS, lambda: load_rotated_digits(max_angle=task.target_scale), seed,
                        train, task)


def demo_student(seed: int = 0) -> str:
    """The compression demo's student: ``recipes/kd.py``'s demo (KD from the demo teachers), trained once and cached."""
    return cached(demo_student_path(seed), lambda out: train_demo_model(
        DEMO_STUDENT, load_image_dataset(), out, DEMO_KD_EPOCHS, seed=seed, method="kd", teachers=demo_teachers()))


def resolve_teachers(teachers: Sequence[str], dataset: str, *, what: str, needed: bool = True,
                     names: Optional[Sequence[str]] = None, task: Optional[RegressionTask] = None,
                     train: bool = True, hint: str = "") -> List[str]:
    """The teachers a command loads: the given ones; none when it needs none; else the demo's, on the embedded digits.

    Anywhere else a run without teachers is refused (the demo teachers only know the digits).  ``names`` picks
    demo teachers, ``task`` the regression demo's; ``train=False`` names the demo's folders without training them.
    """
    teachers = list(teachers)
    if teachers or not needed:
        return teachers
    if not is_demo_data(dataset):
        raise ValueError(f"no --teachers given: {what} on {dataset} needs teachers trained on it (pass --teachers "
                         f"PATH ...); the cached demo teachers only know the embedded demo data{hint}")
    if task is not None:
        return regression_demo_teachers(task, names, train=train)
    return demo_teachers(names, train=train)
