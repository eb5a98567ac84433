"""The embedded demo: the preset the commands apply, and the models it trains once and caches.

Everything here runs offline on the embedded digits at 32x32 in minutes on two CPU cores.
Demo models (teachers, MEAL V2's starting student, the regression teacher, the compression
demo's KD student) are trained once and cached in ``$HFKD_CACHE`` (default ``~/.cache/hfkd``) in
timm's native format, in folders whose names record their training settings, then loaded like
any Hub model.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..data.augment import AugmentConfig
from ..data.default import DEFAULT_DATASET
from ..data.loading import load_image_dataset
from ..data.rotated_digits import load_rotated_digits
from ..methods.registry import create_method, normalize_name
from ..output_dir import STUDENT_METADATA_FILE, run_outputs
from ..tasks import RegressionTask
from ..training.args import DistillationArguments
from ..training.trainer import DistillationTrainer
from .arguments import ModelArguments
from .pipeline import build_student

DEMO_IMAGE_SIZE = 32
# Small CIFAR-style networks (hfkd/models/cifar.py): a 3x3 stride-1 stem and no max-pool, so that at 32 px the
# last feature map stays 8x8 (an ImageNet network's stride-32 stem leaves 1x1, with nothing spatial for FEED to
# transfer).  The student is a ResNet-8 (0.08M parameters, 64x8x8 map); the teachers are two different
# architectures, a ResNet-20 (0.27M, option-A shortcuts) and a wide pre-activation WRN-16-2 (0.69M).
DEMO_STUDENT = "cifar_resnet8"
# Teacher -> epochs it needs to be a good teacher on the digits.
DEMO_TEACHERS = {"cifar_resnet20": 6, "cifar_wrn16_2": 6}
DEFAULT_TEACHER_EPOCHS = 6  # any other model trained by demo_teachers (e.g. MEAL V2's student initialisation)
# Extracurricular learning's demo distils one teacher (the first demo teacher), as in the paper's abstract.
EXTRACURRICULAR_TEACHER = "cifar_resnet20"
# The regression demo's teacher -> epochs.  Trained for 6 epochs, like the classification teachers, the ResNet-20
# (MAE 5.2 degrees) was worse than the students it was to teach (ResNet-8 baselines: 4.3), which makes "gap closed"
# meaningless; 20 epochs (460 steps) train it further.
REGRESSION_TEACHERS = {"cifar_resnet20": 20}
DEMO_KD_EPOCHS = 4  # the compression demo's KD student: recipes/kd.py's demo settings
# AdamW's step is bounded by the learning rate, and these small BatchNorm networks need their logits to grow: at
# 2e-3 the ResNet-8 was still under-confident after 4 epochs (92.5 %, NLL 0.98, ECE 51 %).  On seed 42 (not a
# reported seed) the no-KD baseline gave 2e-3: 92.50 %, 5e-3: 95.00, 1e-2: 97.22 (NLL 0.215), 2e-2: 97.22 (0.199);
# SGD momentum lr 0.1 / 0.05 with weight decay 5e-4: 84.72 / 90.83.  Chosen on the baseline alone, not on KD.
DEMO_LEARNING_RATE = 1e-2
# Digits are not mirror-symmetric and lose their strokes under tiny crops.
DEMO_AUGMENT = AugmentConfig(scale=(0.6, 1.0), hflip=0.0, color_jitter=None)


# -- the preset: what the commands run on the embedded data ----------------------------------------------
# The embedded digits at 32 px, the demo student, the cached demo teachers, a no-KD baseline to compare with.
# It applies only when the data is the embedded digits (the default --dataset, or named), and only to the settings
# the user did not give; any other data gets the library's defaults (the settings dataclasses') and the student's
# own preprocessing.  This is the one source of the demo's settings: recipes/configs/*_demo.yaml spell it out and
# tests/test_real_runs.py checks that they parse to the same settings.
_DEMO_COMMON: Dict[str, Any] = dict(
    student=DEMO_STUDENT, student_pretrained=False, image_size=DEMO_IMAGE_SIZE, learning_rate=DEMO_LEARNING_RATE,
    weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale), aug_hflip=DEMO_AUGMENT.hflip,
    aug_color_jitter=DEMO_AUGMENT.color_jitter, baseline=True)
DEMO_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "kd": dict(num_train_epochs=4),
    # MEAL V2 fine-tunes the demo student from its cached supervised weights, at half the from-scratch
    # learning rate.  The crops are stronger than the teachers' (scale 0.25-1 instead of 0.6-1): the paper
    # trains with RandomResizedCrop (0.08-1), where the teachers' soft labels describe what is left in the
    # crop and the hard label may not.
    "meal_v2": dict(num_train_epochs=6, learning_rate=DEMO_LEARNING_RATE / 2, aug_scale=[0.25, 1.0]),
    # PS-KD regularises a whole training run: with 8 epochs the (earlier, mobilenetv3_small_050) student was still
    # underfitting when a_t grew and PS-KD lost 2.9 points (3 seeds); 20 epochs let the baseline reach ~99 % first
    # (docs/pskd.md, "Demo").
    "pskd": dict(num_train_epochs=20, eval_strategy="no"),
    # Batch 128 = 64 anchor+partner pairs, against a baseline at batch 64: both make 23 iterations per epoch.
    "bake": dict(num_train_epochs=8, per_device_train_batch_size=128, learning_rate=2 * DEMO_LEARNING_RATE,
                 eval_strategy="no"),
    # FEED transfers the last feature maps, 64x8x8 (student) to 64x8x8 and 128x8x8 (teachers): Factor Transfer's
    # beta = 500 for 8x8 CIFAR ResNet maps is used as it is, not tuned on the digits (docs/feed.md).
    "feed": dict(num_train_epochs=8),
    # Extracurricular learning: the students train on the first 256 training digits (the cached teacher saw all of
    # them) for 6 epochs of 32 (48 steps), where a wide teacher-student gap is left for KD to close.  Temperature
    # and alpha are classic KD's demo values; nothing was chosen on the validation split (docs/extracurricular.md).
    "extracurricular": dict(num_train_epochs=6, max_train_samples=256, per_device_train_batch_size=32),
    # `hfkd train`: a demo teacher architecture, checkpointed every epoch.
    "supervised": dict(student="cifar_resnet20", num_train_epochs=6, save_strategy="epoch"),
}
# Demos a run option switches to: {method: {option: settings}}, applied when the settings say `option: true`.
# The extracurricular regression demo needs more steps: on 256 digits for 48 steps the students' training NLL was
# still far above the teacher's (5.6 vs -0.2 at step 40), so it trains on all 1,437 rotated digits (270 steps).
DEMO_VARIANTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "extracurricular": {"regression": dict(max_train_samples=0, output_dir="outputs/extracurricular_regression")},
}


def is_demo_data(dataset: Optional[str]) -> bool:
    """Whether ``dataset`` is the embedded digits (the default ``--dataset``), the only data the preset is for."""
    return dataset is None or dataset == DEFAULT_DATASET


def demo_preset(method: str, given: Mapping[str, Any] = {}) -> Dict[str, Any]:  # noqa: B006 - read only
    """The demo's settings for ``method`` (output in ``outputs/<method>``; ``outputs/train`` for supervised),
    with the variant an option in the ``given`` settings switches on (``DEMO_VARIANTS``)."""
    key = normalize_name(method)
    out = "train" if key == "supervised" else key
    variants = [v for option, v in DEMO_VARIANTS.get(key, {}).items() if given.get(option)]
    return {**_DEMO_COMMON, "output_dir": f"outputs/{out}", **DEMO_DEFAULTS.get(key, {}),
            **{k: v for variant in variants for k, v in variant.items()}}


def cache_preset(given: Mapping[str, Any] = {}) -> Dict[str, Any]:  # noqa: B006 - read only
    """``hfkd cache``'s demo: the MEAL V2 demo's student and augmentation, one stored view per epoch of it."""
    meal_v2 = demo_preset("meal_v2")
    keys = ("student", "student_pretrained", "image_size", "aug_scale", "aug_hflip", "aug_color_jitter")
    return dict({k: meal_v2[k] for k in keys}, num_views=meal_v2["num_train_epochs"])


# ``hfkd compress``'s demo.  Recovery fine-tunes a trained student: half the from-scratch learning rate, as the
# MEAL V2 demo does.
COMPRESS_PRESET = dict(output_dir="outputs/compress", num_train_epochs=4, learning_rate=DEMO_LEARNING_RATE / 2,
                       weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale),
                       aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)


def earlier_demo_run(output_dir: str) -> List[str]:
    """hfkd's outputs in ``output_dir`` when they are all an earlier demo run's (its students on the embedded
    digits, and checkpoints beside such a student); ``[]`` when there are none or any may be someone else's."""
    outputs = run_outputs(output_dir, nested=True)
    students, checkpoints = outputs["students"], outputs["checkpoints"]
    demo_folders = set()
    for student in students:
        try:
            with open(os.path.join(student, STUDENT_METADATA_FILE), encoding="utf-8") as f:
                dataset = (json.load(f).get("dataset") or {}).get("id")
        except (OSError, ValueError, AttributeError):
            return []
        if dataset != DEFAULT_DATASET:
            return []
        demo_folders.add(os.path.dirname(student))
    # A checkpoint counts as the demo's only beside a finished demo student (a killed run's may be anyone's).
    if any(os.path.dirname(c) not in demo_folders for c in checkpoints):
        return []
    return students + checkpoints


