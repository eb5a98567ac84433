"""Every check of a run before its first training step, the no-KD baseline's included.

The output folder, the dataset and its splits, the student (its pretrained weights), every teacher (weights
loadable, classes and label names against the student's) and the teacher cache are resolved and checked here,
in that order, before anything trains or is written.  A real run stops on the first list of problems, naming each;
the dry run prints them and exits non-zero.  Nothing here trains, except the demo's own teachers on the embedded
digits when a real run needs them (they are trained once and cached; a dry run only names them).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from ..cache.lookup import check_crops_per_image, open_teacher_cache
from ..data.device_decode import tensor_transform
from ..data.labels import FROM_OPTION
from ..data.transforms import create_image_transform
from ..launch import is_main_process
from ..methods.base import without_labels_problem
from ..methods.registry import get_method_class
from ..models.backbone import Backbone
from ..models.factory import create_backbone, is_zero_shot_source, run_folder_student, saved_num_classes
from ..output_dir import OutputDirError, OutputDirLock, check_output_dir, remove_run_outputs
from ..settings import cut, shorten
from ..training.fsdp import launch_problems
from ..training.streaming import check_stream_run
from .demo import DEMO_STUDENT, cache_dir, demo_teacher_path
from .pipeline import build_student, build_teacher
from .workflows import RunSettings, get_workflow
from .workflows.base import run_data

# Subfolders of a run (baseline/, seed_N/, generation_N/ ...) are part of its output folder.
NESTED = True


@dataclass
class Checked:
    """What the checks resolved, and what they could not."""

    data: Any = None
    student: Optional[Backbone] = None
    #: the teachers the run loads, as given or as the demo's cached folders
    teachers: List[str] = field(default_factory=list)
    #: teacher -> parameter count (``None`` when it could not be loaded)
    teacher_sizes: Dict[str, Optional[int]] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _why(e: BaseException, limit: int = 500) -> str:
    return f"{type(e).__name__}: {cut(str(e), limit)}"


def _is_demo_model(path: str) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(cache_dir()) + os.sep)


def _looks_like_a_folder(name: str) -> bool:
    # A Hub id is ORG/NAME; a path starts with ./ ../ / ~ or has more parts.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _teacher_problem(name: str, e: BaseException) -> str:
    if not os.path.exists(name) and _looks_like_a_folder(name):
        return (f"teacher {shorten(name)} cannot be loaded: there is no folder {shorten(name)} (a teacher is a timm "
                "name, a Hub id ORG/NAME, a saved model folder or the output folder of an `hfkd train` run)")
    if isinstance(e.__cause__, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return (f"teacher {shorten(name)} cannot be loaded offline: its weights are not in the local cache; go online "
                "once (HF_HUB_OFFLINE=0) to download them, or give a local folder")
    return f"teacher {shorten(name)} cannot be loaded: {_why(e)}"


def check_teacher(settings: RunSettings, student: Backbone, name: str, index: int, checked: Checked) -> None:
    """Load teacher ``name`` and check its classes and label names against ``student``'s; record its size."""
    if _is_demo_model(name) and not os.path.isfile(os.path.join(name, "model.safetensors")):
        arch = os.path.basename(name.rstrip("/")).split("-")[0]
        checked.notes.append(f"demo teacher {arch} is not in the cache yet ({cache_dir()}): it will be trained on "
                             "first use, then cached")
        checked.teacher_sizes[name] = create_backbone(arch, pretrained=False).num_parameters()
        return
    try:
        # feature_kd reads only the teachers' features: their classes need not be the student's
        check_classes = get_method_class(settings.method).reads_teacher_logits
        teacher = build_teacher(settings.model, student, name, index, check_classes)
    except Exception as e:  # noqa: BLE001 - every reason a teacher cannot be used is reported, with its name
        problem = _teacher_problem(name, e)
        if checked.data is not None and checked.data.label_source == FROM_OPTION and "the student predicts" in problem:
            problem += (f" (the student's {student.num_classes} classes are the names of --label_names: give one "
                        "name per class of the teacher, in the order of its outputs)")
        checked.problems.append(problem)
        checked.teacher_sizes[name] = None
        return
    checked.teacher_sizes[name] = teacher.backbone.num_parameters()
    if run_folder_student(name):
        checked.notes.append(f"teacher {shorten(name)} is a run's output folder: its saved student is loaded")
    prompts = teacher.backbone.source.get("prompt_templates")
    if teacher.backbone.source.get("zero_shot"):
        checked.notes.append(
            f"teacher {shorten(name)} is zero-shot (CLIP): its {teacher.backbone.num_classes} classes are the "
            f"student's label names {shorten(teacher.backbone.label_names)}, phrased by the prompts {shorten(prompts)}")


