"""What ``hfkd benchmark`` runs: splits, fold teachers, the runs of every arm, the paired table and its plot.

Layout of ``--output_dir``::

    benchmark.json / benchmark.md / benchmark.png   the comparison (written after every seed, and at the end)
    splits.json                                     every seed's folds: the test indices of each
    runs/seed{S}/fold{F}/{arm}-{key}/               one training run: predictions.npz, then run.json

A run is identified by everything it depends on (``key``: the method and its settings, the training settings,
the starting student, the teachers, the training and test images); a folder with that key and a ``run.json``
is a finished run and is reused, so a killed benchmark redoes only the run it was in.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..compress.pipeline import recover
from ..compress.prune import prune_backbone
from ..data.default import DEFAULT_DATASET, load_all_digits
from ..data.folds import fold_train_indices, per_class_subset, stratified_kfold
from ..data.loading import ImageClassificationData
from ..data.rotated_digits import ROTATION_COLUMN, load_all_rotated_digits
from ..hub.load import from_pretrained
from ..extras import is_installed
from ..files import write_file_atomic
from ..methods.registry import create_method, get_method_class
from ..output_dir import list_checkpoints
from ..results import format_metric
from ..settings import shorten
from ..stats import corrected_paired_ttest, kfold_test_train_ratio, paired_differences
from ..tasks import RegressionTask
from ..tasks.evaluation import ECE_BINS, calibration_bins, calibration_error
from .arguments import BenchmarkArguments, DataArguments
from .benchmark_entries import entry_reads_teachers
from .compress import parse_compress_args
from .demo import cached, demo_cache_path, regression_task, regression_teacher_path, train_demo_model
from .distill import parse_distill_args
from .pipeline import build_student, build_teachers, load_data, run
from .workflows.bake import baseline_training
from .preset import (DEFAULT_TEACHER_EPOCHS, DEMO_EQUAL_STEPS, DEMO_LABELS_PER_CLASS, DEMO_STUDENT, DEMO_TEACHERS,
                     EXTRACURRICULAR_TEACHER, REGRESSION_TEACHERS, is_demo_data)

#: metric -> higher is better: what a comparison reports, for classification and for the regression demo
COMPARED = {"eval_accuracy": True, "eval_loss": False, "eval_ece": False}
REGRESSION_COMPARED = {"eval_mae": False, "eval_rmse": False, "eval_loss": False}
BASELINE = "baseline"


# -- what a run is evaluated on and trained from --------------------------------------------------------------------
@dataclass
class Split:
    """One (seed, fold): the images a run may train on (``train``), the labelled ones the students use, the test."""

    seed: int
    fold: int
    train: np.ndarray
    labelled: np.ndarray
    test: np.ndarray


@dataclass
class Pool:
    """Every image a benchmark draws from, with the columns and label names of the dataset."""

    dataset: Any
    image_column: str
    label_column: str
    label_names: Optional[List[str]]
    source: str

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset[self.label_column])

    def data(self, train: np.ndarray, test: np.ndarray) -> ImageClassificationData:
        return ImageClassificationData(
            train=self.dataset.select(train.tolist()), eval=self.dataset.select(test.tolist()),
            image_column=self.image_column, label_column=self.label_column, label_names=self.label_names,
            source=self.source, eval_split="benchmark fold")


def load_pool(args: BenchmarkArguments) -> Tuple[Pool, int]:
    """The images (all 1,797 digits, or the dataset's train and eval splits together) and, for ``--split holdout``,
    how many of them, from the start, are the training split."""
    if is_demo_data(args.dataset):
        return Pool(load_all_digits(), "image", "label", [str(i) for i in range(10)], DEFAULT_DATASET), 0
    from datasets import concatenate_datasets  # required, slow to import

    data = load_data(DataArguments(dataset=args.dataset), seed=0)
    if not (data.labelled("train") and (data.eval is None or data.labelled("eval"))):
        raise ValueError(f"hfkd benchmark compares accuracies, so {shorten(args.dataset)} needs labels in every "
                         "split, and one of its splits has none: give a labelled dataset")
    keep = [data.image_column, data.label_column]
    parts = [data.train.select_columns(keep)]
    if data.eval is not None:
        parts.append(data.eval.select_columns(keep))
    return Pool(concatenate_datasets(parts), data.image_column, data.label_column, data.label_names,
                data.source), len(data.train)


def labels_per_class(args: BenchmarkArguments) -> int:
    if args.labels_per_class is not None:
        return args.labels_per_class
    return DEMO_LABELS_PER_CLASS if is_demo_data(args.dataset) else 0


def equal_steps(args: BenchmarkArguments) -> bool:
    if args.equal_steps is not None:
        return args.equal_steps
    return DEMO_EQUAL_STEPS if is_demo_data(args.dataset) else False


def run_epochs(args: BenchmarkArguments, epochs: int, split: Split, max_train_samples: Optional[int] = None) -> int:
    """``epochs`` over the labelled images, or, with ``--equal_steps``, as many as make the optimizer steps of
    ``epochs`` over the images the method's settings train on: the whole training part, or its first
    ``max_train_samples`` (extracurricular learning's demo trains on 256 digits)."""
    trained = min(len(split.train), max_train_samples or len(split.train))
    if not equal_steps(args) or len(split.labelled) >= trained:
        return epochs
    return max(1, round(epochs * trained / len(split.labelled)))


def make_splits(args: BenchmarkArguments, labels: np.ndarray, holdout_train: int) -> Dict[int, List[Split]]:
    """seed -> its splits: k stratified folds drawn with the seed (repeated k-fold), or the dataset's own split."""
    per_class = labels_per_class(args)
    out: Dict[int, List[Split]] = {}
    for seed in args.seeds:
        if args.split == "kfold":
            folds = stratified_kfold(labels, args.folds, seed)
            pairs = [(fold_train_indices(folds, f), folds[f]) for f in range(args.max_folds or args.folds)]
        else:
            pairs = [(np.arange(holdout_train), np.arange(holdout_train, len(labels)))]
        out[seed] = [Split(seed, f, train, per_class_subset(labels, train, per_class, seed) if per_class else train,
                           test) for f, (train, test) in enumerate(pairs)]
    return out


def test_train_ratio(args: BenchmarkArguments, splits: Dict[int, List[Split]]) -> float:
    """``n_test / n_train`` of the correction: of the split itself (the training part, whatever a method's recipe
    then uses of it: the labelled subset, teachers trained on all of it)."""
    if args.split == "kfold":
        return kfold_test_train_ratio(args.folds)
    first = next(iter(splits.values()))[0]
    return len(first.test) / len(first.train)


# -- teachers and starting students trained on one fold ----------------------------------------------------------
def _fold_tag(args: BenchmarkArguments, split: Split) -> str:
    steps = f"-steps{args.max_steps}" if args.max_steps > 0 else ""
    return f"-{args.folds}fold{split.fold}-split{split.seed}{steps}"


def fold_teachers(args: BenchmarkArguments, pool: Pool, split: Split) -> Dict[str, str]:
    """The demo teachers (name -> folder) trained on the fold's whole training part (never its test images),
    cached per fold."""
    data = pool.data(split.train, split.test)
    paths = {}
    for name, epochs in DEMO_TEACHERS.items():
        path = demo_cache_path("demo_teachers", name, epochs, seed=0) + _fold_tag(args, split)
        paths[name] = cached(path, lambda out, name=name, epochs=epochs: train_demo_model(
            name, data, out, epochs, seed=0, max_steps=args.max_steps))
    return paths


@functools.lru_cache(maxsize=1)
def rotated_pool(max_angle: float) -> Pool:
    """The regression demo's images: all 1,797 digits in the k-fold order, each rotated by its fixed angle."""
    return Pool(load_all_rotated_digits(max_angle=max_angle), "image", ROTATION_COLUMN, None,
                f"{DEFAULT_DATASET}-rotation")


def fold_regression_teachers(args: BenchmarkArguments, pool: Pool, split: Split, task: RegressionTask) -> List[str]:
    """The regression demo's Gaussian-head teachers, trained on the fold's rotated training part, cached per fold."""
    data = pool.data(split.train, split.test)
    paths = []
    for name, epochs in REGRESSION_TEACHERS.items():
        paths.append(cached(regression_teacher_path(name, task) + _fold_tag(args, split),
                            lambda out, name=name, epochs=epochs: train_demo_model(
                                name, data, out, epochs, seed=0, task=task, max_steps=args.max_steps)))
    return paths


def fold_student_start(args: BenchmarkArguments, pool: Pool, split: Split) -> str:
    """MEAL V2's stand-in for pretrained weights on the demo: the demo student trained with cross-entropy on the
    run's labelled images (so it sees no label the baseline does not), cached per (seed, fold)."""
    data = pool.data(split.labelled, split.test)
    tag = _fold_tag(args, split) + f"-labels{len(split.labelled)}-seed{split.seed}"
    epochs = run_epochs(args, DEFAULT_TEACHER_EPOCHS, split)
    path = demo_cache_path("demo_students", DEMO_STUDENT, epochs, seed=0, task="start-") + tag
    return cached(path, lambda out: train_demo_model(DEMO_STUDENT, data, out, epochs, seed=split.seed,
                                                     max_steps=args.max_steps))


# -- one run -------------------------------------------------------------------------------------------------
def prediction_metrics(logits: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """Top-1, NLL and ECE (15 equal-width confidence bins) of saved predictions, as ``hfkd eval`` measures them."""
    x, y = torch.from_numpy(np.asarray(logits, dtype=np.float32)), torch.from_numpy(np.asarray(labels)).long()
    return {"eval_accuracy": float((x.argmax(-1) == y).double().mean()),
            "eval_loss": float(F.cross_entropy(x, y)),
            "eval_ece": calibration_error(calibration_bins(x.softmax(-1), y), len(y))}


def regression_prediction_metrics(task: RegressionTask):
    """MAE and RMSE (degrees) and Gaussian NLL of saved regression outputs, as the trainer evaluates them."""
    def metrics(outputs: np.ndarray, targets: np.ndarray) -> Dict[str, float]:
        sums = task.error_sums(torch.from_numpy(np.asarray(outputs, dtype=np.float32)),
                               torch.from_numpy(np.asarray(targets, dtype=np.float32)))
        return {k: v for k, v in task.metrics_from_sums(*sums).items() if k in REGRESSION_COMPARED}
    return metrics


def _digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


# Settings that do not change what a run computes
_NOT_IN_KEY = {"output_dir", "logging_steps", "logging_dir", "report_to", "overwrite_output_dir",
               "resume_from_checkpoint", "run_name", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision",
               "eval_teachers", "disable_tqdm", "save_strategy", "eval_strategy", "save_total_limit", "save_steps"}


def _training_key(training) -> Dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(training).items() if k not in _NOT_IN_KEY}


def run_key(arm: str, settings, training, teachers: Sequence[str], split: Split,
            extra: Optional[Dict[str, Any]] = None) -> str:
    """What a run depends on, hashed; ``extra``: what else it depends on (a task, a pruned starting student)."""
    method_config = {} if arm == BASELINE else dataclasses.asdict(settings.method_config)
    values = {
        "arm": arm if arm == BASELINE else settings.method, "method_config": method_config,
        "training": _training_key(training), "augment": dataclasses.asdict(settings.data.augment()),
        "student": [settings.model.student, settings.model.student_pretrained, settings.model.image_size],
        "teachers": list(teachers), "train": _digest(split.labelled.tolist()), "test": _digest(split.test.tolist()),
    }
    if extra:  # only when given, so that the runs of the plain methods keep their keys
        values["extra"] = extra
    return _digest(values)


def _save_npz(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_file_atomic(path, buffer.getvalue())


def _finished(out: str, key: str, needs_student: bool) -> Optional[Dict[str, Any]]:
    """The record of a finished run in ``out`` with ``key`` (and its saved student when ``needs_student``)."""
    record_path = os.path.join(out, "run.json")
    if not (os.path.isfile(record_path) and os.path.isfile(os.path.join(out, "predictions.npz"))):
        return None
    if needs_student and not os.path.isfile(os.path.join(out, "student", "model.safetensors")):
        return None
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    return record if record.get("key") == key else None


def _finish(out: str, key: str, trainer, split: Split, metrics, **fields) -> Dict[str, Any]:
    """Save the trained run's test predictions, then its record (last: a run with a record is finished)."""
    predicted = trainer.predict()
    logits, labels = predicted["logits"].numpy(), predicted["labels"].numpy()
    _save_npz(os.path.join(out, "predictions.npz"), logits=logits, labels=labels, indices=split.test)
    measured = metrics(logits, labels)
    record = {"key": key, **fields, "seed": split.seed, "fold": split.fold, "test_images": len(split.test),
              "metrics": measured,
              "teacher_metrics": {k: {m: v.get(m) for m in measured} for k, v in trainer.teacher_metrics.items()},
              "steps": trainer.state.global_step, "train_runtime": trainer.state.train_runtime}
    write_file_atomic(os.path.join(out, "run.json"), json.dumps(record, indent=2, default=str))
    return {**record, "output_dir": out}


def _run_folder(folder: str, split: Split, name: str, key: str) -> str:
    return os.path.join(folder, "runs", f"seed{split.seed}", f"fold{split.fold}", f"{name}-{key}")


def _reuse_or_resume(out: str, key: str, split: Split, name: str, training, needs_student: bool = False):
    """(the finished run's record, None) or (None, the training settings: continuing a stopped run's checkpoint)."""
    record = _finished(out, key, needs_student)
    if record is not None:
        print(f"benchmark: seed {split.seed} fold {split.fold} {name}: reused {out}", flush=True)
        return {**record, "output_dir": out}, training
    # A run stopped by a signal (SIGTERM, a scheduler's preemption) left its checkpoint there: continue from it.
    if list_checkpoints(out):
        training = dataclasses.replace(training, resume_from_checkpoint="latest")
        print(f"benchmark: seed {split.seed} fold {split.fold} {name}: continuing the stopped run in {out}", flush=True)
    return None, training


def run_training(training, split: Split):
    """A run's training settings: the split's seed; no checkpoints, evaluation or trackers (the benchmark saves
    the test predictions itself)."""
    return dataclasses.replace(training, seed=split.seed, save_strategy="no", eval_strategy="no", report_to=[],
                               resume_from_checkpoint=None)


def _portable(path: str, folder: str) -> str:
    """A teacher as a run's key names it: a student trained by this benchmark (sequential FEED's teachers) by its
    place inside ``folder``, so that a moved or copied benchmark folder still finds its finished runs."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return path if relative.startswith(os.pardir) else relative


def run_arm(arm: str, settings, pool: Pool, split: Split, teachers: Sequence[str], folder: str, *,
            name: Optional[str] = None, task: Optional[RegressionTask] = None,
            keep_student: bool = False, save_student: bool = False) -> Dict[str, Any]:
    """Train ``arm`` (a method, or the baseline: cross-entropy with the method's settings) on the split's labelled
    images, save its predictions on the test images; reuse a finished run with the same key.

    ``name`` names the run's folder (default: ``arm``); ``task`` is the regression demo's; ``keep_student`` saves
    the trained student in ``student/`` (a later run learns from it or prunes it) and reuses a finished run only
    with it; ``save_student`` saves it when the run trains (so that a later entry of the same benchmark that
    needs this shared run's student finds it, instead of training the run again in its folder)."""
    name = name or arm
    training = run_training(settings.training, split)
    method = create_method("supervised") if arm == BASELINE else settings.create_method()
    teachers = list(teachers) if method.max_teachers != 0 else []  # self-distillation (PS-KD) takes none
    key = run_key(arm, settings, training, [_portable(t, folder) for t in teachers], split,
                  extra={"task": task.options(), "data": pool.source} if task is not None else None)
    out = _run_folder(folder, split, name, key)
    record, training = _reuse_or_resume(out, key, split, name, training, needs_student=keep_student)
    if record is not None:
        return record
    data = pool.data(split.labelled, split.test)
    student = build_student(settings.model, data, seed=split.seed, task=task)
    loaded = build_teachers(settings.model, student, teachers, check_classes=method.reads_teacher_logits) \
        if teachers else []
    trainer, _ = run(method, student, loaded, data, dataclasses.replace(training, output_dir=out), settings.data,
                     save=keep_student or save_student, task=task)
    metrics = prediction_metrics if task is None else regression_prediction_metrics(task)
    return _finish(out, key, trainer, split, metrics, arm=name,
                   method=settings.method if arm != BASELINE else "supervised", train_images=len(split.labelled),
                   student=settings.model.student, teachers=teachers)


def arm_settings(args: BenchmarkArguments, method: str, student: Optional[str], folder: str, split: Split,
                 extra_argv: Sequence[str] = ()):
    """``hfkd distill --method NAME``'s settings (on the digits, its demo preset), with the benchmark's options."""
    argv = ["--method", method, "--dataset", args.dataset, "--output_dir", folder, *extra_argv]
    if student:
        argv += ["--student", student]
        if student != args.student:  # a saved starting student (MEAL V2 on the demo)
            argv += ["--student_pretrained", "true"]
        elif args.student_pretrained is not None:
            argv += ["--student_pretrained", str(args.student_pretrained).lower()]
    if args.num_train_epochs is not None:
        argv += ["--num_train_epochs", str(args.num_train_epochs)]
    if args.max_steps > 0:
        argv += ["--max_steps", str(args.max_steps)]
    settings = parse_distill_args(argv)
    if args.num_train_epochs is None:
        epochs = run_epochs(args, settings.training.num_train_epochs, split, settings.data.max_train_samples)
        settings.training = dataclasses.replace(settings.training, num_train_epochs=epochs)
    return settings


# -- each entry of --methods: its runs and what they are compared with ------------------------------------------
@dataclass
class Fold:
    """What every entry of one (seed, fold) shares: the settings, the images, the fold's teachers."""

    args: BenchmarkArguments
    pool: Pool
    split: Split
    teachers: Dict[str, str]

    @property
    def save_students(self) -> bool:
        """Whether every run saves its student: when an entry learns from, or prunes, a run another entry shares
        (sequential FEED's baseline, compression's KD student)."""
        return any(entry in ("feed_sequential", "compress") for entry in self.args.methods)

    @property
    def folder(self) -> str:
        return self.args.output_dir

    @property
    def demo(self) -> bool:
        return is_demo_data(self.args.dataset)


#: one comparison of an entry: (row of the table, the run, the run it is compared with, what that one is)
Comparison = Tuple[str, Dict[str, Any], Dict[str, Any], str]
NO_KD = "no KD"


def method_entry(fold: Fold, method: str) -> List[Comparison]:
    """A method against cross-entropy with its own settings (and, for MEAL V2 on the demo, its starting student)."""
    args, split = fold.args, fold.split
    student = args.student
    if fold.demo and get_method_class(method).starts_from_trained_student and student is None:
        student = fold_student_start(args, fold.pool, split)
    settings = arm_settings(args, method, student, fold.folder, split)
    teachers = list(fold.teachers.values())
    save = fold.save_students
    base = run_arm(BASELINE, settings, fold.pool, split, teachers, fold.folder, save_student=save)
    return [(method, run_arm(method, settings, fold.pool, split, teachers, fold.folder, save_student=save), base,
             NO_KD)]


def bake_entry(fold: Fold) -> List[Comparison]:
    """BAKE against the baseline of its paper's protocol (``--baseline_protocol``: imagenet trains the baseline at
    batch and learning rate / (M + 1), the same iterations per epoch; small_scale at BAKE's batch and rate)."""
    method = "bake"
    args, split = fold.args, fold.split
    settings = arm_settings(args, method, args.student, fold.folder, split)
    protocol = settings.run.baseline_protocol
    base_settings = dataclasses.replace(settings, training=baseline_training(settings.training, protocol,
                                                                             settings.method_config))
    save = fold.save_students
    base = run_arm(BASELINE, base_settings, fold.pool, split, [], fold.folder, save_student=save)
    return [(method, run_arm(method, settings, fold.pool, split, [], fold.folder, save_student=save), base,
             f"no KD ({protocol} protocol)")]


def feed_sequential_entry(fold: Fold) -> List[Comparison]:
    """Sequential FEED (Born-Again style): generation 1 learns from the baseline itself (the student trained with
    cross-entropy), generation g + 1 from generation g; each generation against that baseline."""
    method = "feed"
    args, split = fold.args, fold.split
    settings = arm_settings(args, method, args.student, fold.folder, split)
    base = run_arm(BASELINE, settings, fold.pool, split, [], fold.folder, keep_student=True)
    out, previous = [], base
    for g in range(1, settings.run.generations + 1):
        keep = g < settings.run.generations  # the next generation's teacher
        previous = run_arm(method, settings, fold.pool, split, [os.path.join(previous["output_dir"], "student")],
                           fold.folder, name=f"feed_sequential{g}", keep_student=keep)
        out.append((f"feed_sequential (generation {g})", previous, base, NO_KD))
    return out


def extracurricular_entry(fold: Fold) -> List[Comparison]:
    """Extracurricular learning (its demo's teacher, ResNet-20 of the fold) against the baseline of its settings."""
    method = "extracurricular"
    args, split = fold.args, fold.split
    settings = arm_settings(args, method, args.student, fold.folder, split)
    teachers = [fold.teachers[EXTRACURRICULAR_TEACHER]] if fold.demo else list(fold.teachers.values())
    save = fold.save_students
    base = run_arm(BASELINE, settings, fold.pool, split, [], fold.folder, save_student=save)
    return [(method, run_arm(method, settings, fold.pool, split, teachers, fold.folder, save_student=save), base,
             NO_KD)]


def regression_entry(fold: Fold) -> List[Comparison]:
    """The regression demo on the same folds and labelled images: every digit rotated by a fixed angle, a Gaussian
    head; the fold's teacher trained on the rotated training part."""
    method = "extracurricular"
    args, split = fold.args, fold.split
    settings = arm_settings(args, method, args.student, fold.folder, split, ["--regression", "true"])
    task = regression_task(settings.run.max_angle)
    pool = rotated_pool(settings.run.max_angle)
    teachers = fold_regression_teachers(args, pool, split, task)
    base = run_arm(BASELINE, settings, pool, split, [], fold.folder, name="baseline_regression", task=task)
    result = run_arm(method, settings, pool, split, teachers, fold.folder, name="extracurricular_regression",
                     task=task)
    return [("extracurricular_regression", result, base, NO_KD)]


def compress_entry(fold: Fold) -> List[Comparison]:
    """Compression's recovery: the fold's KD student (the kd entry's run), pruned (``hfkd compress``'s pruning
    settings), then recovered with KD from the fold's teachers and with plain fine-tuning (cross-entropy), each
    with ``hfkd compress``'s recovery settings on the same labelled images; KD recovery against plain fine-tuning."""
    method = "kd"
    args, split = fold.args, fold.split
    teachers = list(fold.teachers.values())
    kd_settings = arm_settings(args, method, args.student, fold.folder, split)
    kd = run_arm(method, kd_settings, fold.pool, split, teachers, fold.folder, keep_student=True)  # pruned below
    _, data_args, pruning, _, training = parse_compress_args(["--dataset", args.dataset, "--output_dir", fold.folder])
    if args.max_steps > 0:
        training = dataclasses.replace(training, max_steps=args.max_steps)
    epochs = args.num_train_epochs if args.num_train_epochs is not None else run_epochs(
        args, training.num_train_epochs, split)
    training = run_training(dataclasses.replace(training, num_train_epochs=epochs), split)
    pruned = None
    runs = {}
    for recovery, recovery_teachers in (("kd", teachers), ("supervised", [])):
        name = f"compress_{recovery}"
        key = _digest({"arm": name, "pruned": kd["key"], "pruning": dataclasses.asdict(pruning),
                       "training": _training_key(training),
                       "augment": dataclasses.asdict(data_args.augment()), "teachers": recovery_teachers,
                       "train": _digest(split.labelled.tolist()), "test": _digest(split.test.tolist())})
        out = _run_folder(fold.folder, split, name, key)
        record, resumed = _reuse_or_resume(out, key, split, name, training)
        if record is None:
            if pruned is None:  # once for both recoveries
                pruned, _ = prune_backbone(from_pretrained(os.path.join(kd["output_dir"], "student")), pruning)
            trainer = recover(pruned, fold.pool.data(split.labelled, split.test), recovery_teachers, recovery,
                              dataclasses.replace(resumed, output_dir=out), data_args.augment())
            record = _finish(out, key, trainer, split, prediction_metrics, arm=name, method=recovery,
                             train_images=len(split.labelled), student=kd["output_dir"], teachers=recovery_teachers)
        runs[recovery] = record
    return [("compress (KD recovery)", runs["kd"], runs["supervised"], "plain fine-tuning after pruning")]


#: the entries with a workflow of their own (every name of ``WORKFLOW_ENTRIES``, and BAKE's and extracurricular
#: learning's) -> what runs them; any other method runs ``method_entry``
ENTRIES = {"bake": bake_entry, "feed_sequential": feed_sequential_entry, "extracurricular": extracurricular_entry,
           "extracurricular_regression": regression_entry, "compress": compress_entry}


# -- the comparison ----------------------------------------------------------------------------------------------
def compare(records: Dict[str, List[Tuple[Dict[str, Any], Dict[str, Any]]]], ratio: float,
            confidence: float) -> Dict[str, Any]:
    """row -> metric -> the paired comparison of its runs with their reference runs (same seed and fold)."""
    out: Dict[str, Any] = {}
    for row, pairs in records.items():
        if not pairs:
            continue
        metrics = COMPARED if "eval_accuracy" in pairs[0][0]["metrics"] else REGRESSION_COMPARED
        entry: Dict[str, Any] = {"pairs": [(r["seed"], r["fold"]) for r, _ in pairs],
                                 "compared_with": pairs[0][0].get("compared_with", NO_KD)}
        for metric, higher in metrics.items():
            m = [r["metrics"][metric] for r, _ in pairs]
            b = [base["metrics"][metric] for _, base in pairs]
            comparison = corrected_paired_ttest(paired_differences(m, b), ratio, confidence, higher)
            entry[metric] = {"method_mean": statistics.fmean(m), "baseline_mean": statistics.fmean(b),
                             **comparison.as_dict()}
        main = next(iter(metrics))
        teachers = [r["teacher_metrics"] for r, _ in pairs if r.get("teacher_metrics")]
        if teachers:
            entry["teachers_" + main.removeprefix("eval_")] = {
                k: statistics.fmean(t[k][main] for t in teachers) for k in teachers[0]}
        out[row] = entry
    return out


def _interval(metric: str, c: Dict[str, Any]) -> str:
    if c["ci_low"] is None:
        return format_metric(metric, c["mean"], signed=True)
    return (f"{format_metric(metric, c['mean'], signed=True)} [{format_metric(metric, c['ci_low'], signed=True)}, "
            f"{format_metric(metric, c['ci_high'], signed=True)}]")


#: a table per task: its first column, the main metric (key, unit title, difference title, verdict title), the other
#: metrics (key, difference title, verdict title) and the teachers' column
TABLES = (
    ("method", ("eval_accuracy", "top-1 (%)", "Δ top-1 (points)", "top-1"),
     (("eval_loss", "Δ NLL", "NLL"), ("eval_ece", "Δ ECE (points)", "ECE")),
     ("teachers_accuracy", "teachers top-1 (%): each, ensemble")),
    ("method (regression: rotation angle)", ("eval_mae", "MAE (°)", "Δ MAE (°)", "MAE"),
     (("eval_rmse", "Δ RMSE (°)", "RMSE"), ("eval_loss", "Δ Gaussian NLL", "NLL")),
     ("teachers_mae", "teachers MAE (°)")),
)


def markdown(comparison: Dict[str, Any], confidence: float) -> str:
    """One table per task (classification, then the regression demo's), for the rows there are."""
    level = f"{100 * confidence:g} %"
    tables = []
    for first, (main, unit, delta, verdict), others, (teachers_key, teachers_title) in TABLES:
        rows = {k: e for k, e in comparison.items() if main in e}
        if not rows:
            continue
        titles = [first, "compared with", "pairs", f"reference {unit}", f"method {unit}", f"{delta} [{level} CI]",
                  verdict, "W/T/L"] + [t for _, d, v in others for t in (f"{d} [{level} CI]", v)] + [teachers_title]
        lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        for name, e in rows.items():
            c = e[main]
            teachers = " / ".join(format_metric(main, v) for v in e.get(teachers_key, {}).values())
            cells = [name, e["compared_with"], str(c["n"]), format_metric(main, c["baseline_mean"]),
                     format_metric(main, c["method_mean"]), _interval(main, c), c["verdict"],
                     f"{c['wins']}/{c['ties']}/{c['losses']}"]
            cells += [t for key, _, _ in others for t in (_interval(key, e[key]), e[key]["verdict"])]
            lines.append("| " + " | ".join(cells + [teachers or "-"]) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def plot(path: str, comparison: Dict[str, Any], records: Dict[str, List[Dict[str, Any]]]) -> bool:
    """Mean top-1 difference with its interval per method; top-1 per (seed, fold) of each method and its baseline."""
    if not is_installed("matplotlib"):
        return False
    import matplotlib  # the plot extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [name for name, e in comparison.items() if "eval_accuracy" in e]  # the regression rows have no top-1
    if not names:
        plt.close(fig)
        return False
    for i, name in enumerate(names):
        c = comparison[name]["eval_accuracy"]
        low, high = c["ci_low"], c["ci_high"]
        err = [[100 * (c["mean"] - low)], [100 * (high - c["mean"])]] if low is not None else None
        left.errorbar([100 * c["mean"]], [i], xerr=err, fmt="o", capsize=4)
    left.axvline(0, color="grey", lw=1)
    left.set_yticks(range(len(names)), names)
    left.set_xlabel("top-1, method − baseline (points), mean and CI")
    for name in names:
        pairs = records[name]
        x = range(len(pairs))
        right.plot(x, [100 * r["metrics"]["eval_accuracy"] for r, _ in pairs], "o-", label=name)
        right.plot(x, [100 * b["metrics"]["eval_accuracy"] for _, b in pairs], "x--", label=f"{name}'s baseline")
        right.set_xticks(list(x), [f"s{r['seed']}f{r['fold']}" for r, _ in pairs], rotation=90, fontsize=7)
    right.set_ylabel("top-1 (%)")
    right.set_xlabel("seed, fold")
    right.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_file_atomic(path, buffer.getvalue())
    return True


def write_outputs(args: BenchmarkArguments, records, ratio: float, splits, per_class: int,
                  quiet: bool = False) -> Dict[str, Any]:
    comparison = compare(records, ratio, args.confidence)
    table = markdown(comparison, args.confidence)
    split = f"{args.folds}-fold" if args.split == "kfold" else "its own train / eval split"
    if args.split == "kfold" and args.max_folds:
        split += f" (the first {args.max_folds} folds only)"
    header = (f"hfkd benchmark: {shorten(args.dataset)}, {split} x seeds {args.seeds}, "
              f"students on {per_class or 'all'} labelled image(s) per class; n_test/n_train = {ratio:.4g}; "
              f"ECE over {ECE_BINS} equal-width confidence bins")
    result = {"settings": dataclasses.asdict(args), "labels_per_class": per_class, "test_train_ratio": ratio,
              "ece_bins": ECE_BINS, "comparison": comparison,
              "runs": {m: [{"method": r, "baseline": b} for r, b in pairs] for m, pairs in records.items()}}
    os.makedirs(args.output_dir, exist_ok=True)
    write_file_atomic(os.path.join(args.output_dir, "benchmark.json"), json.dumps(result, indent=2, default=str))
    write_file_atomic(os.path.join(args.output_dir, "benchmark.md"), f"{header}\n\n{table}\n")
    if quiet:
        return result
    if not plot(os.path.join(args.output_dir, "benchmark.png"), comparison, records):
        print('benchmark: matplotlib is not installed, so benchmark.png is not drawn (pip install "hfkd[plot]")')
    print(f"\n{header}\n\n{table}\n", flush=True)
    return result


def check_teachers(args: BenchmarkArguments) -> None:
    """Off the embedded digits the teachers are the user's, trained once, maybe on every fold's test images."""
    needs = [m for m in args.methods if entry_reads_teachers(m, required=True)]
    if "extracurricular_regression" in args.methods and not is_demo_data(args.dataset):
        raise ValueError("extracurricular_regression is the embedded rotation demo (hfkd/digits); on "
                         f"{shorten(args.dataset)} leave it out of --methods")
    if is_demo_data(args.dataset):
        if args.teachers:
            raise ValueError("on the embedded digits the benchmark trains the demo teachers on each fold; "
                             "--teachers would have seen the test images of other folds: leave them out")
        return
    if needs and not args.teachers:
        raise ValueError(f"{', '.join(needs)} need --teachers trained on {shorten(args.dataset)}")
    if needs and args.split == "kfold":
        raise ValueError(
            f"--split kfold on {shorten(args.dataset)}: your teachers were trained once, so they may have seen every "
            f"fold's test images, which would leak them into the comparison of {', '.join(needs)}. Use --split holdout "
            "(seeds over the dataset's own train / eval split; the teachers must not have seen its eval split)")
    if args.student is None:
        raise ValueError(f"--student is required on {shorten(args.dataset)}")


def run_benchmark(args: BenchmarkArguments) -> Dict[str, Any]:
    check_teachers(args)  # also for a caller that skipped `hfkd benchmark`'s parse
    pool, holdout_train = load_pool(args)
    labels = pool.labels
    splits = make_splits(args, labels, holdout_train)
    ratio = test_train_ratio(args, splits)
    per_class = labels_per_class(args)
    os.makedirs(args.output_dir, exist_ok=True)
    write_file_atomic(os.path.join(args.output_dir, "splits.json"), json.dumps(
        {str(seed): {"folds": [s.test.tolist() for s in ss], "labelled": [s.labelled.tolist() for s in ss]}
         for seed, ss in splits.items()}))
    demo = is_demo_data(args.dataset)
    records: Dict[str, List[Tuple[Dict, Dict]]] = {}
    needs_teachers = any(entry_reads_teachers(m) for m in args.methods)
    done = 0
    for seed, seed_splits in splits.items():
        for split in seed_splits:
            if done:  # the table so far (a long benchmark can be read, or stopped, at any point)
                write_outputs(args, records, ratio, splits, per_class, quiet=True)
            done += 1
            teachers = {}
            if needs_teachers:
                teachers = fold_teachers(args, pool, split) if demo else {p: p for p in args.teachers}
            fold = Fold(args, pool, split, teachers)
            for entry in args.methods:
                runner = ENTRIES.get(entry)
                for row, result, reference, compared_with in runner(fold) if runner else method_entry(fold, entry):
                    records.setdefault(row, []).append(({**result, "compared_with": compared_with}, reference))
    return write_outputs(args, records, ratio, splits, per_class)
