"""BAKE's workflow: the no-KD baseline is trained as the paper compares (``baseline_protocol``).

* ``imagenet`` (default): baseline batch ``B / (M + 1)`` and learning rate ``lr / (M + 1)``, i.e. the
  same iterations per epoch and the same lr per image as BAKE (the paper's R-50: 256 @ 0.2 against
  BAKE 512 @ 0.4); BAKE still sees ``M + 1`` times the images per epoch;
* ``small_scale``: baseline with the same batch and lr, so BAKE makes ``M + 1`` times the iterations
  (the CIFAR runs: 1563 against 391 iterations per epoch with M = 3).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

from ...methods.configs import BAKEConfig
from ...methods.registry import create_method
from ...training.args import DistillationArguments
from ...results import results_table
from ..pipeline import run_with_baseline, subfolder_args, write_results
from .base import RunSettings, method_teachers, run_data


def baseline_training(args: DistillationArguments, protocol: str, cfg: BAKEConfig) -> DistillationArguments:
    """The baseline's training settings under ``protocol``: imagenet divides BAKE's batch and learning rate by
    M + 1 (the same iterations per epoch); small_scale keeps them."""
    group = cfg.intra_class_images + 1 if protocol == "imagenet" else 1
    return dataclasses.replace(args, learning_rate=args.learning_rate / group,
                               per_device_train_batch_size=max(1, args.per_device_train_batch_size // group))


def run_bake(settings: RunSettings) -> List[Dict[str, Any]]:
    args, run_args, cfg = settings.training, settings.run, settings.method_config
    data = run_data(settings)
    method_teachers(settings)  # refuses --teachers
    rows = run_with_baseline(settings.create_method(), settings.model, settings.data, args, data, teacher_paths=[],
                             baseline=False)
    if run_args.baseline:
        base_args = baseline_training(subfolder_args(args, "baseline"), run_args.baseline_protocol, cfg)
        base = run_with_baseline(create_method("supervised"), settings.model, settings.data, base_args, data,
                                 teacher_paths=[], baseline=False)
        rows = [{**base[-1], "role": f"student, no KD (baseline, {run_args.baseline_protocol} protocol)"}] + rows
    write_results(args.output_dir, results_table(rows), rows)
    return rows
