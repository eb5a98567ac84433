"""What every command does with its parsed settings: data, student, teachers, train, save, push, results tables."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from accelerate.utils import set_seed

from ..data.labels import FROM_DATASET, FROM_TEACHER
from ..data.loading import ImageClassificationData, load_image_dataset
from ..data.stream import split_size
from ..files import write_file_atomic
from ..hub.card import local_checkpoint_name
from ..hub.secrets import redact_secrets
from ..launch import is_main_process
from ..methods.base import DistillationMethod
from ..methods.registry import create_method
from ..models.backbone import Backbone
from ..models.factory import create_backbone, is_zero_shot_source, saved_num_classes
from ..models.teacher import Teacher, create_teacher
from ..results import RESULT_METRICS, UNLABELLED_METRICS, markdown_table, results_table, summarize_seeds
from ..settings import shorten
from ..training.args import DistillationArguments
from ..training.trainer import DistillationTrainer
from .arguments import DataArguments, ModelArguments


def load_data(data_args: DataArguments, seed: int = 0) -> ImageClassificationData:
    data = load_image_dataset(
        data_args.dataset, train_split=data_args.train_split, eval_split=data_args.eval_split,
        image_column=data_args.image_column, label_column=data_args.label_column,
        revision=data_args.dataset_revision, config_name=data_args.dataset_config,
        validation_fraction=data_args.validation_fraction, seed=seed, streaming=data_args.streaming,
        label_names=data_args.label_names or None,
    )
    if data_args.max_train_samples and data.streamed:
        raise ValueError("--max_train_samples takes the first N rows of a loaded split; a stream is trained for "
                         "--max_steps steps instead: drop --max_train_samples")
    if data_args.max_train_samples:
        data.train = data.train.select(range(min(data_args.max_train_samples, len(data.train))))
    return data


def teacher_classes(model_args: ModelArguments, name: str, index: int = 0):
    """``(num_classes, label_names)`` a classifier teacher declares, or ``None`` (a zero-shot or headless teacher,
    or one that cannot be loaded: its own check reports why)."""
    revisions = list(model_args.teacher_revisions)
    revision = revisions[index] if index < len(revisions) else None
    if is_zero_shot_source(name, revision):
        return None
    try:
        backbone = create_backbone(name, revision=revision, trust_remote_code=model_args.trust_remote_code,
                                   allow_pickle_weights=model_args.allow_pickle_weights)
    except Exception:  # noqa: BLE001 - reported by the teacher's own check, with its name
        return None
    return (backbone.num_classes, backbone.label_names) if backbone.num_classes > 0 else None


def classes_from_teachers(data: ImageClassificationData, model_args: ModelArguments) -> ImageClassificationData:
    """Data without labels or label names takes its classes from the first classifier teacher's config."""
    if data.label_names is not None or data.labelled("train"):
        return data
    for i, name in enumerate(model_args.teachers):
        classes = teacher_classes(model_args, name, i)
        if classes is not None:
            data.declared_num_classes, data.label_names = classes
            data.label_source = FROM_TEACHER
            return data
    return data


def label_source_text(data: ImageClassificationData) -> str:
    """Where the run's label names come from, for the dry run and the start banner."""
    if data.label_names is not None:
        return f"label names: from {data.label_source or FROM_DATASET} ({len(data.label_names)})"
    if data.num_classes is not None:
        source = "the teacher's config" if data.label_source == FROM_TEACHER else "the dataset's label column"
        return f"label names: none ({data.num_classes} unnamed classes, from {source})"
    return "label names: none (the data has no labels and none were given: the student keeps its own head)"


def build_student(model_args: ModelArguments, data: ImageClassificationData, seed: Optional[int] = None,
                  task=None) -> Backbone:
    """The student for ``data``: its classes and label names, or a Gaussian head of ``task`` (regression).

    With ``seed``, its random initialisation does not depend on what ran before.
    """
    if seed is not None:
        set_seed(seed)
    if task is not None:  # a mean and a log-variance per target (hfkd.tasks.RegressionTask)
        num_classes, label_names = 2 * task.num_targets, None
    else:
        num_classes, label_names = data.num_classes, data.label_names
        check_student_head(model_args, num_classes)
    return create_backbone(model_args.student, num_classes=num_classes, pretrained=model_args.student_pretrained,
                           image_size=model_args.image_size, label_names=label_names,
                           trust_remote_code=model_args.trust_remote_code,
                           allow_pickle_weights=model_args.allow_pickle_weights)


