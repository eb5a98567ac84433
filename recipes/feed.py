"""FEED (Park & Kwak, 2019): parallel FEED from several teachers, and sequential (Born-Again style) FEED.

    python recipes/feed.py                     # demo: baseline vs pFEED (2 teachers) vs 2 sFEED generations
    python recipes/feed.py --seeds 0 1 2       # the same, mean +- std over 3 seeds
    python recipes/feed.py --demo_networks cifar --beta 500 --generations 0 --seeds 0 1 2   # 8x8 maps (docs/feed.md)
    python recipes/feed.py --config recipes/configs/feed_resnet56_cifar100.yaml
    accelerate launch recipes/feed.py --student resnet18 --teachers org/resnet50-ft org/convnext-ft --generations 0

What runs, per seed (output folders under ``--output_dir``, or ``--output_dir/seed_{s}`` with several seeds):

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
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.data.default import DEFAULT_DATASET
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_STUDENT, demo_teachers, results_table
from hfkd.pipeline import build_student, build_teachers, load_data, result_row, run, write_results
from hfkd.results import RESULT_METRICS, format_metric, metric_titles
from hfkd.training.args import DistillationArguments


@dataclass
class FEEDArguments:
    beta: float = field(default=500.0, metadata={
        "help": "Weight of the feature term (Factor Transfer's 500; the demo defaults to 50)."})
    stage: str = field(default="last", metadata={"help": "Student feature stage: 'last' or a stage index."})
    teacher_stage: Optional[str] = field(default=None, metadata={"help": "Teachers' stage (default: --stage)."})
    kernel_size: int = field(default=3, metadata={"help": "Convolution size of the per-teacher transforms."})
    parallel: bool = field(default=True, metadata={"help": "Run parallel FEED from --teachers."})
    generations: int = field(default=2, metadata={"help": "Sequential FEED generations (0: none)."})
    sequential_teacher: Optional[str] = field(
        default=None, metadata={"help": "Generation 1's teacher (student architecture); default: the baseline."})
    baseline: bool = field(default=True, metadata={"help": "Train the student without KD for comparison."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})
    demo_networks: str = field(default="default", metadata={
        "help": "default (the shared demo networks, 1x1 maps at 32 px) or cifar (CIFAR ResNets, 8x8 maps)."})


# `--demo_networks cifar`: stride-1 CIFAR ResNets (docs/cifar.md), so FEED transfers 64 x 8 x 8 maps: a ResNet-8
# student (0.08M parameters) and two ResNet-20 teachers (0.27M, zero-padding and projection shortcuts), trained on
# the digits and cached like the demo teachers.
CIFAR_DEMO_STUDENT = "cifar_resnet8"
CIFAR_DEMO_TEACHERS = ("cifar_resnet20", "cifar_resnet20_ft")


# The embedded demo.  Its maps are 1x1 (32 px images), where Factor Transfer's beta = 500 swamps the CE
# term.  A sweep on seed 42 (8 epochs, baseline 90.83 %) gave beta 10: 92.22, 50: 95.00, 200: 94.72 %, so
# the demo uses 50; the seeds we report are others (docs/feed.md).  The CIFAR-100 config keeps 500.
DEFAULTS = dict(student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, output_dir="outputs/feed", num_train_epochs=8,
                beta=50.0,
                learning_rate=2e-3, weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale),
                aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)


def feed_method(cfg: FEEDArguments):
    return create_method("feed", beta=cfg.beta, stage=cfg.stage, teacher_stage=cfg.teacher_stage,
                         kernel_size=cfg.kernel_size)


def run_seed(model_args: ModelArguments, data_args: DataArguments, args: DistillationArguments, cfg: FEEDArguments,
             data, teacher_paths: List[str]):
    """Baseline, parallel FEED and the sequential generations for one seed; returns (rows, accelerator)."""
    rows: List[Dict[str, Any]] = []
    accelerator = None

    def sub(name: str) -> DistillationArguments:
        return dataclasses.replace(args, output_dir=os.path.join(args.output_dir, name), resume_from_checkpoint=None,
                                   push_to_hub=args.push_to_hub and name == "parallel")

    baseline_path = None
    if cfg.baseline:
        student = build_student(model_args, data, seed=args.seed)
        trainer, metrics = run(create_method("supervised"), student, [], data, sub("baseline"), data_args)
        accelerator = trainer.accelerator
        baseline_path = os.path.join(args.output_dir, "baseline", "student")
        rows.append(result_row(student.name, "student, no KD (baseline)", metrics, student.num_parameters(),
                               seed=args.seed))

    if cfg.parallel:
        student = build_student(model_args, data, seed=args.seed)
        teachers = build_teachers(model_args, student, teacher_paths)
        trainer, metrics = run(feed_method(cfg), student, teachers, data, sub("parallel"), data_args)
        accelerator = trainer.accelerator
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
        student = build_student(model_args, data, seed=args.seed)
        teachers = build_teachers(model_args, student, [previous])
        trainer, metrics = run(feed_method(cfg), student, teachers, data, sub(f"generation_{g}"), data_args)
        accelerator = trainer.accelerator
        rows.append(result_row(student.name, f"student, sequential FEED gen {g}", metrics,
                               student.num_parameters(), seed=args.seed))
        previous = os.path.join(args.output_dir, f"generation_{g}", "student")
    return rows, accelerator


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (model, role): the mean and sample standard deviation over seeds."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["role"]), []).append(r)
    out = []
    for (model, role), rs in groups.items():
        row: Dict[str, Any] = {"model": model, "role": role, "params": rs[0]["params"], "runs": len(rs),
                               "seeds": sorted({r["seed"] for r in rs})}
        for key in RESULT_METRICS:
            values = [r[key] for r in rs if r.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def summary_table(rows: List[Dict[str, Any]]) -> str:
    titles = ["model", "role", *metric_titles(), "runs"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [format_metric(key, r[key], r[key + "_std"]) for key in RESULT_METRICS]
        lines.append(f"| {r['model']} | {r['role']} | {' | '.join(cells)} | {r['runs']} |")
    return "\n".join(lines)


def main(argv=None):
    model_args, data_args, args, cfg = parse_args((ModelArguments, DataArguments, DistillationArguments, FEEDArguments),
                                                  argv, defaults=DEFAULTS)
    if cfg.generations < 0:
        raise ValueError(f"--generations must be >= 0, got {cfg.generations}")
    if cfg.demo_networks not in ("default", "cifar"):
        raise ValueError(f"--demo_networks must be 'default' or 'cifar', got {cfg.demo_networks!r}")
    if cfg.demo_networks == "cifar" and model_args.student == DEMO_STUDENT:
        model_args = dataclasses.replace(model_args, student=CIFAR_DEMO_STUDENT)
    # One data split for every seed: the seeds vary initialisation, shuffling and augmentation only.
    data = load_data(data_args, seed=args.seed)
    teacher_paths = list(model_args.teachers)
    if cfg.parallel and not teacher_paths:
        if data_args.dataset != DEFAULT_DATASET:
            raise ValueError(f"parallel FEED on {data_args.dataset} needs --teachers (models trained on it); "
                             "the cached demo teachers only know the embedded digits. Or pass --parallel false")
        teacher_paths = demo_teachers(data, names=CIFAR_DEMO_TEACHERS if cfg.demo_networks == "cifar" else None)
    seeds = list(cfg.seeds) or [args.seed]
    all_rows: List[Dict[str, Any]] = []
    accelerator = None
    for seed in seeds:
        out = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed_{seed}")
        rows, accelerator = run_seed(model_args, data_args, dataclasses.replace(args, seed=seed, output_dir=out),
                                     cfg, data, teacher_paths)
        write_results(out, results_table(rows), rows, accelerator)
        all_rows += rows
    if len(seeds) > 1:
        summary = summarize(all_rows)
        write_results(args.output_dir, summary_table(summary), summary, accelerator)
        return summary
    return all_rows


if __name__ == "__main__":
    main()
