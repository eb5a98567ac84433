"""Argument dataclasses shared by the recipes, parsed by ``HfArgumentParser`` from CLI and YAML.

``python recipes/kd.py --config recipes/configs/kd_demo.yaml --learning_rate 0.01``:
the YAML file gives defaults, command-line flags override them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Type

import yaml

from .data.default import DEFAULT_DATASET
from .data.transforms import AugmentConfig


@dataclass
class ModelArguments:
    student: str = field(default="mobilenetv3_small_050", metadata={"help": "timm name, Hub id or folder."})
    student_pretrained: bool = field(default=False, metadata={"help": "Start from the student's pretrained weights."})
    teachers: List[str] = field(default_factory=list, metadata={"help": "Teachers: timm names, Hub ids or folders."})
    teacher_revisions: List[str] = field(default_factory=list, metadata={"help": "Hub revisions, one per teacher."})
    image_size: Optional[int] = field(default=None, metadata={"help": "Training resolution of the student."})
    align_labels_by_name: bool = field(default=False, metadata={"help": "Reorder teacher classes by label name."})


@dataclass
class DataArguments:
    dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "Hub id, folder, parquet, or hfkd/digits."})
    dataset_revision: Optional[str] = None
    dataset_config: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = None
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    validation_fraction: float = field(default=0.1, metadata={"help": "Held out of train when there is no eval split."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N train samples."})
    aug_scale: List[float] = field(default_factory=lambda: [0.08, 1.0], metadata={"help": "RandomResizedCrop scale range."})
    aug_hflip: float = 0.5
    aug_color_jitter: Optional[float] = 0.4
    aug_auto_augment: Optional[str] = None
    aug_re_prob: float = 0.0
    # -- paper presets (docs/cifar.md) --
    aug_preset: str = field(default="timm", metadata={
        "help": "timm (RandomResizedCrop, the aug_* above) or cifar (RandomCrop with aug_crop_padding + flip)."})
    aug_crop_padding: int = field(default=4, metadata={"help": "cifar preset: pixels of padding before the crop."})
    aug_padding_mode: str = field(default="constant", metadata={
        "help": "cifar preset: constant (zeros, PS-KD/BAKE/FT), reflect (Wide ResNet), edge or symmetric."})
    aug_pca_lighting: float = field(default=0.0, metadata={
        "help": "AlexNet-style PCA lighting noise std (PS-KD/BAKE ImageNet: 0.1); 0 disables it."})

    def augment(self) -> AugmentConfig:
        return AugmentConfig(scale=tuple(self.aug_scale), hflip=self.aug_hflip, color_jitter=self.aug_color_jitter,
                             auto_augment=self.aug_auto_augment, re_prob=self.aug_re_prob, preset=self.aug_preset,
                             crop_padding=self.aug_crop_padding, padding_mode=self.aug_padding_mode,
                             pca_lighting=self.aug_pca_lighting)


def parse_args(dataclass_types: Sequence[Type], argv: Optional[Sequence[str]] = None,
               defaults: Optional[dict] = None) -> Tuple[Any, ...]:
    """Parse ``--config file.yaml`` plus command-line overrides into the dataclasses.

    Precedence: command line > YAML file > the recipe's ``defaults`` > dataclass defaults.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(list(dataclass_types))
    known = {a.dest for a in parser._actions}
    if defaults:
        parser.set_defaults(**defaults)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        config_path = argv[i + 1]
        del argv[i:i + 2]
    elif argv and argv[0].endswith((".yaml", ".yml")):
        config_path = argv.pop(0)
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            defaults = yaml.safe_load(f) or {}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown keys {unknown}")
        parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)
