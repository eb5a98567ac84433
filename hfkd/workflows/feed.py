"""FEED's workflow: parallel FEED from several teachers and sequential (Born-Again style) generations.

What runs, per seed (folders under ``--output_dir``, or ``--output_dir/seed_{s}`` with several seeds):

* ``baseline/``: the student trained with cross-entropy only (``--baseline``);
* ``parallel/``: parallel FEED from ``--teachers`` (the cached demo teachers by default; ``--parallel false`` skips it);
* ``generation_{g}/`` for g = 1..``--generations``: sequential FEED.  Generation 1 distils from a
  trained model of the student's architecture (``--sequential_teacher``, by default the baseline
  trained above, as in Born-Again networks); generation g + 1 distils from generation g's student.
  Every student is trained from scratch and kept in ``.../student``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..arguments import DistillRunArguments
from ..training.args import DistillationArguments
from . import RunSettings, register_workflow


@dataclass
class FEEDRunArguments(DistillRunArguments):
    """What the FEED recipe does around training."""

    parallel: bool = field(default=True, metadata={"help": "Run parallel FEED from --teachers."})
    generations: int = field(default=2, metadata={"help": "Sequential FEED generations (0: none)."})
    sequential_teacher: Optional[str] = field(default=None, metadata={
        "help": "Generation 1's teacher (a model of the student's architecture); default: the baseline."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})

    def __post_init__(self):
        if self.generations < 0:
            raise ValueError(f"generations must be >= 0, got {self.generations}")


def run_seed(settings: RunSettings, args: DistillationArguments, data, teacher_paths: List[str]):
    """Baseline, parallel FEED and the sequential generations for one seed; returns (rows, accelerator)."""
    from ..methods.registry import create_method
    from ..pipeline import build_student, build_teachers, result_row, run

    model_args, data_args, cfg = settings.model, settings.data, settings.run
    rows: List[Dict[str, Any]] = []
    accelerator = None

    def sub(name: str) -> DistillationArguments:
        return dataclasses.replace(args, output_dir=os.path.join(args.output_dir, name), resume_from_checkpoint=None,
                                   push_to_hub=args.push_to_hub and name == "parallel")

    def train(name, method, teachers):
        nonlocal accelerator
        student = build_student(model_args, data, seed=args.seed)
        teachers = build_teachers(model_args, student, teachers)
        trainer, metrics = run(method, student, teachers, data, sub(name), data_args, license=model_args.license)
        accelerator = trainer.accelerator
        return student, teachers, trainer, metrics

    baseline_path = None
    if cfg.baseline:
        student, _, _, metrics = train("baseline", create_method("supervised"), [])
        baseline_path = os.path.join(args.output_dir, "baseline", "student")
        rows.append(result_row(student.name, "student, no KD (baseline)", metrics, student.num_parameters(),
                               seed=args.seed))
    if cfg.parallel:
        student, teachers, trainer, metrics = train("parallel", settings.create_method(), teacher_paths)
        for i, t in enumerate(teachers):
            m = trainer.teacher_metrics.get(f"teacher_{i}", {})
            rows.insert(i, result_row(t.name, f"teacher {i + 1}", m, t.backbone.num_parameters(), seed=args.seed))
        rows.append(result_row(student.name, f"student, parallel FEED ({len(teachers)} teachers)", metrics,
                               student.num_parameters(), seed=args.seed))
    previous = cfg.sequential_teacher or baseline_path
    for g in range(1, cfg.generations + 1):
        if previous is None:
            raise ValueError("sequential FEED needs generation 1's teacher: keep --baseline true (it is trained "
                             "here) or pass --sequential_teacher PATH (a trained model of the student's architecture)")
        student, _, _, metrics = train(f"generation_{g}", settings.create_method(), [previous])
        rows.append(result_row(student.name, f"student, sequential FEED gen {g}", metrics,
                               student.num_parameters(), seed=args.seed))
        previous = os.path.join(args.output_dir, f"generation_{g}", "student")
    return rows, accelerator


def run_feed(settings: RunSettings) -> List[Dict[str, Any]]:
    from ..data.default import DEFAULT_DATASET
    from ..demo import demo_teachers
    from ..pipeline import load_data, write_results
    from ..results import RESULT_METRICS, markdown_table, results_table, summarize_seeds

    args, cfg = settings.training, settings.run
    # One data split for every seed: the seeds vary initialisation, shuffling and augmentation only.
    data = load_data(settings.data, seed=args.seed)
    teachers = list(settings.model.teachers)
    if cfg.parallel and not teachers:
        if settings.data.dataset != DEFAULT_DATASET:
            raise ValueError(f"parallel FEED on {settings.data.dataset} needs --teachers (models trained on it); "
                             "the cached demo teachers only know the embedded digits. Or pass --parallel false")
        teachers = demo_teachers(data)
    seeds = list(cfg.seeds) or [args.seed]
    all_rows: List[Dict[str, Any]] = []
    accelerator = None
    for seed in seeds:
        out = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed_{seed}")
        rows, accelerator = run_seed(settings, dataclasses.replace(args, seed=seed, output_dir=out), data, teachers)
        write_results(out, results_table(rows), rows, accelerator)
        all_rows += rows
    if len(seeds) > 1:
        summary = summarize_seeds(all_rows, RESULT_METRICS)
        write_results(args.output_dir, markdown_table(summary, RESULT_METRICS, extra=("runs",)), summary, accelerator)
        return summary
    return all_rows


register_workflow("feed", run_feed, FEEDRunArguments)