def check_run(settings: RunSettings, *, train_demo: bool) -> Checked:
    """Resolve and check everything the run needs (see the module docstring); ``train_demo`` trains missing demo
    teachers (a real run on the embedded digits), else they are only named."""
    checked = Checked()
    args, workflow = settings.training, get_workflow(settings.method)
    try:
        check_output_dir(args.output_dir, resume=bool(args.resume_from_checkpoint), overwrite=args.overwrite_output_dir,
                         nested=NESTED, check_lock=is_main_process())
    except OutputDirError as e:
        checked.problems.append(str(e))
    try:
        checked.data = run_data(settings, workflow.load)
    except Exception as e:  # noqa: BLE001 - a dataset that cannot be loaded, for any reason, stops the run here
        checked.problems.append(f"dataset {shorten(settings.data.dataset)} cannot be loaded: {_why(e)}")
    task = workflow.task(settings)
    # The teachers are checked against the student; when its pretrained weights cannot be loaded, against the same
    # architecture from random weights, so that one run of the checks names every problem.
    stand_in = None
    if checked.data is not None:
        try:
            checked.student = stand_in = build_student(settings.model, checked.data, task=task)
        except Exception as e:  # noqa: BLE001
            checked.problems.append(f"student {shorten(settings.model.student)} cannot be loaded: {_why(e)}")
            if settings.model.student_pretrained:
                try:
                    stand_in = build_student(dataclasses.replace(settings.model, student_pretrained=False),
                                             checked.data, task=task)
                except Exception:  # noqa: BLE001 - the architecture itself is unknown: reported above
                    stand_in = None
    saved = saved_num_classes(settings.model.student) if checked.student is not None else None
    if saved is not None and saved != checked.student.num_classes:
        what = "a backbone saved without a head" if saved == 0 else f"a classifier of {saved} classes"
        checked.notes.append(f"student {shorten(settings.model.student)} is {what}: it gets a new, randomly "
                             f"initialised head of {checked.student.num_classes} classes")
    method = settings.create_method()
    labels_ok = checked.data is None or check_labels(settings, method, workflow, checked.data, checked)
    if method.starts_from_trained_student and settings.model.student == DEMO_STUDENT and not settings.model.teachers:
        cached = os.path.isfile(os.path.join(demo_teacher_path(DEMO_STUDENT), "model.safetensors"))
        checked.notes.append(f"{settings.method} starts from the demo student trained with cross-entropy ("
                             + ("cached)" if cached else "not in the cache yet: it will be trained on first use)"))
    try:  # the demo teachers are trained (once, cached) only for a real run that has nothing else wrong
        checked.teachers = workflow.teachers(settings, train_demo and not checked.problems)
    except ValueError as e:  # what the run itself refuses (e.g. no --teachers on other data)
        checked.problems.append(str(e))
    extra = [t for t in [getattr(settings.run, "sequential_teacher", None)] if t]
    if stand_in is not None and labels_ok:
        for i, name in enumerate(checked.teachers):
            check_teacher(settings, stand_in, name, i, checked)
        for name in extra:  # FEED's generation-1 teacher
            check_teacher(settings, stand_in, name, len(checked.teachers), checked)
    if args.gpu_decode and stand_in is not None:
        try:  # the training transform must run on a decoded tensor on the GPU (the trainer refuses it too)
            tensor_transform(create_image_transform(stand_in.preprocess, True, settings.data.augment()))
        except ValueError as e:
            checked.problems.append(str(e))
    cache = None
    if checked.data is not None and checked.data.streamed:  # what a stream cannot do, listed with the rest
        try:
            check_stream_run(args, method, task, args.teacher_cache, checked.data.train, checked.data.eval)
        except ValueError as e:
            checked.problems += [line.strip()[2:] for line in str(e).splitlines()[1:]]
    if args.teacher_cache and checked.student is not None and checked.data is not None:
        data = checked.data  # a stream needs a cache keyed by sample key, of this stream (checked on open)
        try:
            cache = open_teacher_cache(
                args.teacher_cache, teachers=[], method=method, student=checked.student, train_dataset=data.train,
                image_column=data.image_column, label_column=data.label_column, label_names=data.label_names,
                augment=settings.data.augment(), seed=args.seed, sample_key_column=args.sample_key_column)
        except Exception as e:  # noqa: BLE001
            checked.problems.append(f"teacher cache {shorten(args.teacher_cache)} cannot be used: {_why(e)}")
    checked.problems += launch_problems(args)  # what FSDP cannot do with this run (hfkd/training/fsdp.py)
    streamed = checked.data is not None and checked.data.streamed  # check_stream_run refused K > 1 already
    if args.crops_per_image > 1 and not streamed and (cache is not None or not args.teacher_cache):
        _check_views_per_decode(settings, cache, method, checked)
    return checked


