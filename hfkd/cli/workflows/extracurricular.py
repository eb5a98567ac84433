"""Extracurricular learning's workflow: no-KD baseline, classic KD and extracurricular learning, per seed.

Per seed (``--output_dir`` or ``--output_dir/seed_{s}``): ``baseline/`` (the student without KD),
``kd/`` (classic KD with the same temperature and alpha; for regression: squared error between the
student's and the teacher's means, i.e. ``extra_ratio 0`` and ``regression_match mean``) and
``extracurricular/``.  Every student starts from the same initialisation and keeps its model card;
the extracurricular one reports the gap it closes vs KD.  With several ``--seeds`` the summary
(mean ± std, gap closed from the means) goes to ``--output_dir/results.md``.

``--regression true`` runs the embedded regression demo instead: the rotation angle of the digits
(``hfkd.data.rotated_digits``), a Gaussian head, Gaussian NLL / point-matching KD / Gaussian KL.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from ...data.rotated_digits import load_rotated_digits
from ...methods.registry import create_method
from ...results import REGRESSION_METRICS, RESULT_METRICS, gap_closed
from ...tasks import RegressionTask
from ...training.args import DistillationArguments
from ..arguments import DataArguments, ExtracurricularRunArguments
from ..demo import regression_task, resolve_teachers
from ..preset import EXTRACURRICULAR_TEACHER, is_demo_data
from ..pipeline import build_student, build_teachers, load_data, result_row, run, run_seeds, subfolder_args, teacher_rows
from .base import RunSettings, run_data


def task_of(cfg: ExtracurricularRunArguments) -> Optional[RegressionTask]:
    """The regression demo's task with ``--regression true``; ``None`` (classification) otherwise."""
    return regression_task(cfg.max_angle) if cfg.regression else None


def load_task_data(data_args: DataArguments, cfg: ExtracurricularRunArguments, seed: int):
    """The digits (or ``--dataset``) for classification, the rotated digits for regression."""
    if not cfg.regression:
        return load_data(data_args, seed=seed)
    if not is_demo_data(data_args.dataset):
        raise ValueError("--regression true runs the embedded rotation demo; for your own regression data use "
                         "DistillationTrainer(..., task=RegressionTask(...)) (docs/extracurricular.md)")
    data = load_rotated_digits(max_angle=cfg.max_angle)  # one fixed split and draw of angles, like the digits
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    return data


def task(settings: RunSettings) -> Optional[RegressionTask]:
    return task_of(settings.run)


def load(settings: RunSettings):
    """The run's data: the digits or ``--dataset``, or the rotated digits for the regression demo."""
    return load_task_data(settings.data, settings.run, seed=settings.training.seed)


def teachers(settings: RunSettings, train: bool = True) -> List[str]:
    """The given teachers, or the demo's one teacher (the regression demo's with ``--regression true``)."""
    task = task_of(settings.run)
    return resolve_teachers(settings.model.teachers, settings.data.dataset, what=settings.method,
                            names=None if task is not None else [EXTRACURRICULAR_TEACHER], task=task, train=train)


def run_seed(settings: RunSettings, args: DistillationArguments, data, task, teacher_paths) -> List[Dict[str, Any]]:
    """Baseline, classic KD and extracurricular learning for one seed; returns the rows."""
    model_args, data_args, cfg, method_cfg = settings.model, settings.data, settings.run, settings.method_config
    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    rows: List[Dict[str, Any]] = []
    license = model_args.license
    baseline = None
    if cfg.baseline:
        s = build_student(model_args, data, seed=args.seed, task=task)
        trainer, baseline = run(create_method("supervised"), s, [], data, subfolder_args(args, "baseline"), data_args,
                                license=license, task=task)
        rows.append(result_row(s.name, "student, no KD (baseline)", baseline, s.num_parameters(), keys, seed=args.seed))
        baseline = {**baseline, "params": s.num_parameters()}

    if task is None:
        kd_method = create_method("kd", temperature=method_cfg.temperature, alpha=method_cfg.alpha)
    else:  # classic KD for a regressor: match the teacher's point estimate (its mean), real samples only
        kd_method = create_method("extracurricular", config=dataclasses.replace(method_cfg, extra_ratio=0.0,
                                                                              regression_match="mean"))
    s = build_student(model_args, data, seed=args.seed, task=task)
    teachers = build_teachers(model_args, s, teacher_paths)
    trainer, kd = run(kd_method, s, teachers, data, subfolder_args(args, "kd"), data_args, baseline_metrics=baseline,
                      license=license, task=task)
    rows = teacher_rows(trainer, keys, ensemble="teachers' ensemble", seed=args.seed) + rows
    teacher = trainer.teacher_metrics.get("ensemble") or trainer.teacher_metrics.get("teacher_0", {})
    kd_role = "student, classic KD" if task is None else "student, KD (point matching)"
    rows.append(result_row(s.name, kd_role, kd, s.num_parameters(), keys, seed=args.seed))

    s = build_student(model_args, data, seed=args.seed, task=task)
    teachers = build_teachers(model_args, s, teacher_paths)
    trainer, el = run(settings.create_method(), s, teachers, data, subfolder_args(args, "extracurricular", push=True),
                      data_args, baseline_metrics=baseline, license=license, task=task, card_extras={"kd_reference": kd})
    main = keys[0]
    rows.append(result_row(s.name, "student, extracurricular", el, s.num_parameters(), keys, seed=args.seed,
                           gap_closed=gap_closed(el.get(main), kd.get(main), teacher.get(main))))
    return rows


def add_mean_gap(summary: List[Dict[str, Any]], key: str) -> None:
    """The gap closed by the mean extracurricular result vs the mean KD result and the mean teacher."""
    by_role = {r["role"]: r for r in summary}
    teacher = by_role.get("teacher ensemble") or by_role.get("teacher 1") or {}
    kd = by_role.get("student, classic KD") or by_role.get("student, KD (point matching)") or {}
    el = by_role.get("student, extracurricular") or {}
    if el:
        el["gap_closed"] = gap_closed(el.get(key), kd.get(key), teacher.get(key))
        el.pop("gap_closed_std", None)


def run_extracurricular(settings: RunSettings) -> List[Dict[str, Any]]:
    args, cfg = settings.training, settings.run
    task = task_of(cfg)
    # One data split for every seed (the data seed is --seed); --seeds vary initialisation, order and augmentation.
    data = run_data(settings, load)
    teacher_paths = teachers(settings)
    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    return run_seeds(args, cfg.seeds, lambda seed_args: run_seed(settings, seed_args, data, task, teacher_paths),
                     keys, summary_keys=(*keys, "gap_closed"), summarize=lambda summary: add_mean_gap(summary, keys[0]))
