"""The embedded demo shared by the recipes: cached teachers, baselines and a results table.

Everything here runs offline on the embedded digits at 32x32 in minutes on two
CPU cores.  Teachers are trained once and cached in ``$HFKD_CACHE`` (default
``~/.cache/hfkd``) in timm's native format, then loaded like any Hub teacher.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from .data.transforms import AugmentConfig

DEMO_IMAGE_SIZE = 32
# Small CIFAR-style networks (hfkd/models/cifar.py): a 3x3 stride-1 stem and no max-pool, so that at 32 px the
# last feature map stays 8x8 (an ImageNet network's stride-32 stem leaves 1x1, with nothing spatial for FEED to
# transfer).  The student is a ResNet-8 (0.08M parameters, 64x8x8 map); the teachers are two different
# architectures, a ResNet-20 (0.27M, option-A shortcuts) and a wide pre-activation WRN-16-2 (0.69M).
DEMO_STUDENT = "cifar_resnet8"
# Teacher -> epochs it needs to be a good teacher on the digits.
DEMO_TEACHERS = {"cifar_resnet20": 6, "cifar_wrn16_2": 6}
DEFAULT_TEACHER_EPOCHS = 6  # any other model trained by demo_teachers (e.g. MEAL V2's student initialisation)
# AdamW's step is bounded by the learning rate, and these small BatchNorm networks need their logits to grow: at
# 2e-3 the ResNet-8 was still under-confident after 4 epochs (92.5 %, NLL 0.98, ECE 51 %).  On seed 42 (not a
# reported seed) the no-KD baseline gave 2e-3: 92.50 %, 5e-3: 95.00, 1e-2: 97.22 (NLL 0.215), 2e-2: 97.22 (0.199);
# SGD momentum lr 0.1 / 0.05 with weight decay 5e-4: 84.72 / 90.83.  Chosen on the baseline alone, not on KD.
DEMO_LEARNING_RATE = 1e-2
# Digits are not mirror-symmetric and lose their strokes under tiny crops.
DEMO_AUGMENT = AugmentConfig(scale=(0.6, 1.0), hflip=0.0, color_jitter=None)


def cache_dir() -> str:
    return os.environ.get("HFKD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hfkd"))


def demo_args(output_dir: str, **overrides):
    from .training.args import DistillationArguments

    kwargs: Dict[str, Any] = dict(output_dir=output_dir, per_device_train_batch_size=64, learning_rate=DEMO_LEARNING_RATE,
                                  weight_decay=0.05, save_strategy="no", eval_strategy="no", logging_steps=10)
    kwargs.update(overrides)
    return DistillationArguments(**kwargs)


def train_supervised(model: str, data, output_dir: str, num_epochs: int, seed: int = 42,
                     image_size: int = DEMO_IMAGE_SIZE, task=None, **arg_overrides):
    """Train ``model`` from scratch with cross-entropy (or ``task``'s loss, e.g. a regression task's Gaussian NLL
    with its 2 outputs per target); returns (trainer, eval metrics)."""
    from accelerate.utils import set_seed

    from .models.factory import create_backbone
    from .training.trainer import DistillationTrainer

    set_seed(seed)  # the initialisation too, so that a cached teacher does not depend on what ran before
    if task is None:
        student = create_backbone(model, num_classes=data.num_classes, pretrained=False, image_size=image_size,
                                  label_names=data.label_names)
    else:
        student = create_backbone(model, num_classes=2 * task.num_targets, pretrained=False, image_size=image_size)
    args = demo_args(output_dir, num_train_epochs=num_epochs, seed=seed, **arg_overrides)
    trainer = DistillationTrainer(student, method="supervised", args=args, train_dataset=data.train,
                                  eval_dataset=data.eval, augment=DEMO_AUGMENT, task=task,
                                  image_column=data.image_column, label_column=data.label_column)
    trainer.train()
    return trainer, trainer.evaluate()


def demo_cache_path(folder: str, name: str, epochs: int, seed: int = 0, task: str = "") -> str:
    """Where a model the demo trains is cached: ``$HFKD_CACHE/<folder>/<name>-<task>digits32-e<epochs>-lr<lr>-seed<s>``.

    The folder names the training settings, so a cache made with other demo settings is never reused.
    """
    tag = f"{task}digits{DEMO_IMAGE_SIZE}-e{epochs}-lr{DEMO_LEARNING_RATE:g}-seed{seed}"
    return os.path.join(cache_dir(), folder, f"{name}-{tag}")


def demo_teacher_path(name: str, seed: int = 0) -> str:
    """Where the demo teacher ``name`` is cached (it may not be trained yet)."""
    return demo_cache_path("demo_teachers", name, DEMO_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed)


def demo_teachers(data, names: Optional[Sequence[str]] = None, seed: int = 0) -> List[str]:
    """Folders of the demo teachers, training (and caching) those that are missing.

    Always with the demo's settings, which the folder names: other settings would need another folder.
    """
    paths = []
    for name in names or DEMO_TEACHERS:
        path = demo_teacher_path(name, seed)
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            trainer, _ = train_supervised(name, data, os.path.join(path + ".run"),
                                          DEMO_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS), seed=seed)
            trainer.save_model(path)
        paths.append(path)
    return paths


# What ``hfkd distill --method NAME`` and ``recipes/NAME.py`` run with no other arguments: the embedded
# digits at 32 px, the demo student, the cached demo teachers.  Any flag or YAML value overrides these.
_DEMO_COMMON: Dict[str, Any] = dict(
    student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, learning_rate=DEMO_LEARNING_RATE, weight_decay=0.05,
    save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale), aug_hflip=DEMO_AUGMENT.hflip,
    aug_color_jitter=DEMO_AUGMENT.color_jitter)
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


# Demos a run option switches to: {method: {option: settings}}, applied when the command line says
# `--option true`.  The extracurricular regression demo needs more steps: on 256 digits for 48 steps the
# students' training NLL was still far above the teacher's (5.6 vs -0.2 at step 40), so it trains on all
# 1,437 rotated digits (270 steps).
DEMO_VARIANTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "extracurricular": {"regression": dict(max_train_samples=0, output_dir="outputs/extracurricular_regression")},
}


def flag_is_true(argv: Sequence[str], name: str) -> bool:
    """Whether ``argv`` says ``--name true`` (or ``--name=true``; also 1 / yes)."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1].lower() in ("true", "1", "yes")
        if a == f"--{name}":
            return i + 1 < len(argv) and argv[i + 1].lower() in ("true", "1", "yes")
    return False


def demo_defaults(method: str, argv: Sequence[str] = ()) -> Dict[str, Any]:
    """The demo's settings for ``method`` (output in ``outputs/<method>``; ``outputs/train`` for supervised),
    with the variant a command-line switch in ``argv`` selects (``DEMO_VARIANTS``)."""
    from .methods.registry import normalize_name

    key = normalize_name(method)
    out = "train" if key == "supervised" else key
    variants = [v for flag, v in DEMO_VARIANTS.get(key, {}).items() if flag_is_true(argv, flag)]
    return {**_DEMO_COMMON, "output_dir": f"outputs/{out}", **DEMO_DEFAULTS.get(key, {}),
            **{k: v for variant in variants for k, v in variant.items()}}
