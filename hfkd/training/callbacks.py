"""Trainer callbacks: hooks that see the trainer at fixed points of the loop."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping

from ..data.stream import split_size
from ..results import METRIC_FORMATS, format_metric


class TrainerCallback:
    """Override what you need; set ``trainer.state.should_stop = True`` to stop early."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer) -> None: ...
    def on_log(self, trainer, logs: Dict[str, Any]) -> None: ...
    def on_evaluate(self, trainer, metrics: Dict[str, Any]) -> None: ...
    def on_save(self, trainer, checkpoint_dir: str) -> None: ...
    def on_epoch_end(self, trainer, epoch: int) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def on_save_model(self, trainer, output_dir: str) -> None: ...


class CallbackHandler:
    def __init__(self, callbacks: List[TrainerCallback]):
        self.callbacks = list(callbacks)

    def add(self, callback: TrainerCallback) -> None:
        self.callbacks.append(callback)

    def __call__(self, event: str, trainer, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(trainer, *args)


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """Metrics for a log line: accuracies and ECE as percentages with 2 decimals, other numbers to 4 significant
    digits (``top-1 (%) 97.22, NLL 0.215, eval_runtime 1.234``)."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in METRIC_FORMATS:
            parts.append(f"{METRIC_FORMATS[key][0]} {format_metric(key, value)}")
        else:
            parts.append(f"{key} {value:.4g}")
    return ", ".join(parts)


def _size_text(split) -> str:
    n = split_size(split)
    return "a stream" if n is None else f"{n:,}"


def start_banner(trainer) -> str:
    """What is about to train, in a few lines: data and split sizes, device, processes, precision, student and
    teachers, steps, output folder."""
    args, acc, state = trainer.args, trainer.accelerator, trainer.state
    data = trainer.dataset_info.get("id") or "in-memory dataset"
    evaluation = (f", {_size_text(trainer.eval_dataset)} eval" if trainer.eval_dataset is not None
                  else ", no eval split")
    precision = acc.mixed_precision if acc.mixed_precision != "no" else "fp32"
    if args.teacher_dtype:
        precision += f" (teachers {args.teacher_dtype})"
    if trainer.teacher_cache is not None:
        # the cache the trainer opened: given as an argument, args.teacher_cache is None
        teachers = f"teacher cache {trainer.teacher_cache.source}"
    else:
        teachers = ", ".join(t.name for t in trainer.teachers) or "none"
    length = (f"{state.num_epochs} epoch(s) x {trainer.steps_per_epoch} steps = " if not trainer._streamed
              else "streamed: ")
    steps = (f"{length}{state.max_steps} optimizer steps"
             + (f", resuming at step {state.global_step}" if state.global_step else ""))
    k, batch = args.crops_per_image, args.per_device_train_batch_size
    if k > 1:  # the batch counts views: say how many images a batch and an epoch hold
        images = len(trainer.train_dataset)
        steps += (f"\n{'':>11}batches of {batch} views = {batch // k} images x {k} views per decode "
                  f"(crops_per_image{', dealt to consecutive batches' if args.spread_crops else ', side by side'}); "
                  f"an epoch: {images:,} images, {images * k:,} views")
    rows = [("method", trainer.method.name),
            ("data", f"{data}: {_size_text(trainer.train_dataset)} train{evaluation}"),
            ("labels", labels_text(trainer)),
            ("device", f"{acc.device}, {acc.num_processes} process(es), {precision}"),
            ("student", f"{trainer.student.name} ({trainer.student.num_parameters():,} parameters)"),
            ("teachers", teachers), ("steps", steps), ("output", args.output_dir)]
    return "\n".join(f"{name:>9}: {value}" for name, value in rows)


def labels_text(trainer) -> str:
    """The student's classes and where their names come from (``--label_names``, the dataset, a teacher)."""
    names, source = trainer.student.label_names, trainer.label_source()
    text = (f"{len(names)} names" + (f" from {source}" if source else "") if names
            else f"{trainer.student.num_classes} unnamed classes")
    return text + ("; the train split has no labels" if trainer.label_column is None else "")


class ProgressCallback(TrainerCallback):
    """On the main process: a start banner, a tqdm bar over optimiser steps, rounded metrics, the training time
    at the end, and where the student was saved."""

    def __init__(self):
        self.bar = None
        self.start = None

    def on_train_begin(self, trainer):
        from tqdm.auto import tqdm

        main = trainer.accelerator.is_main_process
        if main:
            print(start_banner(trainer), flush=True)
        self.start = time.perf_counter()
        disable = trainer.args.disable_tqdm or not main
        self.bar = tqdm(total=trainer.state.max_steps, initial=trainer.state.global_step, disable=disable,
                        desc=f"{trainer.method.name}", dynamic_ncols=True)

    def on_step_end(self, trainer):
        if self.bar is not None:
            self.bar.update(trainer.state.global_step - self.bar.n)

    def on_log(self, trainer, logs):
        if self.bar is not None and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs.get('learning_rate', 0):.3g}")

    def on_evaluate(self, trainer, metrics):
        if self.bar is not None and not self.bar.disable:
            self.bar.write(f"[step {trainer.state.global_step}] {metrics_text(metrics)}")

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if trainer.accelerator.is_main_process and self.start is not None:
            took = format_duration(time.perf_counter() - self.start)
            print(f"trained {trainer.state.global_step} optimizer steps in {took}", flush=True)

    def on_save_model(self, trainer, output_dir):
        if trainer.accelerator.is_main_process:
            print(f"student saved to {output_dir}", flush=True)