def check_student_head(model_args: ModelArguments, data_classes: int) -> None:
    """Refuse to replace, unasked, the trained head of a saved classifier whose classes are not the data's.

    A timm name or a Hub id is a pretrained checkpoint: its head is replaced by one over the data's classes, as
    fine-tuning does.  A local folder is a model someone trained on their classes; a head of other classes there
    usually means the wrong folder or the wrong data, so replacing it takes ``--num_classes``.  A backbone saved
    without a head (``feature_kd``) gets a new one either way.
    """
    asked = model_args.num_classes
    if data_classes is None:  # data without classes: nothing to compare with
        return
    if asked is not None and asked != data_classes:
        raise ValueError(f"--num_classes {asked} does not match the dataset, which has {data_classes} classes: the "
                         f"new head predicts the dataset's classes; pass --num_classes {data_classes} or drop it")
    saved = saved_num_classes(model_args.student)
    if saved and saved != data_classes and asked is None:
        raise ValueError(
            f"the student {shorten(model_args.student)} is a classifier of {saved} classes, but the dataset has "
            f"{data_classes}: its trained head cannot be used. To fine-tune it with a new, randomly initialised head "
            f"over the dataset's classes, pass --num_classes {data_classes}; to keep its head, give data of its "
            f"{saved} classes")


def build_teacher(model_args: ModelArguments, student: Backbone, name: str, index: int = 0,
                  check_classes: bool = True) -> Teacher:
    """Teacher ``name`` (the ``index``-th, whose ``--teacher_revisions`` entry applies), checked against ``student``'s
    classes and label names unless ``check_classes`` is false (a method that reads no teacher logits)."""
    revisions = list(model_args.teacher_revisions)
    revision = revisions[index] if index < len(revisions) else None
    # Prompts phrase a zero-shot teacher's classes; the templates shared by all teachers skip the classifiers.
    zero_shot = {"prompt_templates": model_args.prompts_for(name)} if is_zero_shot_source(name, revision) else {}
    return create_teacher(name, student.preprocess, student.num_classes if check_classes else None,
                          student.label_names,
                          label_mapping=model_args.label_mapping_dict(),
                          align_labels_by_name=model_args.align_labels_by_name,
                          revision=revision,
                          trust_remote_code=model_args.trust_remote_code,
                          allow_pickle_weights=model_args.allow_pickle_weights, **zero_shot)


def build_teachers(model_args: ModelArguments, student: Backbone, paths: Optional[Sequence[str]] = None,
                   check_classes: bool = True) -> List[Teacher]:
    names = list(paths if paths is not None else model_args.teachers)
    return [build_teacher(model_args, student, name, i, check_classes) for i, name in enumerate(names)]


def dataset_info(data: ImageClassificationData, data_args: DataArguments) -> Dict[str, Any]:
    """What the lineage and the card say about the data (a local folder by its name, never its path)."""
    return {"id": local_checkpoint_name(data.source) or data.source, "revision": data.revision,
            "config": data_args.dataset_config, "train_split": data_args.train_split, "eval_split": data.eval_split,
            "train_samples": split_size(data.train),
            "eval_samples": 0 if data.eval is None else split_size(data.eval),
            "label_source": data.label_source, **({"streamed": True} if data.streamed else {})}


def run(method: DistillationMethod, student: Backbone, teachers: Sequence[Any], data: ImageClassificationData,
        args: DistillationArguments, data_args: DataArguments, save: bool = True,
        baseline_metrics: Optional[Dict[str, Any]] = None, license: Optional[str] = None, task=None,
        card_extras: Optional[Dict[str, Any]] = None):
    """Train, evaluate, save the student (and push it when asked); returns (trainer, metrics).

    ``task`` (default classification) and ``card_extras`` (e.g. ``{"kd_reference": metrics}``) go to the
    trainer and to its model card."""
    trainer = DistillationTrainer(
        student, teachers=teachers, method=method, args=args, train_dataset=data.train, eval_dataset=data.eval,
        # From a teacher cache the views, hence the augmentation, are the cache's.
        augment=None if args.teacher_cache else data_args.augment(), task=task, image_column=data.image_column,
        label_column=data.label_column, dataset_info=dataset_info(data, data_args),
    )
    trainer.train()
    metrics = trainer.evaluate() if data.eval is not None else {}
    if save:
        trainer.save_model(os.path.join(args.output_dir, "student"), baseline_metrics=baseline_metrics,
                           card_extras={**({"license": license} if license else {}), **(card_extras or {})} or None)
        if args.push_to_hub:
            trainer.push_to_hub()
    return trainer, metrics


def write_results(output_dir: str, table: str, rows: Sequence[Dict[str, Any]]) -> None:
    """Print the results table and keep it (Markdown and JSON) in ``output_dir``; main process only."""
    if not is_main_process():
        return
    table, rows = redact_secrets(table), redact_secrets(list(rows))  # a model name may carry a token
    print("\n" + table + "\n", flush=True)
    os.makedirs(output_dir, exist_ok=True)
    write_file_atomic(os.path.join(output_dir, "results.md"), table + "\n")
    write_file_atomic(os.path.join(output_dir, "results.json"), json.dumps(list(rows), indent=2, default=str))


