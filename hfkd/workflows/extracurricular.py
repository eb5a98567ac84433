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
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from ..arguments import DataArguments, DistillRunArguments
from ..training.args import DistillationArguments
from . import RunSettings, register_workflow


@dataclass
class ExtracurricularRunArguments(DistillRunArguments):
    """What the extracurricular recipe does around training."""

    regression: bool = field(default=False, metadata={
        "help": "Run the regression demo (rotation angle of the embedded digits) instead of classification."})
    max_angle: float = field(default=45.0, metadata={"help": "Regression demo: angles are drawn in [-max, max] degrees."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})


# One teacher (the first demo teacher, a CIFAR ResNet-20), as in the paper's abstract.
DEMO_TEACHER = "cifar_resnet20"


def asks_regression(argv: Sequence[str]) -> bool:
    """Whether the command line says ``--regression true`` (which selects the regression demo's defaults)."""
    from ..demo import flag_is_true

    return flag_is_true(argv, "regression")


def load_task_data(data_args: DataArguments, cfg: ExtracurricularRunArguments, seed: int):
    """(data, task): the digits (or ``--dataset``) for classification, the rotated digits for regression."""
    from ..data.default import DEFAULT_DATASET
    from ..pipeline import load_data

    if not cfg.regression:
        return load_data(data_args, seed=seed), None
    from ..data.rotated_digits import load_rotated_digits
    from ..demo_regression import regression_task

    if data_args.dataset != DEFAULT_DATASET:
        raise ValueError("--regression true runs the embedded rotation demo; for your own regression data use "
                         "DistillationTrainer(..., task=RegressionTask(...)) (docs/extracurricular.md)")
    data = load_rotated_digits(max_angle=cfg.max_angle)  # one fixed split and draw of angles, like the digits
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    return data, regression_task(cfg.max_angle)


def run_seed(settings: RunSettings, args: DistillationArguments, data, task, teacher_paths):
    """Baseline, classic KD and extracurricular learning for one seed; returns (rows, accelerator)."""
    from ..methods.registry import create_method
    from ..pipeline import build_student, build_teachers, result_row, run
    from ..results import REGRESSION_METRICS, RESULT_METRICS, gap_closed

    model_args, data_args, cfg, method_cfg = settings.model, settings.data, settings.run, settings.method_config
    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    num_outputs = 2 * task.num_targets if task is not None else None
    rows: List[Dict[str, Any]] = []

    def student():
        if num_outputs is None:
            return build_student(model_args, data, seed=args.seed)
        return _regression_student(model_args, num_outputs, args.seed)

    def sub(name: str) -> DistillationArguments:
        return dataclasses.replace(args, output_dir=os.path.join(args.output_dir, name), resume_from_checkpoint=None,
                                   push_to_hub=args.push_to_hub and name == "extracurricular")

    license = model_args.license
    baseline = None
    if cfg.baseline:
        s = student()
        trainer, baseline = run(create_method("supervised"), s, [], data, sub("baseline"), data_args,
                                license=license, task=task)
        rows.append(result_row(s.name, "student, no KD (baseline)", baseline, s.num_parameters(), keys, seed=args.seed))
        baseline = {**baseline, "params": s.num_parameters()}

    if task is None:
        kd_method = create_method("kd", temperature=method_cfg.temperature, alpha=method_cfg.alpha)
    else:  # classic KD for a regressor: match the teacher's point estimate (its mean), real samples only
        kd_method = create_method("extracurricular", config=dataclasses.replace(method_cfg, extra_ratio=0.0,
                                                                              regression_match="mean"))
    s = student()
    teachers = build_teachers(model_args, s, teacher_paths)
    trainer, kd = run(kd_method, s, teachers, data, sub("kd"), data_args, baseline_metrics=baseline,
                      license=license, task=task)
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
    trainer, el = run(settings.create_method(), s, teachers, data, sub("extracurricular"), data_args,
                      baseline_metrics=baseline, license=license, task=task, card_extras={"kd_reference": kd})
    main = keys[0]
    rows.append(result_row(s.name, "student, extracurricular", el, s.num_parameters(), keys, seed=args.seed,
                           gap_closed=gap_closed(el.get(main), kd.get(main), teacher.get(main))))
    return rows, trainer.accelerator


def _regression_student(model_args, num_outputs: int, seed: int):
    from accelerate.utils import set_seed

    from ..models.factory import create_backbone

    set_seed(seed)
    return create_backbone(model_args.student, num_classes=num_outputs, pretrained=model_args.student_pretrained,
                           image_size=model_args.image_size)


def add_mean_gap(summary: List[Dict[str, Any]], key: str) -> None:
    """The gap closed by the mean extracurricular result vs the mean KD result and the mean teacher."""
    from ..results import gap_closed

    by_role = {r["role"]: r for r in summary}
    teacher = by_role.get("teacher ensemble") or by_role.get("teacher 1") or {}
    kd = by_role.get("student, classic KD") or by_role.get("student, KD (point matching)") or {}
    el = by_role.get("student, extracurricular") or {}
    if el:
        el["gap_closed"] = gap_closed(el.get(key), kd.get(key), teacher.get(key))
        el.pop("gap_closed_std", None)


def run_extracurricular(settings: RunSettings) -> List[Dict[str, Any]]:
    from ..data.default import DEFAULT_DATASET
    from ..demo import demo_teachers
    from ..pipeline import load_data, write_results
    from ..results import REGRESSION_METRICS, RESULT_METRICS, markdown_table, results_table, summarize_seeds

    args, cfg, data_args = settings.training, settings.run, settings.data
    # One data split for every seed (the data seed is --seed); --seeds vary initialisation, order and augmentation.
    data, task = load_task_data(data_args, cfg, seed=args.seed)
    teacher_paths = list(settings.model.teachers)
    if not teacher_paths:
        if data_args.dataset != DEFAULT_DATASET:
            raise ValueError(f"distilling on {data_args.dataset} needs --teachers (models trained on it); "
                             "the cached demo teachers only know the embedded digits")
        if task is None:
            teacher_paths = demo_teachers(load_data(dataclasses.replace(data_args, max_train_samples=None)),
                                          names=[DEMO_TEACHER])
        else:
            from ..demo_regression import regression_demo_teachers

            full, _ = load_task_data(dataclasses.replace(data_args, max_train_samples=None), cfg, seed=args.seed)
            teacher_paths = regression_demo_teachers(full, task)
    keys = REGRESSION_METRICS if task is not None else RESULT_METRICS
    seeds = list(cfg.seeds) or [args.seed]
    all_rows: List[Dict[str, Any]] = []
    accelerator = None
    for seed in seeds:
        out = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed_{seed}")
        rows, accelerator = run_seed(settings, dataclasses.replace(args, seed=seed, output_dir=out), data, task,
                                     teacher_paths)
        write_results(out, results_table(rows, keys), rows, accelerator)
        all_rows += rows
    if len(seeds) > 1:
        summary = summarize_seeds(all_rows, keys)
        add_mean_gap(summary, keys[0])
        write_results(args.output_dir, markdown_table(summary, (*keys, "gap_closed"), extra=("runs",)), summary,
                      accelerator)
        return summary
    return all_rows


register_workflow("extracurricular", run_extracurricular, ExtracurricularRunArguments)
