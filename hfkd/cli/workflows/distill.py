"""The shared workflow of the distillation methods (teachers, baseline, distilled student, table), and ``hfkd train``."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from ...results import RESULT_METRICS, UNLABELLED_METRICS, results_table
from ...training.callbacks import metrics_text
from ..demo import DEMO_STUDENT, demo_teachers
from ..pipeline import build_student, run, run_with_baseline, write_results
from .base import RunSettings, method_teachers, run_data


def distill(settings: RunSettings) -> List[Dict[str, Any]]:
    """Baseline and distilled student (see the module docstring); returns the results rows."""
    args, model_args = settings.training, settings.model
    data = run_data(settings)
    teachers = method_teachers(settings)
    method = settings.create_method()
    if (method.starts_from_trained_student and not settings.model.teachers and model_args.student == DEMO_STUDENT
            and not model_args.student_pretrained):
        # The demo downloads nothing: its stand-in for pretrained weights is the demo student trained
        # with cross-entropy on the digits, cached like the demo teachers.
        (initialisation,) = demo_teachers(names=[DEMO_STUDENT], seed=0)
        model_args = dataclasses.replace(model_args, student=initialisation, student_pretrained=True)
    rows = run_with_baseline(method, model_args, settings.data, args, data, teachers,
                             baseline=getattr(settings.run, "baseline", False))
    # An eval split without labels measures the student against its teachers, not accuracy.
    keys = RESULT_METRICS if data.eval is None or data.labelled("eval") else UNLABELLED_METRICS
    write_results(args.output_dir, results_table(rows, keys), rows)
    return rows


def train(settings: RunSettings) -> Dict[str, float]:
    """Supervised training of ``--student`` (teachers, baselines); returns the eval metrics."""
    args = settings.training
    data = run_data(settings)
    student = build_student(settings.model, data, seed=args.seed)
    _, metrics = run(settings.create_method(), student, [], data, args, settings.data, license=settings.model.license)
    print("eval:", metrics_text({k: v for k, v in metrics.items() if k.startswith("eval_")}))
    return metrics
