"""``--dry_run``: what a command would do, without training (settings and where they come from, model sizes, step
counts) and what would stop it (:mod:`hfkd.cli.preflight`)."""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Dict

from ..cache.format import estimated_bytes_per_view
from ..data.transforms import NO_LABEL
from ..hub.card import local_checkpoint_name
from ..launch import num_processes
from ..models.backbone import OutputRequest
from ..models.factory import create_backbone
from .parser import settings_text
from .pipeline import label_source_text
from .preflight import check_run, problems_text
from .workflows import RunSettings


def _steps(settings: RunSettings, data, method) -> Dict[str, Any]:
    args = settings.training
    world = num_processes()
    if data.streamed:  # no known length: the run is max_steps long (the checks refuse a stream without it)
        return {"processes": world, "train_images": None, "steps_per_epoch": None, "epochs": None,
                "total_steps": args.max_steps if args.max_steps > 0 else "max_steps (not set)"}
    labels = data.train[data.label_column] if data.labelled("train") else [NO_LABEL] * len(data.train)
    sampler = method.train_batch_sampler(labels, args.per_device_train_batch_size, args.seed)
    if sampler is not None:
        batches = math.ceil(len(sampler) / world)
    else:
        per_process = math.ceil(len(labels) / world)
        divide = math.floor if args.dataloader_drop_last else math.ceil
        batches = max(1, divide(per_process / (args.per_device_train_batch_size // args.crops_per_image)))
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    total = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs) * per_epoch
    epochs = math.ceil(total / per_epoch)
    k = args.crops_per_image
    return {"processes": world, "train_images": len(labels), "views_per_image": k,
            "train_views_per_epoch": len(labels) * k, "images_per_batch": args.per_device_train_batch_size // k,
            "steps_per_epoch": per_epoch, "epochs": epochs, "total_steps": total}


def _views_text(args) -> str:
    """How a batch is made of views when each decoded image serves ``crops_per_image`` of them (else nothing)."""
    k, batch = args.crops_per_image, args.per_device_train_batch_size
    if k == 1:
        return ""
    layout = ("each image's views dealt to consecutive batches" if args.spread_crops
              else "each image's views side by side in one batch")
    return (f"{k} views per decoded image (crops_per_image): a batch of {batch} views loads {batch // k} images, "
            f"{layout}; an epoch is one pass over the images, {k} views of each (FKD counts it as {k} epochs)")


def dry_run(settings: RunSettings) -> Dict[str, Any]:
    """Print the resolved settings and where their defaults come from, the student's preprocessing, the parameter
    counts of student and teachers, the step counts, and what cannot be resolved; nothing is trained or written.

    Exits non-zero, after printing everything it could resolve, when the run would not start.
    """
    print(f"method: {settings.method}\n{settings_text(settings.groups())}\n")
    if settings.data.aug_preset == "cifar":  # every field is printed; say which one is idle
        print("aug_scale is not used by aug_preset 'cifar' (RandomCrop after padding, no resized crop)")
    report: Dict[str, Any] = {"method": settings.method}
    preset_lines = settings.preset.describe() if settings.preset else []
    report["demo_preset"] = dict(settings.preset.applied) if settings.preset else {}
    for line in preset_lines:
        print(line)
    if not preset_lines:
        print("defaults: the library's own (the settings dataclasses); the demo preset is only for the embedded "
              "demo data")
    checked = check_run(settings, train_demo=False)
    method = settings.create_method()
    if checked.data is not None:
        report.update(num_classes=checked.data.num_classes, **_steps(settings, checked.data, method))
        report["label_source"] = label_source_text(checked.data)
        print(report["label_source"])
    student = checked.student
    if student is None:  # the data or the student's weights are missing: its size with the model's own head
        try:
            student = create_backbone(settings.model.student, pretrained=False, image_size=settings.model.image_size)
        except Exception:  # noqa: BLE001 - already reported as a problem
            student = None
    report["student"] = {"name": settings.model.student,
                         "parameters": student.num_parameters() if student is not None else None}
    if student is not None:
        pre = student.preprocess
        source = "image_size as set, the rest from the student's own configuration" if settings.model.image_size \
            else "the student's own pretrained configuration"
        report["preprocess"] = pre.to_dict()
        print(f"student preprocessing (from {source}): {pre.input_size[1]}x{pre.input_size[2]} px, "
              f"{pre.interpolation}, crop_pct {pre.crop_pct:g}, mean {list(pre.mean)}, std {list(pre.std)}")
    if settings.training.teacher_cache:  # its stored outputs stand in for the teachers: none is loaded
        source = settings.training.teacher_cache
        report["teacher_cache"] = local_checkpoint_name(os.path.abspath(source)) if os.path.isdir(source) else source
        print(f"teacher cache: {report['teacher_cache']} (no teacher is loaded)")
    report["teachers"] = [{"name": _teacher_name(name), "parameters": params}
                          for name, params in checked.teacher_sizes.items()]
    print(f"student {report['student']['name']}: {_count(report['student']['parameters'])} parameters")
    for t in report["teachers"]:
        print(f"teacher {t['name']}: {_count(t['parameters'])} parameters")
    if "total_steps" in report and report["train_images"] is None:
        steps = report["total_steps"]
        print(f"a streamed train split, {report['processes']} process(es): "
              + (f"{steps} optimizer steps (max_steps)" if isinstance(steps, int) else "max_steps is not set")
              + "; an epoch is one pass over each process's shards")
    elif "total_steps" in report:
        views = (f" ({report['train_views_per_epoch']} views per epoch)" if report["views_per_image"] > 1 else "")
        print(f"{report['train_images']} training images{views}, {report['processes']} process(es): "
              f"{report['steps_per_epoch']} optimizer steps per epoch, {report['total_steps']} in total "
              f"({report['epochs']} epochs)")
    else:  # the dataset is not here (e.g. offline): the formula, with the numbers it does know
        report.update(_step_formula(settings))
        print(report["step_formula"])
    if _views_text(settings.training):
        print(_views_text(settings.training))
    for note in checked.notes:
        print(note)
    teachers = len(report["teachers"])
    if teachers and not settings.training.teacher_cache:
        num_classes = report.get("num_classes") or (student.num_classes if student is not None else None)
        # A cache stores logits: a method reading the teachers' features (feature_kd) runs them at every step.
        cacheable = settings.create_method().teacher_request == OutputRequest()
        report["teacher_cost"] = _teacher_cost(teachers, num_classes if cacheable else None, report.get("epochs"),
                                               cacheable)
        print(report["teacher_cost"]["text"])
    report["problems"] = checked.problems
    print("dry run: nothing was trained")
    if checked.problems:
        sys.exit(f"dry run: the run would not start:\n{problems_text(checked.problems)}")
    return report


def _teacher_cost(teachers: int, num_classes, epochs, cacheable: bool = True) -> Dict[str, Any]:
    """What the teachers cost at real size: forwards per image, and a teacher cache's size per million images."""
    cost: Dict[str, Any] = {"teacher_forwards_per_image_per_epoch": teachers}
    text = (f"teacher cost: {teachers} teacher forward(s) per training image per epoch"
            + (f", {teachers * epochs} per image over the {epochs} epochs" if epochs else "")
            + (f"; a teacher cache pays {teachers} per stored view, once (hfkd cache, docs/teacher_cache.md)"
               if cacheable else "; this method reads the teachers' features, which a teacher cache does not store "
                                 "(logits only); --teacher_dtype bf16 halves their memory"))
    if num_classes:
        sizes = {f"top{k}" if k else "full": estimated_bytes_per_view(teachers, num_classes, k, "float16") * 1e6
                 for k in (5, 10, None) if not k or k < num_classes}
        cost["cache_bytes_per_million_views_float16"] = sizes
        text += ("\n  its size per 1M images and view, float16: "
                 + ", ".join(f"{name} {_gigabytes(size)}" for name, size in sizes.items()))
    return {**cost, "text": text}


def _gigabytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _teacher_name(name: str) -> str:
    return local_checkpoint_name(os.path.abspath(name)) if os.path.isdir(name) else name


def _step_formula(settings: RunSettings) -> Dict[str, Any]:
    args = settings.training
    world = num_processes()
    batch = args.per_device_train_batch_size * world * args.gradient_accumulation_steps
    length = f"{args.max_steps} optimizer steps" if args.max_steps > 0 else f"{int(args.num_train_epochs)} epochs"
    k = args.crops_per_image
    if k == 1:
        text = (f"{world} process(es) x {args.per_device_train_batch_size} images x "
                f"{args.gradient_accumulation_steps} accumulation = {batch} images per optimizer step: "
                f"ceil(N / {batch}) steps per epoch for N training images (an approximation for methods with their "
                f"own batch sampler), {length}")
    else:  # the batch counts views; an epoch passes over the images once, k views each
        text = (f"{world} process(es) x {args.per_device_train_batch_size} views x "
                f"{args.gradient_accumulation_steps} accumulation = {batch} views ({batch // k} images x {k} views "
                f"per decode) per optimizer step: ceil(N / {batch // k}) steps per epoch for N training images, "
                f"{length}")
    return {"processes": world, "images_per_step": batch // k, "views_per_step": batch, "step_formula": text}


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "unknown (cannot be loaded)" if n is None else str(n)