class Preset:
    """A command's preset as ``parse_args`` calls it: ``preset(given) -> settings``, empty unless the data is the
    embedded digits; remembers what it set (``applied``) so that the dry run and the run can say so.

    On the embedded data the preset also replaces the preset's own earlier demo run in its output folder
    (``overwrite_output_dir``), and only then: a second ``make demo`` works, and nothing else is ever replaced.
    """

    def __init__(self, values: Callable[[Mapping[str, Any]], Mapping[str, Any]], types: Sequence[type] = ()):
        self.values = values
        # the options of the command's settings groups: what the preset may set (e.g. `hfkd train` has no baseline)
        self.fields = {f.name for t in types for f in dataclasses.fields(t) if f.init} or None
        self.applied: Dict[str, Any] = {}
        self.replaces: List[str] = []
        self.output_dir: Optional[str] = None

    def __call__(self, given: Mapping[str, Any]) -> Dict[str, Any]:
        self.applied, self.replaces, self.output_dir = {}, [], None
        if not is_demo_data(given.get("dataset")):
            return {}
        values = {k: v for k, v in self.values(given).items() if self.fields is None or k in self.fields}
        output_dir = self.output_dir = given.get("output_dir", values.get("output_dir"))
        can_replace = self.fields is None or "overwrite_output_dir" in self.fields
        if output_dir and can_replace and "overwrite_output_dir" not in given and not given.get("resume_from_checkpoint"):
            self.replaces = earlier_demo_run(output_dir)
            if self.replaces:
                values["overwrite_output_dir"] = True
        self.applied = {k: v for k, v in values.items() if k not in given}
        return values

    def describe(self) -> List[str]:
        """The lines the dry run and the run print: what the demo preset set, and what it replaces."""
        applied = self.applied
        if not applied:
            return []
        lines = [f"demo preset (embedded {DEFAULT_DATASET}; only what was not given): "
                 + ", ".join(f"{k}={v!r}" for k, v in applied.items() if k != "overwrite_output_dir")]
        if self.replaces:
            lines.append(f"demo preset: replacing the earlier demo run in {self.output_dir} "
                         f"({len(self.replaces)} of hfkd's own outputs; nothing else there is touched)")
        return lines


