"""The settings of every command besides the trainer's and the method's: model, data, run and command options.

Each dataclass is one group of ``hfkd ... --help`` (``_argument_group_name``).  The trainer's
settings are :class:`hfkd.training.args.DistillationArguments`; a method's are its own
config dataclass (``KDConfig`` in ``hfkd/methods/kd.py``).  All are parsed together by
:func:`hfkd.cli.parser.parse_args` from the command line and a YAML file.  Importing this module
imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Type

from ..data.augment import AugmentConfig
from ..data.default import DEFAULT_DATASET
from ..data.labels import read_label_names
from ..methods.registry import normalize_name
from ..settings import shorten

_AUTO_AUGMENT = "a timm policy string such as rand-m9-mstd0.5 or augmix-m5-w4-d2"


@dataclass
class ModelArguments:
    """The student, the teachers and what the saved student's card says about its license."""

    _argument_group_name: ClassVar[str] = "model"

    student: Optional[str] = field(default=None, metadata={
        "help": "timm name, Hub id or folder. Required, except on the embedded demo data (the demo preset's "
                "cifar_resnet8)."})
    student_pretrained: bool = field(default=True, metadata={
        "help": "Start from the student's pretrained weights (a timm name: timm's; offline they must be in the "
                "local cache). false: random initialisation."})
    teachers: List[str] = field(default_factory=list, metadata={
        "help": "Teachers: timm names, Hub ids, saved model folders, or the output folder of an `hfkd train` run."})
    teacher_revisions: List[str] = field(default_factory=list, metadata={"help": "Hub revisions, one per teacher."})
    teacher_prompts: List[str] = field(default_factory=list, metadata={
        "help": "Prompt templates of the zero-shot (CLIP) teachers, each with one {} for the label name, e.g. "
                "'a photo of a {}.'; several are averaged. Shared by all zero-shot teachers; in YAML a mapping "
                "teacher: [templates] gives them per teacher. Default: 'a photo of a {}.'."})
    num_classes: Optional[int] = field(default=None, metadata={
        "help": "Give the student a new, randomly initialised head of N classes (the dataset's: a check). Needed "
                "to replace the head of a saved classifier folder whose classes differ from the data's; a backbone "
                "saved without a head (feature_kd) gets one of the dataset's classes without it."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Training resolution of the student (default: the student's own, from its pretrained configuration: "
                "timm's data config or a transformers image processor)."})
    align_labels_by_name: bool = field(default=False, metadata={
        "help": "Reorder each teacher's classes to the student's by label name (same names, other order)."})
    label_mapping: Optional[str] = field(default=None, metadata={
        "help": "Teacher label -> student label, as 'cat=Cat,dog=Dog' or a YAML mapping; for names that differ."})
    license: Optional[str] = field(default=None, metadata={
        "help": "License written in the student's model card (a Hub license id such as apache-2.0 or mit). "
                "Default: the license of the student's pretrained weights when timm knows it, else none."})
    # Security opt-ins (docs/reliability.md): both off, and never asked for on a terminal.
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Build transformers models whose config.json names their own code (auto_map): runs that code."})
    allow_pickle_weights: bool = field(default=False, metadata={
        "help": "Load student or teacher folders holding only pickled weights (pytorch_model.bin, *.pth) with "
                "torch's weights_only unpickler instead of refusing them."})

    def __post_init__(self):
        if isinstance(self.teachers, str):  # `teachers: resnet18` in YAML means one teacher, not 8 letters
            self.teachers = [self.teachers]
        if isinstance(self.teacher_prompts, str):  # one template, not its letters
            self.teacher_prompts = [self.teacher_prompts]
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int)
                                             or self.num_classes <= 0):
            raise ValueError(f"num_classes must be a positive integer (got {self.num_classes!r})")
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size <= 0):
            raise ValueError(f"image_size must be a positive integer (got {self.image_size!r})")

    def prompts_for(self, teacher: str) -> Optional[List[str]]:
        """The prompt templates of zero-shot teacher ``teacher`` (None: the default template)."""
        prompts = self.teacher_prompts
        if isinstance(prompts, dict):  # YAML: per teacher
            prompts = prompts.get(teacher)
            return [prompts] if isinstance(prompts, str) else prompts
        return list(prompts) or None

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
    streaming: bool = field(default=False, metadata={
        "help": "Stream the dataset (a Hub id, or a folder or glob of Parquet or WebDataset .tar shards) instead of "
                "loading it; needs --max_steps (docs/launch.md, \"Streamed data\")."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "Split to evaluate on (default: validation or test if present, else a held-out part of train)."})
    image_column: Optional[str] = field(default=None, metadata={"help": "Image column (default: found by type)."})
    label_column: Optional[str] = field(default=None, metadata={
        "help": "Label column (default: found by type). Data without one (a flat folder of images) trains the methods "
                "that need no labels: meal_v2, kd with alpha 1, feature_kd with ce_weight 0."})
    label_names: List[str] = field(default_factory=list, metadata={
        "help": "The class names, for data without labels (or with unnamed integer labels): the names, or one file "
                "with one name per line. Required by a zero-shot (CLIP) teacher on such data; their number is the "
                "student's classes. Default: the dataset's names, else the teacher's."})
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

    def __post_init__(self):
        # A file of names is read here, while parsing, so that a bad one is an error before anything loads.
        self.label_names = read_label_names(self.label_names) or []

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

    baseline: bool = field(default=False, metadata={
        "help": "Also train the same student without distillation, for comparison (the demo preset turns it on)."})


