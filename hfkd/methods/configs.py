"""Every built-in method's settings, one dataclass per method, in a module that imports no torch.

The command line builds ``hfkd distill --method NAME --help`` and parses the settings before anything
heavy loads, so the configs live here and each method file imports its own (``hfkd.methods.kd.KDConfig``
is this module's ``KDConfig``).  The constructor, :meth:`DistillationMethod.hparams`, YAML files and
the model card all read these declarations.  Every config refuses a non-finite number when it is built
(``temperature=inf`` would train to NaN weights), then runs its own range checks (:meth:`MethodConfig.check`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union

from ..settings import check_finite_settings, shorten

# The stage name of a model's last feature map: the value of hfkd.models.backbone.LAST_STAGE, which this
# module cannot import (hfkd.models loads torch); tests/test_method_configs.py checks that the two agree.
LAST_STAGE = "last"
Stage = Union[str, int]

BANK_DTYPES = ("float32", "float16")
MIX_MODES = ("both", "mixup", "cutmix")
UNCERTAINTY_MODES = ("none", "weight", "select")
REGRESSION_MATCHES = ("gaussian", "mean")


@dataclass
class MethodConfig:
    """Base of every method's settings: fields with a default and ``metadata={"help": ...}``.

    Values are checked when the config is built (``__post_init__``): first that every number is finite,
    then the subclass's :meth:`check`, so a bad setting fails when it is parsed or the method is built,
    before training.
    """

    def __post_init__(self):
        check_finite_settings({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, type(self).__name__)
        self.check()

    def check(self) -> None:
        """Range checks of the subclass's settings (raise ``ValueError`` naming the setting)."""