# -- the demo models: trained once, cached ----------------------------------------------------------
def cache_dir() -> str:
    return os.environ.get("HFKD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hfkd"))


def demo_args(output_dir: str, **overrides) -> DistillationArguments:
    kwargs: Dict[str, Any] = dict(output_dir=output_dir, per_device_train_batch_size=64, learning_rate=DEMO_LEARNING_RATE,
                                  weight_decay=0.05, save_strategy="no", eval_strategy="no", logging_steps=10)
    kwargs.update(overrides)
    return DistillationArguments(**kwargs)


def demo_cache_path(folder: str, name: str, epochs: int, seed: int = 0, task: str = "") -> str:
    """Where a model the demo trains is cached: ``$HFKD_CACHE/<folder>/<name>-<task>digits32-e<epochs>-lr<lr>-seed<s>``.

    The folder names the training settings, so a cache made with other demo settings is never reused.
    """
    tag = f"{task}digits{DEMO_IMAGE_SIZE}-e{epochs}-lr{DEMO_LEARNING_RATE:g}-seed{seed}"
    return os.path.join(cache_dir(), folder, f"{name}-{tag}")


def demo_teacher_path(name: str, seed: int = 0) -> str:
    """Where the demo teacher ``name`` is cached (it may not be trained yet)."""
    return demo_cache_path("demo_teachers", name, DEMO_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed)


def regression_teacher_path(name: str, task: RegressionTask, seed: int = 0) -> str:
    """Where the regression demo's teacher ``name`` is cached (it may not be trained yet)."""
    return demo_cache_path("demo_teachers", name, REGRESSION_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed,
                           task=f"rotation{task.target_scale:g}-")


def demo_student_path(seed: int = 0) -> str:
    """Where the compression demo's KD student is cached (it may not be trained yet)."""
    return demo_cache_path("demo_students", DEMO_STUDENT, DEMO_KD_EPOCHS, seed, task="kd-")