# -- what the distillation workflows do around training (hfkd/cli/workflows) -----------------------------
PROTOCOLS = ("imagenet", "small_scale")


@dataclass
class BAKERunArguments(DistillRunArguments):
    """What the BAKE recipe does around training."""

    baseline_protocol: str = field(default="imagenet", metadata={
        "help": "How the baseline is trained: imagenet (batch and lr / (M+1), the same iterations per epoch) or "
                "small_scale (the same batch and lr).", "choices": list(PROTOCOLS)})

    def __post_init__(self):
        if self.baseline_protocol not in PROTOCOLS:
            raise ValueError(f"baseline_protocol must be one of {PROTOCOLS}, got {self.baseline_protocol!r}")


@dataclass
class FEEDRunArguments(DistillRunArguments):
    """What the FEED recipe does around training."""

    parallel: bool = field(default=True, metadata={"help": "Run parallel FEED from --teachers."})
    generations: int = field(default=2, metadata={"help": "Sequential FEED generations (0: none)."})
    sequential_teacher: Optional[str] = field(default=None, metadata={
        "help": "Generation 1's teacher (a model of the student's architecture); default: the baseline, trained for "
                "it even without --baseline."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})

    def __post_init__(self):
        if self.generations < 0:
            raise ValueError(f"generations must be >= 0, got {self.generations}")


@dataclass
class ExtracurricularRunArguments(DistillRunArguments):
    """What the extracurricular recipe does around training."""

    regression: bool = field(default=False, metadata={
        "help": "Run the regression demo (rotation angle of the embedded digits) instead of classification."})
    max_angle: float = field(default=45.0, metadata={"help": "Regression demo: angles are drawn in [-max, max] degrees."})
    seeds: List[int] = field(default_factory=list, metadata={"help": "Several training seeds: report mean +- std."})


# -- the other commands ------------------------------------------------------------------------------
@dataclass
class EvalDataArguments(DataArguments):
    """The dataset to evaluate on (default: the one recorded in the model's hfkd.json) and its splits."""

    dataset: Optional[str] = field(default=None, metadata={
        "help": "Hub id, image folder, parquet file, or hfkd/digits (embedded). Default: the dataset recorded in "
                "the model's hfkd.json, when hfkd trained it on data it can load again."})


