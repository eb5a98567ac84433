"""The training augmentation's settings (timm's names); :mod:`hfkd.data.transforms` builds the transform.

A settings dataclass: importing it imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

AUGMENT_PRESETS = ("timm", "cifar")
_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


@dataclass
class AugmentConfig:
    """Training augmentation on top of the model's own preprocessing (timm's names)."""

    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    color_jitter: Optional[float] = 0.4
    auto_augment: Optional[str] = None
    re_prob: float = 0.0
    # -- paper presets (docs/cifar.md) --
    # "timm": timm's RandomResizedCrop pipeline (the fields above); "cifar": RandomCrop with `crop_padding`
    # pixels of `padding_mode` padding + flip (+ colour jitter if set), as the CIFAR papers train.
    preset: str = "timm"
    crop_padding: int = 4
    padding_mode: str = "constant"
    # AlexNet-style PCA lighting noise with standard deviation `pca_lighting` (0.1 in PS-KD / BAKE on ImageNet).
    pca_lighting: float = 0.0

    def __post_init__(self):
        problems = []
        if self.preset not in AUGMENT_PRESETS:
            problems.append(f"preset must be one of {AUGMENT_PRESETS} (got {self.preset!r})")
        if self.crop_padding < 0:
            problems.append(f"crop_padding must be >= 0 (got {self.crop_padding})")
        if self.padding_mode not in _PADDING_MODES:
            problems.append(f"padding_mode must be one of {_PADDING_MODES} (got {self.padding_mode!r})")
        if self.pca_lighting < 0:
            problems.append(f"pca_lighting must be >= 0 (got {self.pca_lighting})")
        if self.preset == "cifar" and (self.auto_augment or self.re_prob):
            problems.append("the cifar preset has no auto_augment / random erasing: set them to null / 0 or use "
                            "preset 'timm'")
        if problems:
            raise ValueError("invalid augmentation: " + "; ".join(problems))