def regression_task(max_angle: float) -> RegressionTask:
    """One target, the angle in degrees, predicted in units of ``max_angle``."""
    return RegressionTask(num_targets=1, target_scale=max_angle)


def train_demo_model(model: str, data, output_dir: str, num_epochs: int, seed: int = 42, task=None,
                     method: str = "supervised", teachers: Sequence[str] = (), **arg_overrides) -> DistillationTrainer:
    """Train ``model`` from scratch at 32 px with the demo's settings: cross-entropy (or ``task``'s loss, e.g. a
    regression task's Gaussian NLL), or ``method`` from ``teachers``; returns the evaluated trainer."""
    # The seed fixes the initialisation too, so that a cached model does not depend on what ran before.
    student = build_student(ModelArguments(student=model, student_pretrained=False, image_size=DEMO_IMAGE_SIZE), data, seed=seed, task=task)
    args = demo_args(output_dir, num_train_epochs=num_epochs, seed=seed, **arg_overrides)
    trainer = DistillationTrainer(student, teachers=list(teachers), method=create_method(method), args=args,
                                  train_dataset=data.train, eval_dataset=data.eval, augment=DEMO_AUGMENT, task=task,
                                  image_column=data.image_column, label_column=data.label_column)
    trainer.train()
    trainer.evaluate()  # so that a cached model's card and hfkd.json carry its metrics
    return trainer


def cached(path: str, train: Callable[[str], DistillationTrainer]) -> str:
    """``path``, trained (``train(scratch_folder)``) and saved there the first time it is asked for."""
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        train(path + ".run").save_model(path)
    return path


def _demo_models(paths: Mapping[str, str], epochs: Mapping[str, int], load: Callable, seed: int, train: bool,
                 task: Optional[RegressionTask] = None) -> List[str]:
    """``paths`` (name -> folder), each model trained from scratch for its ``epochs`` on ``load()`` where missing.

    The data is loaded once, and only when a model has to be trained; ``train=False`` trains nothing.
    """
    if train:
        data = functools.lru_cache(maxsize=1)(load)
        for name, path in paths.items():
            cached(path, lambda out, name=name: train_demo_model(
                name, data(), out, epochs.get(name, DEFAULT_TEACHER_EPOCHS), seed=seed, task=task))
    return list(paths.values())


def demo_teachers(names: Optional[Sequence[str]] = None, seed: int = 0, train: bool = True) -> List[str]:
    """Folders of the demo teachers, trained on all the training digits (and cached) where missing.

    Always with the demo's settings, which the folder names: other settings would need another folder.
    ``train=False`` gives the folders without training anything (a dry run).
    """
    paths = {name: demo_teacher_path(name, seed) for name in names or DEMO_TEACHERS}
    return _demo_models(paths, DEMO_TEACHERS, load_image_dataset, seed, train)


def regression_demo_teachers(task: RegressionTask, names: Optional[Sequence[str]] = None, seed: int = 0,
                             train: bool = True) -> List[str]:
    """Folders of the Gaussian-head demo teachers, trained on all the rotated digits (and cached) where missing."""
    paths = {name: regression_teacher_path(name, task, seed) for name in names or REGRESSION_TEACHERS}
    return _demo_models(paths, REGRESSION_TEACHERS, lambda: load_rotated_digits(max_angle=task.target_scale), seed,
                        train, task)


def demo_student(seed: int = 0) -> str:
    """The compression demo's student: ``recipes/kd.py``'s demo (KD from the demo teachers), trained once and cached."""
    return cached(demo_student_path(seed), lambda out: train_demo_model(
        DEMO_STUDENT, load_image_dataset(), out, DEMO_KD_EPOCHS, seed=seed, method="kd", teachers=demo_teachers()))


def resolve_teachers(teachers: Sequence[str], dataset: str, *, what: str, needed: bool = True,
                     names: Optional[Sequence[str]] = None, task: Optional[RegressionTask] = None,
                     train: bool = True, hint: str = "") -> List[str]:
    """The teachers a command loads: the given ones; none when it needs none; else the demo's, on the embedded digits.

    Anywhere else a run without teachers is refused (the demo teachers only know the digits).  ``names`` picks
    demo teachers, ``task`` the regression demo's; ``train=False`` names the demo's folders without training them.
    """
    teachers = list(teachers)
    if teachers or not needed:
        return teachers
    if dataset != DEFAULT_DATASET:
        raise ValueError(f"no --teachers given: {what} on {dataset} needs teachers trained on it (pass --teachers "
                         f"PATH ...); the cached demo teachers only know the embedded demo data{hint}")
    if task is not None:
        return regression_demo_teachers(task, names, train=train)
    return demo_teachers(names, train=train)