def check_probability(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {shorten(value)}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if not float(value) > 0:
        raise ValueError(f"{name} must be > 0, got {shorten(value)}")
    return float(value)


def check_choice(name: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {shorten(value)}")
    return value


def parse_stage(stage: Stage) -> Stage:
    """``"last"`` or an int (also from a command-line string such as ``"2"``)."""
    if isinstance(stage, str) and stage != LAST_STAGE:
        try:
            return int(stage)
        except ValueError:
            raise ValueError(f"stage must be '{LAST_STAGE}' or a stage index, got {shorten(stage)}") from None
    return stage


@dataclass
class KDConfig(MethodConfig):
    """Settings of classic knowledge distillation (method ``kd``)."""

    temperature: float = field(default=4.0, metadata={"help": "T: softens teacher and student logits (> 0)."})
    alpha: float = field(default=0.9, metadata={
        "help": "Weight of the distillation term in [0, 1]; 1 - alpha weighs the cross-entropy on the labels."})

    def check(self):
        self.temperature = check_positive("temperature", self.temperature)
        self.alpha = check_probability("alpha", self.alpha)


@dataclass
class SupervisedConfig(MethodConfig):
    """Settings of plain supervised training (method ``supervised``)."""

    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the cross-entropy, in [0, 1]."})

    def check(self):
        self.label_smoothing = check_probability("label_smoothing", self.label_smoothing)


@dataclass
class MEALv2Config(MethodConfig):
    """Settings of MEAL V2 (method ``meal_v2``)."""

    use_discriminator: bool = field(default=True, metadata={
        "help": "Add the discriminator loss (the official train.py always does)."})
    discriminator_weight: float = field(default=1.0, metadata={"help": "w_D, weight of the discriminator loss (>= 0)."})
    discriminator_reduction: int = field(default=8, metadata={
        "help": "Width reduction r of the discriminator's layers: C -> C/r -> C/r^2 -> 2 (>= 1)."})
    discriminator_lr: Optional[float] = field(default=None, metadata={
        "help": "The discriminator's own learning rate; default: the student's (what the official code ran)."})
    hard_label_weight: float = field(default=0.0, metadata={
        "help": "Weight of an extra cross-entropy on the labels (paper: 0, no hard labels)."})

    def check(self):
        if self.discriminator_weight < 0:
            raise ValueError(f"discriminator_weight must be >= 0, got {shorten(self.discriminator_weight)}")
        if int(self.discriminator_reduction) < 1:
            raise ValueError(f"discriminator_reduction must be >= 1, got {shorten(self.discriminator_reduction)}")
        if self.discriminator_lr is not None:
            self.discriminator_lr = check_positive("discriminator_lr", self.discriminator_lr)
        if self.hard_label_weight < 0:
            raise ValueError(f"hard_label_weight must be >= 0, got {shorten(self.hard_label_weight)}")


@dataclass
class FEEDConfig(MethodConfig):
    """Settings of FEED (method ``feed``).  Stages are ``"last"`` or a stage index (``"2"`` and ``2`` alike)."""

    beta: float = field(default=500.0, metadata={
        "help": "Weight of the feature term (> 0). 500 is Factor Transfer's value for the same L1 loss; "
                "FEED's own is not known."})
    stage: str = field(default=LAST_STAGE, metadata={
        "help": "The student's feature stage: 'last' (the last map before pooling, the paper's choice) or a "
                "timm / transformers stage index."})
    teacher_stage: Optional[str] = field(default=None, metadata={
        "help": "The teachers' stage (default: the same as stage). 'last' pairs any architectures."})
    kernel_size: int = field(default=3, metadata={
        "help": "Convolution size of the per-teacher transforms (odd; 3 as in Factor Transfer, 1: per-position)."})
    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the cross-entropy on the labels (>= 0)."})

    def check(self):
        self.beta = check_positive("beta", self.beta)
        if self.ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {shorten(self.ce_weight)}")
        self.stage = parse_stage(self.stage)
        if self.teacher_stage is not None:
            self.teacher_stage = parse_stage(self.teacher_stage)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {shorten(self.kernel_size)}")


@dataclass
class BAKEConfig(MethodConfig):
    """Settings of batch knowledge ensembling (method ``bake``)."""

    omega: float = field(default=0.5, metadata={
        "help": "Propagation weight w in [0, 1): 0.5 for ImageNet / CIFAR-100, 0.9 for TinyImageNet and fine-grained."})
    temperature: float = field(default=4.0, metadata={"help": "T of the ensembled targets and of the KD term (> 0)."})
    kd_weight: float = field(default=1.0, metadata={
        "help": "lambda, weight of T^2 KL(Q || softmax(z/T)) (>= 0; 1.0 in every official config)."})
    intra_class_images: int = field(default=1, metadata={
        "help": "M same-class partners per anchor in each batch (0: shuffled batches)."})
    global_ensemble: bool = field(default=False, metadata={
        "help": "Build the ensemble over the batch of all processes instead of the local one."})

    def check(self):
        if not 0.0 <= float(self.omega) < 1.0:
            raise ValueError(f"omega must be in [0, 1) (I - omega A must be invertible), got {shorten(self.omega)}")
        self.temperature = check_positive("temperature", self.temperature)
        if float(self.kd_weight) < 0:
            raise ValueError(f"kd_weight must be >= 0, got {shorten(self.kd_weight)}")
        if int(self.intra_class_images) < 0:
            raise ValueError(f"intra_class_images must be >= 0, got {shorten(self.intra_class_images)}")


@dataclass
class PSKDConfig(MethodConfig):
    """Settings of progressive self-knowledge distillation (method ``pskd``)."""

    alpha_T: float = field(default=0.8, metadata={
        "help": "Weight of the past predictions in the last epoch, in [0, 1] (paper and code: 0.8)."})
    bank_dtype: str = field(default="float32", metadata={
        "help": "Storage of the N x C prediction bank: float32 (as the official code) or float16 (half the memory).",
        "choices": sorted(BANK_DTYPES)})

    def check(self):
        self.alpha_T = check_probability("alpha_T", self.alpha_T)
        check_choice("bank_dtype", self.bank_dtype, sorted(BANK_DTYPES))


@dataclass
class ExtracurricularConfig(MethodConfig):
    """Settings of extracurricular learning (method ``extracurricular``)."""

    temperature: float = field(default=4.0, metadata={"help": "Softmax temperature of the classification KL."})
    alpha: float = field(default=0.9, metadata={
        "help": "Weight of the teacher-matching term; 1 - alpha weighs the hard-label loss on real samples only."})
    extra_ratio: float = field(default=1.0, metadata={
        "help": "Extra (mixed, unlabelled) samples per real sample in each batch; 0 = classic KD."})
    mix: str = field(default="both", metadata={"help": "How extra samples are made: MixUp and CutMix, or only one.",
                                                "choices": MIX_MODES})
    cutmix_prob: float = field(default=0.5, metadata={"help": "With mix='both': probability that a sample is CutMix."})
    mix_alpha: float = field(default=1.0, metadata={
        "help": "Mixing coefficient lambda ~ Beta(mix_alpha, mix_alpha) per extra sample (1 = uniform)."})
    uncertainty: str = field(default="none", metadata={
        "help": "Emphasis on uncertain extra samples: 'none', 'weight' (weight each extra sample's term by the "
                "teachers' uncertainty, mean weight 1) or 'select' (keep the most uncertain uncertain_fraction).",
        "choices": UNCERTAINTY_MODES})
    uncertain_fraction: float = field(default=0.5, metadata={"help": "Fraction of extra samples kept by 'select'."})
    regression_match: str = field(default="gaussian", metadata={
        "help": "Regression only: 'gaussian' (KL between the Gaussians) or 'mean' (squared error of the means: "
                "classic point matching).", "choices": REGRESSION_MATCHES})

    def check(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {shorten(self.temperature)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {shorten(self.alpha)}")
        if not self.extra_ratio >= 0:
            raise ValueError(f"extra_ratio must be >= 0 (extra samples per real one), got {shorten(self.extra_ratio)}")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {shorten(self.cutmix_prob)}")
        if not self.mix_alpha > 0:
            raise ValueError(f"mix_alpha must be > 0 (Beta distribution parameter), got {shorten(self.mix_alpha)}")
        if not 0.0 < self.uncertain_fraction <= 1.0:
            raise ValueError(f"uncertain_fraction must be in (0, 1], got {shorten(self.uncertain_fraction)}")
        check_choice("mix", self.mix, MIX_MODES)
        check_choice("uncertainty", self.uncertainty, UNCERTAINTY_MODES)
        check_choice("regression_match", self.regression_match, REGRESSION_MATCHES)


FEATURE_DISTANCES = ("cosine", "mse", "smooth_l1")  # hfkd.losses.feature_distillation_loss (no torch here)
PROJECTORS = ("linear", "mlp")
FEATURE_MATCHES = ("pooled", "tokens", "both")


@dataclass
class FeatureKDConfig(MethodConfig):
    """Settings of feature distillation (method ``feature_kd``): the student's pooled features, through a learned
    projector per teacher, matched to each teacher's pooled embedding."""

    distance: str = field(default="cosine", metadata={
        "help": "cosine (default: AM-RADIO, Ranzinger et al. 2024, matches foundation-model summary features with "
                "it), mse (timm's feature distillation) or smooth_l1."})
    projector: str = field(default="mlp", metadata={
        "help": "linear, or mlp (Linear-LayerNorm-GELU-Linear, the teacher's width inside: the adaptor heads of "
                "AM-RADIO). Trained and checkpointed with the student, never saved with it."})
    match: str = field(default="pooled", metadata={
        "help": "What is matched: pooled (the student's pooled features to the teacher's pooled embedding), tokens "
                "(the student's last feature map, per position, to the teacher's patch-token grid, interpolated to "
                "it; class and register tokens left out) or both (the sum of the two terms, as AM-RADIO matches "
                "summary and spatial features)."})
    feature_weight: float = field(default=1.0, metadata={"help": "Weight of the feature term (> 0)."})
    ce_weight: float = field(default=0.0, metadata={
        "help": "Weight of the cross-entropy on the labels (>= 0); 0, the default, needs no labels."})

    def check(self):
        check_choice("distance", self.distance, FEATURE_DISTANCES)
        check_choice("projector", self.projector, PROJECTORS)
        check_choice("match", self.match, FEATURE_MATCHES)
        self.feature_weight = check_positive("feature_weight", self.feature_weight)
        if self.ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {shorten(self.ce_weight)}")


__all__ = ["MethodConfig", "FeatureKDConfig", "KDConfig", "SupervisedConfig", "MEALv2Config", "FEEDConfig", "BAKEConfig", "PSKDConfig",
           "ExtracurricularConfig", "check_positive", "check_probability", "check_choice", "parse_stage", "LAST_STAGE"]