def _check_views_per_decode(settings: RunSettings, cache, method, checked: Checked) -> None:
    """crops_per_image > 1: a cache of enough views, and batches the trainer can split into views."""
    args, data = settings.training, checked.data
    own = data is not None and data.labelled("train") and method.train_batch_sampler(
        data.train[data.label_column], args.per_device_train_batch_size, args.seed) is not None
    try:
        check_crops_per_image(args.crops_per_image, cache, settings.method, own_batches=own)
    except ValueError as e:
        checked.problems.append(str(e))


def check_labels(settings: RunSettings, method, workflow, data, checked: Checked) -> bool:
    """Data without labels: only a method that reads none, no baseline nor other run of the workflow that trains on
    labels, and label names for a zero-shot teacher.  Returns whether the teachers can be checked against the
    student's classes."""
    if not data.labelled("train"):
        problem = without_labels_problem(method, data.train.features)
        if problem:
            checked.problems.append(problem)
        if getattr(settings.run, "baseline", False):
            checked.problems.append("--baseline trains the same student on the labels (cross-entropy), but the train "
                                    "split has none; leave --baseline out")
        elif workflow.labels_needed(settings):
            checked.problems.append(f"the train split has no labels, but {workflow.labels_needed(settings)}")
    if data.label_names is not None:
        return True
    revisions = list(settings.model.teacher_revisions)
    zero_shot = [t for i, t in enumerate(settings.model.teachers)
                 if is_zero_shot_source(t, revisions[i] if i < len(revisions) else None)]
    if zero_shot:
        what = "has no labels" if not data.labelled("train") else "labels its classes by number only"
        checked.problems.append(
            f"teacher {shorten(zero_shot[0])} is zero-shot (CLIP): it needs the class names to write its prompts, and "
            f"the data {what}; give them with --label_names cat dog 'red fox' ... or --label_names labels.txt (one "
            "name per line, in the order of the student's outputs)")
        return False
    return True


def claim_output_dir(settings: RunSettings) -> Optional[OutputDirLock]:
    """Lock the run's top folder for the whole command (main process) and, with ``--overwrite_output_dir``, remove
    hfkd's own outputs of the earlier run in it and its subfolders (nothing else)."""
    args = settings.training
    if not is_main_process():
        return None
    lock = OutputDirLock(args.output_dir).acquire()
    if args.overwrite_output_dir and not args.resume_from_checkpoint:
        for path in remove_run_outputs(args.output_dir, nested=NESTED):
            print(f"overwrite_output_dir: removed {os.path.relpath(path, args.output_dir)} of the earlier run",
                  flush=True)
    return lock


def problems_text(problems: List[str]) -> str:
    """The problems, one a line."""
    return "\n".join(f"  - {p}" for p in problems)
