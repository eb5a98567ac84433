"""FEED's workflow: parallel FEED from several teachers and sequential (Born-Again style) generations.

What runs, per seed (folders under ``--output_dir``, or ``--output_dir/seed_{s}`` with several seeds):

* ``baseline/``: the student trained with cross-entropy only (``--baseline``, or when it is generation 1's
  teacher: sequential generations without ``--sequential_teacher``);
* ``parallel/``: parallel FEED from ``--teachers`` (the cached demo teachers by default; ``--parallel false`` skips it);
* ``generation_{g}/`` for g = 1..``--generations``: sequential FEED.  Generation 1 distils from a
  trained model of the student's architecture (``--sequential_teacher``, by default the baseline
  trained above, as in Born-Again networks); generation g + 1 distils from generation g's student.
  Every student is trained from scratch and kept in ``.../student``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ...methods.registry import create_method
from ...results import RESULT_METRICS
from ...training.args import DistillationArguments
from ..demo import resolve_teachers
from ..pipeline import build_student, build_teachers, result_row, run, run_seeds, subfolder_args, teacher_rows
from .base import RunSettings, run_data


def teachers(settings: RunSettings, train: bool = True) -> List[str]:
    """Parallel FEED's teachers: the given ones, or the demo teachers on the embedded digits."""
    return resolve_teachers(settings.model.teachers, settings.data.dataset, what=settings.method,
                            needed=settings.run.parallel, train=train,
                            hint=". Or pass --parallel false: sequential FEED needs none")


def labels_needed(settings: RunSettings) -> Optional[str]:
    """Sequential FEED's generation 1 learns from the baseline, which trains on the labels, unless a teacher is given."""
    cfg = settings.run
    if cfg.generations and not cfg.sequential_teacher:
        return ("sequential FEED's first generation learns from a baseline trained with cross-entropy on the labels; "
                "give that teacher with --sequential_teacher PATH, or run parallel FEED only with --generations 0")
    return None


def run_seed(settings: RunSettings, args: DistillationArguments, data, teacher_paths: List[str]) -> List[Dict[str, Any]]:
    """Baseline, parallel FEED and the sequential generations for one seed; returns the rows."""
    model_args, data_args, cfg = settings.model, settings.data, settings.run
    rows: List[Dict[str, Any]] = []

    def train(name, method, teachers):
        student = build_student(model_args, data, seed=args.seed)
        teachers = build_teachers(model_args, student, teachers)
        trainer, metrics = run(method, student, teachers, data, subfolder_args(args, name, push=name == "parallel"),
                               data_args, license=model_args.license)
        return student, trainer, metrics

    baseline_path = None
    # Without --sequential_teacher the baseline is generation 1's teacher, so the generations need it.
    if cfg.baseline or (cfg.generations and not cfg.sequential_teacher):
        student, _, metrics = train("baseline", create_method("supervised"), [])
        baseline_path = os.path.join(args.output_dir, "baseline", "student")
        rows.append(result_row(student.name, "student, no KD (baseline)", metrics, student.num_parameters(),
                               seed=args.seed))
    if cfg.parallel:
        student, trainer, metrics = train("parallel", settings.create_method(), teacher_paths)
        rows = teacher_rows(trainer, ensemble=None, seed=args.seed) + rows
        rows.append(result_row(student.name, f"student, parallel FEED ({len(trainer.teachers)} teachers)", metrics,
                               student.num_parameters(), seed=args.seed))
    previous = cfg.sequential_teacher or baseline_path
    for g in range(1, cfg.generations + 1):
        if previous is None:
            raise ValueError("sequential FEED needs generation 1's teacher: pass --sequential_teacher PATH (a trained "
                             "model of the student's architecture), or leave it out and the baseline is trained for it")
        student, _, metrics = train(f"generation_{g}", settings.create_method(), [previous])
        rows.append(result_row(student.name, f"student, sequential FEED gen {g}", metrics,
                               student.num_parameters(), seed=args.seed))
        previous = os.path.join(args.output_dir, f"generation_{g}", "student")
    return rows


def run_feed(settings: RunSettings) -> List[Dict[str, Any]]:
    args = settings.training
    # One data split for every seed: the seeds vary initialisation, shuffling and augmentation only.
    data = run_data(settings)
    teacher_paths = teachers(settings)
    return run_seeds(args, settings.run.seeds, lambda seed_args: run_seed(settings, seed_args, data, teacher_paths),
                     RESULT_METRICS)
