"""The settings of a run besides the trainer's and the method's: model, data and run options.

Each dataclass is one group of ``hfkd ... --help`` (``_argument_group_name``).  The trainer's
settings are :class:`hfkd.training.args.DistillationArguments`; a method's are its own
config dataclass (``KDConfig`` in ``hfkd/methods/kd.py``).  All are parsed together by
:func:`hfkd.cli.parser.parse_args` from the command line and a YAML file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from .data.default import DEFAULT_DATASET
from .data.transforms import AugmentConfig

_AUTO_AUGMENT = "a timm policy string such as rand-m9-mstd0.5 or augmix-m5-w4-d2"


@dataclass
class ModelArguments:
    """The student, the teachers and what the saved student's card says about its license."""

    _argument_group_name: ClassVar[str] = "model"

    student: str = field(default="cifar_resnet8", metadata={
        "help": "timm name, Hub id or folder (default: the demo's 32 px CIFAR ResNet-8; name yours for other data)."})
    student_pretrained: bool = field(default=False, metadata={"help": "Start from the student's pretrained weights."})
    teachers: List[str] = field(default_factory=list, metadata={"help": "Teachers: timm names, Hub ids or folders."})
    teacher_revisions: List[str] = field(default_factory=list, metadata={"help": "Hub revisions, one per teacher."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Training resolution of the student (default: the model's own)."})
    align_labels_by_name: bool = field(default=False, metadata={
        "help": "Reorder each teacher's classes to the student's by label name (same names, other order)."})
    label_mapping: Optional[str] = field(default=None, metadata={
        "help": "Teacher label -> student label, as 'cat=Cat,dog=Dog' or a YAML mapping; for names that differ."})
    license: Optional[str] = field(default=None, metadata={
        "help": "License written in the student's model card (a Hub license id such as apache-2.0 or mit). "
                "Default: the license of the student's pretrained weights when timm knows it, else none."})

    def __post_init__(self):
        if isinstance(self.teachers, str):  # `teachers: resnet18` in YAML means one teacher, not 8 letters
            self.teachers = [self.teachers]
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size <= 0):
            raise ValueError(f"image_size must be a positive integer (got {self.image_size!r})")

    def label_mapping_dict(self):
        """``label_mapping`` as a dict (YAML gives one; the command line a ``a=b,c=d`` string)."""
        value = self.label_mapping
        if not value or isinstance(value, dict):
            return value or None
        pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"label_mapping must look like 'teacher_label=student_label,...', got {value!r}")
        return {a.strip(): b.strip() for a, b in pairs}


@dataclass
class DataArguments:
    """The dataset, its splits and columns, and the training augmentation."""

    _argument_group_name: ClassVar[str] = "data"

    dataset: str = field(default=DEFAULT_DATASET, metadata={
        "help": "Hub id, image folder, parquet file, or hfkd/digits (embedded, offline)."})
    dataset_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "Split to evaluate on (default: validation or test if present, else a held-out part of train)."})
    image_column: Optional[str] = field(default=None, metadata={"help": "Image column (default: found by type)."})
    label_column: Optional[str] = field(default=None, metadata={"help": "Label column (default: found by type)."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Held out of train when there is no eval split."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N train samples."})
    aug_scale: List[float] = field(default_factory=lambda: [0.08, 1.0], metadata={
        "help": "RandomResizedCrop scale range (two numbers)."})
    aug_hflip: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})
    aug_color_jitter: Optional[float] = field(default=0.4, metadata={"help": "Colour jitter strength (null: none)."})
    aug_auto_augment: Optional[str] = field(default=None, metadata={"help": f"Auto-augment policy: {_AUTO_AUGMENT}."})
    aug_re_prob: float = field(default=0.0, metadata={"help": "Random erasing probability."})
    # -- paper presets (docs/cifar.md) --
    aug_preset: str = field(default="timm", metadata={
        "help": "timm (RandomResizedCrop, the aug_* above) or cifar (RandomCrop with aug_crop_padding + flip).",
        "choices": ["timm", "cifar"]})
    aug_crop_padding: int = field(default=4, metadata={"help": "cifar preset: pixels of padding before the crop."})
    aug_padding_mode: str = field(default="constant", metadata={
        "help": "cifar preset: constant (zeros, PS-KD/BAKE/FT), reflect (Wide ResNet), edge or symmetric.",
        "choices": ["constant", "reflect", "edge", "symmetric"]})
    aug_pca_lighting: float = field(default=0.0, metadata={
        "help": "AlexNet-style PCA lighting noise std (PS-KD/BAKE ImageNet: 0.1); 0 disables it."})

    def augment(self) -> AugmentConfig:
        return AugmentConfig(scale=tuple(self.aug_scale), hflip=self.aug_hflip, color_jitter=self.aug_color_jitter,
                             auto_augment=self.aug_auto_augment, re_prob=self.aug_re_prob, preset=self.aug_preset,
                             crop_padding=self.aug_crop_padding, padding_mode=self.aug_padding_mode,
                             pca_lighting=self.aug_pca_lighting)


@dataclass
class RunArguments:
    """What the command does around training."""

    _argument_group_name: ClassVar[str] = "run"

    dry_run: bool = field(default=False, metadata={
        "help": "Print the resolved settings, parameter counts and step counts, then stop without training."})


@dataclass
class DistillRunArguments(RunArguments):
    """What ``hfkd distill`` and the distillation recipes do around training."""

    baseline: bool = field(default=True, metadata={
        "help": "Also train the same student without distillation, for comparison."})
