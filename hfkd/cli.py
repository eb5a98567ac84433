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

    def __post_init__(self):
        if isinstance(self.teachers, str):  # `teachers: resnet18` in YAML means one teacher, not 8 letters
            self.teachers = [self.teachers]
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size <= 0):
            raise ValueError(f"image_size must be a positive integer (got {self.image_size!r})")


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

    def augment(self) -> AugmentConfig:
        return AugmentConfig(scale=tuple(self.aug_scale), hflip=self.aug_hflip, color_jitter=self.aug_color_jitter,
                             auto_augment=self.aug_auto_augment, re_prob=self.aug_re_prob)


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
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
            raise ValueError("--config needs the path of a YAML file: --config recipes/configs/NAME.yaml")
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
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except (TypeError, ValueError) as e:  # a YAML value of the wrong type is only seen by __post_init__
        if config_path:
            raise ValueError(f"{e} (check {config_path} and the command line)") from e
        raise