def result_row(model: str, role: str, metrics: Dict[str, Any], params: Optional[int], keys=RESULT_METRICS,
               **extra) -> Dict[str, Any]:
    """One row of a results table: the metrics ``keys`` of one model (top-1, top-5, NLL and ECE by default;
    ``None`` where not measured)."""
    model = local_checkpoint_name(model) or model
    return {"model": model, "role": role, **{k: metrics.get(k) for k in keys}, "params": params, **extra}


def teacher_rows(trainer: DistillationTrainer, keys=RESULT_METRICS,
                 ensemble: Optional[str] = "mean of teachers' probabilities", **extra) -> List[Dict[str, Any]]:
    """The rows of a run's teachers, and of their ensemble (named ``ensemble``) when there are several."""
    rows = [result_row(t.name, f"teacher {i + 1}", trainer.teacher_metrics.get(f"teacher_{i}", {}),
                       t.backbone.num_parameters(), keys, **extra) for i, t in enumerate(trainer.teachers)]
    if ensemble and "ensemble" in trainer.teacher_metrics:
        rows.append(result_row(ensemble, "teacher ensemble", trainer.teacher_metrics["ensemble"], None, keys, **extra))
    return rows


def run_with_baseline(method: DistillationMethod, model_args: ModelArguments, data_args: DataArguments,
                      args: DistillationArguments, data: ImageClassificationData,
                      teacher_paths: Optional[Sequence[str]] = None, baseline: bool = True) -> List[Dict[str, Any]]:
    """Distil the student and, for comparison, train the same student without KD; return table rows.

    ``teacher_paths`` (default ``model_args.teachers``) may be empty for self-distillation.
    The rows hold the teachers, their ensemble, the baseline and the distilled student.
    """
    rows: List[Dict[str, Any]] = []
    if baseline:
        base_args = dataclasses.replace(subfolder_args(args, "baseline"), teacher_cache=None)
        base_student = build_student(model_args, data, seed=args.seed)
        _, base_metrics = run(create_method("supervised"), base_student, [], data, base_args, data_args,
                              license=model_args.license)
        base_row = result_row(base_student.name, "student, no KD (baseline)", base_metrics,
                              base_student.num_parameters())
    student = build_student(model_args, data, seed=args.seed)
    teachers = build_teachers(model_args, student, teacher_paths, check_classes=method.reads_teacher_logits)
    baseline_metrics = {**base_metrics, "params": base_student.num_parameters()} if baseline else None
    trainer, metrics = run(method, student, teachers, data, args, data_args, baseline_metrics=baseline_metrics,
                           license=model_args.license)
    rows += teacher_rows(trainer)
    if baseline:
        rows.append(base_row)
    if not method.trains_student_head:  # saved as a backbone: what its untrained head scored describes nothing saved
        rows.append(result_row(student.name, f"student, {method.name} (a backbone: no head trained)", {},
                               student.num_parameters()))
    else:
        keys = tuple(RESULT_METRICS) + tuple(k for k in UNLABELLED_METRICS if k in metrics)
        rows.append(result_row(student.name, f"student, {method.name}", metrics, student.num_parameters(), keys))
    return rows


def run_seeds(args: DistillationArguments, seeds: Sequence[int], run_seed: Callable[[DistillationArguments], List[Dict]],
              keys: Sequence[str] = RESULT_METRICS, summary_keys: Optional[Sequence[str]] = None,
              summarize: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> List[Dict[str, Any]]:
    """``run_seed`` once per seed (``--output_dir`` itself for one seed, ``--output_dir/seed_{s}`` for several),
    each writing its results table; with several seeds, the mean ± std table too, which ``summarize`` may amend.

    Returns the rows of the one seed, or the summary rows.
    """
    seeds = list(seeds) or [args.seed]
    all_rows: List[Dict[str, Any]] = []
    for seed in seeds:
        out = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed_{seed}")
        rows = run_seed(dataclasses.replace(args, seed=seed, output_dir=out))
        write_results(out, results_table(rows, keys), rows)
        all_rows += rows
    if len(seeds) == 1:
        return all_rows
    summary = summarize_seeds(all_rows, keys)
    if summarize is not None:
        summarize(summary)
    write_results(args.output_dir, markdown_table(summary, summary_keys or keys, extra=("runs",)), summary)
    return summary


def subfolder_args(args: DistillationArguments, name: str, push: bool = False) -> DistillationArguments:
    """``args`` for one of several students of a workflow, trained in ``--output_dir/name`` (pushed if ``push``)."""
    return dataclasses.replace(args, output_dir=os.path.join(args.output_dir, name), resume_from_checkpoint=None,
                               push_to_hub=args.push_to_hub and push)