@dataclass
class EvalArguments:
    """The model to evaluate and how."""

    _argument_group_name = "evaluation"

    model: str = field(default="", metadata={"help": "A saved student folder, a Hub id or a timm name (pretrained)."})
    revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the model."})
    batch_size: int = field(default=128, metadata={"help": "Images per evaluation batch."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N images."})


STORAGES = ("full", "topk")


@dataclass
class CacheArguments:
    output_dir: str = field(default="outputs/teacher_cache", metadata={"help": "A new folder for the cache."})
    num_views: int = field(default=4, metadata={"help": "R: augmented views stored per image."})
    no_augment: bool = field(default=False, metadata={"help": "Fixed labels: one un-augmented view per image (R=1)."})
    storage: str = field(default="full", metadata={"help": "full: all logits; topk: top-k logits + logsumexp."})
    top_k: int = field(default=10, metadata={"help": "k of --storage topk (FKD's marginal smoothing on load)."})
    dtype: str = field(default="float32", metadata={"help": "float32 or float16 storage."})
    ensemble: bool = field(default=False, metadata={"help": "Store the teachers' mean T=1 probabilities, not each."})
    seed: int = field(default=42, metadata={"help": "Augmentation seed: the training run's --seed."})
    batch_size: int = field(default=64, metadata={"help": "Teacher batch size per process."})
    max_shard_size: str = field(default="500MB", metadata={
        "help": "Largest data file of the cache (bytes, or 500MB, 2GB; under the Hub's 200 GB per file): a kill loses "
                "at most one shard per process."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the cache to the Hub as a dataset repository."})
    hub_dataset_id: Optional[str] = field(default=None, metadata={"help": "ORG/NAME of the Hub dataset repository."})
    hub_private_repo: bool = False
    hash_images: bool = field(default=False, metadata={
        "help": "Record a hash of every image's bytes: a run must match the split in full (one read of it per run)."})
    sample_key_column: Optional[str] = field(default=None, metadata={
        "help": "With --streaming true: the column identifying each sample, the cache's key (the training run's "
                "--sample_key_column; default: WebDataset's __key__, or shard file:row for Parquet shards)."})
    verify: Optional[str] = field(default=None, metadata={
        "help": "Instead of making a cache, check this one (folder or Hub id ORG/NAME[@REV]): every file's size and "
                "sha256 against its manifest, its metadata and its rows."})

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise ValueError(f"--storage must be one of {STORAGES}, got {self.storage!r}")
        if self.no_augment and self.num_views != 1:
            self.num_views = 1  # fixed labels are one view by definition
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id ORG/NAME")


@dataclass
class CompressModelArguments:
    student: Optional[str] = field(default=None, metadata={
        "help": "Saved student to compress (folder or Hub id); default: the demo's KD student, trained if missing."})
    teachers: List[str] = field(default_factory=list, metadata={
        "help": "Teachers of the recovery (default: the demo teachers)."})
    seeds: List[int] = field(default_factory=list, metadata={
        "help": "Instead of one run: prune once, then compare KD recovery with plain fine-tuning over these seeds."})


BENCHMARK_SPLITS = ("kfold", "holdout")


@dataclass
class BenchmarkArguments:
    """What ``hfkd benchmark`` compares, over which seeds and folds, and where it writes."""

    _argument_group_name: ClassVar[str] = "benchmark"

    methods: List[str] = field(default_factory=lambda: ["kd", "meal_v2"], metadata={
        "help": "Methods to compare with the no-KD baseline, each with its `hfkd distill --method NAME` settings "
                "(on the embedded digits: its demo preset); also feed_sequential (FEED generations from the baseline), "
                "extracurricular_regression (the rotation demo) and compress (KD recovery vs plain fine-tuning after "
                "pruning): docs/benchmark.md."})
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "Seeds: each draws its own fold split, labelled subset and initialisation (repeated k-fold)."})
    folds: int = field(default=5, metadata={"help": "k of the stratified k-fold split (--split kfold)."})
    max_folds: int = field(default=0, metadata={
        "help": "Run only the first N folds of each seed (0: all): a quicker look, whose table rests on part of the "
                "images."})
    split: str = field(default="kfold", metadata={
        "help": "kfold: stratified k-fold over every image (the demo's teachers are trained per fold); holdout: the "
                "dataset's own train / eval split, seeds only (for teachers that may have seen every fold).",
        "choices": list(BENCHMARK_SPLITS)})
    labels_per_class: Optional[int] = field(default=None, metadata={
        "help": "The students train on this many labelled images per class of each training part (the same images "
                "for every arm); 0: all of them. Default: the demo regime's on the embedded digits "
                "(docs/benchmark.md), else 0."})
    equal_steps: Optional[bool] = field(default=None, metadata={
        "help": "With --labels_per_class: train each run for the optimizer steps its settings make on the whole "
                "training part (its epochs x training images / labelled images), so that fewer labels do not also "
                "mean fewer steps. Default: the demo regime's on the embedded digits (docs/benchmark.md), else false."})
    dataset: str = field(default=DEFAULT_DATASET, metadata={
        "help": "hfkd/digits (embedded, offline; the demo teachers are trained on each fold), or a Hub id, image "
                "folder or parquet file with --teachers and --student."})
    student: Optional[str] = field(default=None, metadata={"help": "The student (default on the digits: the demo's)."})
    student_pretrained: Optional[bool] = field(default=None, metadata={
        "help": "Start the student from its pretrained weights (default: as `hfkd distill` does: yes for a named "
                "model, no for the demo student)."})
    teachers: List[str] = field(default_factory=list, metadata={
        "help": "Teachers (required off the embedded digits; there they are trained on each fold)."})
    output_dir: str = field(default="outputs/benchmark", metadata={
        "help": "Where every run's predictions and the tables go; a finished run found there is reused."})
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the intervals."})
    num_train_epochs: Optional[int] = field(default=None, metadata={
        "help": "Epochs of every student run (default: each method's own setting)."})
    max_steps: int = field(default=-1, metadata={
        "help": "Optimizer steps of every run, the demo's fold teachers too (> 0: a quick check, not a benchmark)."})

    def __post_init__(self):
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        if self.split not in BENCHMARK_SPLITS:
            raise ValueError(f"--split must be one of {BENCHMARK_SPLITS}, got {self.split!r}")
        if self.max_folds < 0:
            raise ValueError(f"--max_folds must be >= 0, got {self.max_folds}")
        if self.folds < 2:
            raise ValueError(f"--folds must be at least 2 (k-fold), got {self.folds}")
        if not self.methods:
            raise ValueError("--methods is empty: name at least one method to compare with the baseline")
        if not self.seeds:
            raise ValueError("--seeds is empty: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds repeats a seed: {shorten(self.seeds)}")
        if self.labels_per_class is not None and self.labels_per_class < 0:
            raise ValueError(f"--labels_per_class must be >= 0, got {self.labels_per_class}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"--confidence must be between 0 and 1, got {self.confidence}")


# -- a method's run options, known without importing its workflow (which loads torch) ----------------------
#: method -> the run options of its workflow (hfkd/cli/workflows); a method not listed runs DistillRunArguments
RUN_ARGUMENTS: Dict[str, Type[RunArguments]] = {
    "supervised": RunArguments, "bake": BAKERunArguments, "feed": FEEDRunArguments,
    "extracurricular": ExtracurricularRunArguments,
}


def run_arguments(method: str) -> Type[RunArguments]:
    return RUN_ARGUMENTS.get(normalize_name(method), DistillRunArguments)
