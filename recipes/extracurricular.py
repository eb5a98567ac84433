"""Extracurricular learning (Pouransari et al., CVPRW 2021): distil on the batch and on mixed, unlabelled samples.

    python recipes/extracurricular.py                       # demo: no-KD baseline, classic KD, extracurricular
    python recipes/extracurricular.py --seeds 0 1 2         # the same, mean +- std over seeds, gap closed vs KD
    python recipes/extracurricular.py --regression true     # rotated digits (all 1,437): NLL, point KD, Gaussian KL
    python recipes/extracurricular.py --config recipes/configs/extracurricular_cifar100.yaml --teachers A

Per seed (``--output_dir`` or ``--output_dir/seed_{s}``): ``baseline/`` (the student without KD),
``kd/`` (classic KD with the same temperature and alpha; for regression: squared error between the
student's and the teacher's means, i.e. ``extra_ratio 0`` and ``regression_match mean``) and
``extracurricular/``.  Every student starts from the same initialisation and keeps its model card;
the extracurricular one reports the gap it closes vs KD.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.data.default import DEFAULT_DATASET
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_STUDENT, demo_teachers, results_table
from hfkd.methods.extracurricular import ExtracurricularConfig
from hfkd.pipeline import build_teachers, load_data, result_row, run, write_results
from hfkd.results import REGRESSION_METRICS, RESULT_METRICS, gap_closed, markdown_table, summarize_seeds
from hfkd.training.args import DistillationArguments


@dataclass
class RecipeArguments:
    regression: bool = field(default=False, metadata={
        "help": "Run the regression demo (rotation angle of the embedded digits) instead of classification."})
    max_angle: float = field(default=45.0, metadata={"help": "Regression demo: angles are drawn in [-max, max] degrees."})
    baseline: bool = field(default=True, metadata={"help": "Train the student without KD for comparison."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})


# The embedded demo, sized for 2 shared CPU cores: the students train on the first 256 training digits
# (--max_train_samples; the cached teacher saw all of them) for 6 epochs of 32 (48 steps), where a wide
# teacher-student gap is left for KD to close; one teacher (resnet18), as in the paper's abstract.  Temperature and
# alpha are classic KD's demo values (recipes/kd.py); nothing was chosen on the validation split.
DEMO_TEACHER = "resnet18"
DEFAULTS = dict(student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, output_dir="outputs/extracurricular",
                num_train_epochs=6, max_train_samples=256, per_device_train_batch_size=32, learning_rate=2e-3,
                weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale),
                aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)
# The regression demo needs more steps: on 256 digits for 48 steps the students' training NLL was still
# far above the teacher's (5.6 vs -0.2 at step 40), so it trains on all 1,437 rotated digits (270 steps).
REGRESSION_DEFAULTS = dict(max_train_samples=0, output_dir="outputs/extracurricular_regression")


def _asks_regression(argv) -> bool:
    return "--regression" in argv and argv.index("--regression") + 1 < len(argv) and \
        argv[argv.index("--regression") + 1].lower() in ("true", "1", "yes")


def load_task_data(data_args: DataArguments, cfg: RecipeArguments, seed: int):
    """(data, task): the digits (or ``--dataset``) for classification, the rotated digits for regression."""
    if not cfg.regression:
        return load_data(data_args, seed=seed), None
    from hfkd.data.rotated_digits import load_rotated_digits
    from hfkd.demo_regression import regression_task

    if data_args.dataset != DEFAULT_DATASET:
        raise ValueError("--regression true runs the embedded rotation demo; for your own regression data use "
                         "DistillationTrainer(..., task=RegressionTask(...)) (docs/extracurricular.md)")
    data = load_rotated_digits(max_angle=cfg.max_angle)  # one fixed split and draw of angles, like the digits
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    return data, regression_task(cfg.max_angle)


def run_seed(model_args, data_args, args, method_cfg: ExtracurricularConfig, cfg: RecipeArguments, data, task,
             teacher_paths):
    """Baseline, classic KD and extracurricular learning for one seed; returns (rows, accelerator)."""
    from hfkd.pipeline import build_student

    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    num_outputs = 2 * task.num_targets if task is not None else None
    rows: List[Dict[str, Any]] = []

    def student():
        s = build_student(model_args, data, seed=args.seed) if num_outputs is None else _regression_student(
            model_args, num_outputs, args.seed)
        return s

    def sub(name: str) -> DistillationArguments:
        return dataclasses.replace(args, output_dir=os.path.join(args.output_dir, name), resume_from_checkpoint=None,
                                   push_to_hub=args.push_to_hub and name == "extracurricular")

    baseline = None
    if cfg.baseline:
        s = student()
        trainer, baseline = run(create_method("supervised"), s, [], data, sub("baseline"), data_args, task=task)
        rows.append(result_row(s.name, "student, no KD (baseline)", baseline, s.num_parameters(), keys, seed=args.seed))
        baseline = {**baseline, "params": s.num_parameters()}

    if task is None:
        kd_method = create_method("kd", temperature=method_cfg.temperature, alpha=method_cfg.alpha)
    else:  # classic KD for a regressor: match the teacher's point estimate (its mean), real samples only
        kd_method = create_method("extracurricular", config=dataclasses.replace(method_cfg, extra_ratio=0.0,
                                                                          regression_match="mean"))
    s = student()
    teachers = build_teachers(model_args, s, teacher_paths)
    trainer, kd = run(kd_method, s, teachers, data, sub("kd"), data_args, baseline_metrics=baseline, task=task)
    for i, t in enumerate(teachers):
        rows.insert(i, result_row(t.name, f"teacher {i + 1}", trainer.teacher_metrics.get(f"teacher_{i}", {}),
                                  t.backbone.num_parameters(), keys, seed=args.seed))
    teacher = trainer.teacher_metrics.get("ensemble") or trainer.teacher_metrics.get("teacher_0", {})
    if "ensemble" in trainer.teacher_metrics:
        rows.insert(len(teachers), result_row("teachers' ensemble", "teacher ensemble", teacher, None, keys,
                                              seed=args.seed))
    kd_role = "student, classic KD" if task is None else "student, KD (point matching)"
    rows.append(result_row(s.name, kd_role, kd, s.num_parameters(), keys, seed=args.seed))

    s = student()
    teachers = build_teachers(model_args, s, teacher_paths)
    trainer, el = run(create_method("extracurricular", config=method_cfg), s, teachers, data, sub("extracurricular"),
                      data_args, baseline_metrics=baseline, task=task, card_extras={"kd_reference": kd})
    main = keys[0]
    rows.append(result_row(s.name, "student, extracurricular", el, s.num_parameters(), keys, seed=args.seed,
                           gap_closed=gap_closed(el.get(main), kd.get(main), teacher.get(main))))
    return rows, trainer.accelerator


def _regression_student(model_args, num_outputs: int, seed: int):
    from accelerate.utils import set_seed

    from hfkd import create_backbone

    set_seed(seed)
    return create_backbone(model_args.student, num_classes=num_outputs, pretrained=model_args.student_pretrained,
                           image_size=model_args.image_size)


def add_mean_gap(summary: List[Dict[str, Any]], key: str) -> None:
    """The gap closed by the mean extracurricular result vs the mean KD result and the mean teacher."""
    by_role = {r["role"]: r for r in summary}
    teacher = by_role.get("teacher ensemble") or by_role.get("teacher 1") or {}
    kd = by_role.get("student, classic KD") or by_role.get("student, KD (point matching)") or {}
    el = by_role.get("student, extracurricular") or {}
    if el:
        el["gap_closed"] = gap_closed(el.get(key), kd.get(key), teacher.get(key))
        el.pop("gap_closed_std", None)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = {**DEFAULTS, **(REGRESSION_DEFAULTS if _asks_regression(argv) else {})}
    model_args, data_args, args, method_cfg, cfg = parse_args(
        (ModelArguments, DataArguments, DistillationArguments, ExtracurricularConfig, RecipeArguments), argv,
        defaults=defaults)
    # One data split for every seed (the data seed is --seed); --seeds vary initialisation, order and augmentation.
    data, task = load_task_data(data_args, cfg, seed=args.seed)
    teacher_paths = list(model_args.teachers)
    if not teacher_paths:
        if data_args.dataset != DEFAULT_DATASET:
            raise ValueError(f"distilling on {data_args.dataset} needs --teachers (models trained on it); "
                             "the cached demo teachers only know the embedded digits")
        if task is None:
            teacher_paths = demo_teachers(load_data(dataclasses.replace(data_args, max_train_samples=None)),
                                          names=[DEMO_TEACHER])
        else:
            from hfkd.demo_regression import regression_demo_teachers

            full, _ = load_task_data(dataclasses.replace(data_args, max_train_samples=None), cfg, seed=args.seed)
            teacher_paths = regression_demo_teachers(full, task)
    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    seeds = list(cfg.seeds) or [args.seed]
    all_rows: List[Dict[str, Any]] = []
    accelerator = None
    for seed in seeds:
        out = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed_{seed}")
        rows, accelerator = run_seed(model_args, data_args, dataclasses.replace(args, seed=seed, output_dir=out),
                                     method_cfg, cfg, data, task, teacher_paths)
        write_results(out, results_table(rows, keys), rows, accelerator)
        all_rows += rows
    if len(seeds) > 1:
        summary = summarize_seeds(all_rows, keys)
        add_mean_gap(summary, keys[0])
        write_results(args.output_dir, markdown_table(summary, (*keys, "gap_closed"), extra=("runs",)), summary,
                      accelerator)
        return summary
    return all_rows


if __name__ == "__main__":
    main()
