"""The embedded demo shared by the recipes: cached teachers, baselines and a results table.

Everything here runs offline on the embedded digits at 32x32 in minutes on two
CPU cores.  Teachers are trained once and cached in ``$HFKD_CACHE`` (default
``~/.cache/hfkd``) in timm's native format, then loaded like any Hub teacher.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from .data.transforms import AugmentConfig
from .results import RESULT_METRICS, markdown_table

DEMO_IMAGE_SIZE = 32
DEMO_STUDENT = "mobilenetv3_small_050"
# Two different architectures, and how long each needs to be a good teacher on the digits.
DEMO_TEACHERS = {"resnet18": 4, "convnext_atto": 8}
DEMO_LEARNING_RATE = 2e-3
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
                     image_size: int = DEMO_IMAGE_SIZE, **arg_overrides):
    """Train ``model`` from scratch with cross-entropy; returns (trainer, eval metrics)."""
    from accelerate.utils import set_seed

    from .models.factory import create_backbone
    from .training.trainer import DistillationTrainer

    set_seed(seed)  # the initialisation too, so that a cached teacher does not depend on what ran before
    student = create_backbone(model, num_classes=data.num_classes, pretrained=False, image_size=image_size,
                              label_names=data.label_names)
    args = demo_args(output_dir, num_train_epochs=num_epochs, seed=seed, **arg_overrides)
    trainer = DistillationTrainer(student, method="supervised", args=args, train_dataset=data.train,
                                  eval_dataset=data.eval, augment=DEMO_AUGMENT)
    trainer.train()
    return trainer, trainer.evaluate()


def demo_teachers(data, names: Optional[Sequence[str]] = None, seed: int = 0, **arg_overrides) -> List[str]:
    """Folders of the demo teachers, training (and caching) those that are missing."""
    paths = []
    for name in names or DEMO_TEACHERS:
        path = os.path.join(cache_dir(), "demo_teachers", f"{name}-digits{DEMO_IMAGE_SIZE}-seed{seed}")
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            trainer, _ = train_supervised(name, data, os.path.join(path + ".run"), DEMO_TEACHERS.get(name, 6),
                                          seed=seed, **arg_overrides)
            trainer.save_model(path)
        paths.append(path)
    return paths


def results_table(rows: Sequence[Dict[str, Any]], keys: Sequence[str] = RESULT_METRICS) -> str:
    """A Markdown table of result rows (``hfkd.pipeline.result_row``): the metrics ``keys`` (top-1, top-5, NLL,
    ECE by default), the gap closed vs KD when a row has one, and parameters."""
    gap = ("gap_closed",) if any(r.get("gap_closed") is not None for r in rows) else ()
    return markdown_table(rows, tuple(keys) + gap)
