"""``--dry_run``: what a command would do, without training (settings, model sizes, step counts)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict

from ..hub.card import local_checkpoint_name
from ..launch import num_processes
from ..models.factory import create_backbone
from .parser import settings_text
from .pipeline import build_student, load_data
from .workflows import RunSettings, get_workflow


def _steps(settings: RunSettings, data, method) -> Dict[str, Any]:
    args = settings.training
    world = num_processes()
    labels = data.train[data.label_column]
    sampler = method.train_batch_sampler(labels, args.per_device_train_batch_size, args.seed)
    if sampler is not None:
        batches = math.ceil(len(sampler) / world)
    else:
        per_process = math.ceil(len(labels) / world)
        divide = math.floor if args.dataloader_drop_last else math.ceil
        batches = max(1, divide(per_process / args.per_device_train_batch_size))
    per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
    total = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs) * per_epoch
    epochs = math.ceil(total / per_epoch)
    return {"processes": world, "train_images": len(labels), "steps_per_epoch": per_epoch, "epochs": epochs,
            "total_steps": total}


def dry_run(settings: RunSettings) -> Dict[str, Any]:
    """Print the resolved settings, the parameter counts of student and teachers and the step counts."""
    print(f"method: {settings.method}\n{settings_text(settings.groups())}\n")
    if settings.data.aug_preset == "cifar":  # every field is printed; say which one is idle
        print("aug_scale is not used by aug_preset 'cifar' (RandomCrop after padding, no resized crop)")
    report: Dict[str, Any] = {"method": settings.method}
    method = settings.create_method()
    try:
        data = load_data(settings.data, seed=settings.training.seed)
    except Exception as e:  # noqa: BLE001 - a dry run reports what it cannot check instead of failing
        print(f"dataset {settings.data.dataset!r} could not be loaded here ({type(e).__name__}: {e}); the "
              "parameter counts below use the models' own heads and the step counts follow from its size")
        data = None
    if data is not None:
        student = build_student(settings.model, data)
        report.update(num_classes=data.num_classes, **_steps(settings, data, method))
    else:
        student = create_backbone(settings.model.student, pretrained=False, image_size=settings.model.image_size)
    report["student"] = {"name": settings.model.student, "parameters": student.num_parameters()}
    report["teachers"] = []
    try:  # the demo teachers are named, not trained: a run trains them first if they are not cached
        teachers = get_workflow(settings.method).teachers(settings, False)
    except ValueError as e:  # what the run itself refuses
        report["missing_teachers"] = True
        print(f"{e}; the run would stop here")
        teachers = []
    if settings.training.teacher_cache:  # its stored outputs stand in for the teachers: none is loaded
        source = settings.training.teacher_cache
        report["teacher_cache"] = local_checkpoint_name(os.path.abspath(source)) if os.path.isdir(source) else source
        print(f"teacher cache: {report['teacher_cache']} (no teacher is loaded)")
    for name in teachers:
        try:
            params = create_backbone(name, pretrained=False).num_parameters()
        except Exception as e:  # noqa: BLE001
            params = f"unknown ({type(e).__name__}: {e})"
        report["teachers"].append({"name": os.path.basename(name.rstrip("/")) if os.path.isabs(name) else name,
                                   "parameters": params})
    print(f"student {report['student']['name']}: {_count(report['student']['parameters'])} parameters")
    for t in report["teachers"]:
        print(f"teacher {t['name']}: {_count(t['parameters'])} parameters")
    if "total_steps" in report:
        print(f"{report['train_images']} training images, {report['processes']} process(es): "
              f"{report['steps_per_epoch']} optimizer steps per epoch, {report['total_steps']} in total "
              f"({report['epochs']} epochs)")
    else:  # the dataset is not here (e.g. offline): the formula, with the numbers it does know
        report.update(_step_formula(settings))
        print(report["step_formula"])
    print("dry run: nothing was trained")
    return report


def _step_formula(settings: RunSettings) -> Dict[str, Any]:
    args = settings.training
    world = num_processes()
    batch = args.per_device_train_batch_size * world * args.gradient_accumulation_steps
    length = f"{args.max_steps} optimizer steps" if args.max_steps > 0 else f"{int(args.num_train_epochs)} epochs"
    text = (f"{world} process(es) x {args.per_device_train_batch_size} images x "
            f"{args.gradient_accumulation_steps} accumulation = {batch} images per optimizer step: "
            f"ceil(N / {batch}) steps per epoch for N training images (an approximation for methods with their "
            f"own batch sampler), {length}")
    return {"processes": world, "images_per_step": batch, "step_formula": text}


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)
