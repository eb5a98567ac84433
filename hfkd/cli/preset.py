"""The demo preset: the embedded digits' settings, applied only to the embedded data and only where not given.

Importing this module imports no torch: the commands build their parsers, and answer ``--help``, with it.
The demo models the preset names (teachers, MEAL V2's starting student) are trained and cached by
:mod:`hfkd.cli.demo`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..data.augment import AugmentConfig
from ..data.default import DEFAULT_DATASET
from ..methods.registry import normalize_name
from ..output_dir import STUDENT_METADATA_FILE, run_outputs

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
# `hfkd benchmark`'s regime on the digits: the students train on 5 labelled images per class of each fold's training
# part (the teachers on all of it), for the optimizer steps their demo settings make on the whole part.  With 20 or
# 10 labels per class the no-KD baseline was still at 96-97 / 94 %; with the demo's 4 epochs over 20 per class
# (16 steps) it stayed at chance.  Chosen before any other method ran, on the baseline and classic KD only
# (seed 0, folds 0-1; the numbers in docs/benchmark.md).
DEMO_LABELS_PER_CLASS = 5
DEMO_EQUAL_STEPS = True
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
