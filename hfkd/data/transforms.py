"""timm transforms over a ``datasets`` split, with augmentation that resumes exactly.

timm's random transforms draw from Python's ``random``, NumPy and torch's global
generators.  Each sample is transformed with those generators seeded from
``(seed, epoch, index)`` and restored afterwards, so augmentation neither
depends on nor disturbs the training RNG: a mid-epoch resume sees the same
images (see shared/docs/accelerate.md §3).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..models.preprocess import PreprocessConfig


@dataclass
class AugmentConfig:
    """Training augmentation on top of the model's own preprocessing (timm's names)."""

    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    color_jitter: Optional[float] = 0.4
    auto_augment: Optional[str] = None
    re_prob: float = 0.0


def create_image_transform(preprocess: PreprocessConfig, is_training: bool,
                           augment: Optional[AugmentConfig] = None) -> Callable:
    """timm's transform for a model's preprocessing; training adds ``augment``."""
    from timm.data import create_transform

    kwargs = dict(
        input_size=preprocess.input_size, interpolation=preprocess.interpolation,
        mean=preprocess.mean, std=preprocess.std, crop_pct=preprocess.crop_pct, crop_mode=preprocess.crop_mode,
    )
    if is_training:
        a = augment or AugmentConfig()
        kwargs.update(scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip, color_jitter=a.color_jitter,
                      auto_augment=a.auto_augment, re_prob=a.re_prob)
    return create_transform(is_training=is_training, **kwargs)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63 - 1)


@contextmanager
def seeded_rng(seed: int):
    """Run a block with Python, NumPy and torch CPU generators seeded, then restore them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ImageClassificationDataset(torch.utils.data.Dataset):
    """Rows ``{"pixel_values", "labels", "index"}`` from a ``datasets`` split.

    ``index`` is the row's position in the split: PS-KD keys its prediction
    bank on it.  ``set_epoch`` (called through ``DataLoader.set_epoch``) changes
    the augmentation draw.  ``view_provider(epoch, index) -> (seed, extra)``, when set, picks
    the seed of the sample's view instead of ``sample_seed(seed, epoch, index)`` and adds the
    ``extra`` fields to the row (a teacher cache uses it to replay stored views with their soft labels).
    """

    def __init__(self, dataset, transform: Callable, image_column: str, label_column: str, seed: int = 0,
                 image_mode: str = "RGB", view_provider: Optional[Callable[[int, int], Tuple[int, dict]]] = None):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: there is nothing to train or evaluate on")
        self.dataset = dataset.select_columns([image_column, label_column])
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self.epoch = 0
        self.image_mode = image_mode
        self.view_provider = view_provider

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self):
        return self.dataset[self.label_column]

    def __getitem__(self, index: int):
        row = self.dataset[int(index)]
        image = row[self.image_column]
        if not hasattr(image, "convert"):
            from PIL import Image

            image = Image.fromarray(np.asarray(image))
        image = image.convert(self.image_mode)
        seed, extra = ((sample_seed(self.seed, self.epoch, int(index)), {}) if self.view_provider is None
                       else self.view_provider(self.epoch, int(index)))
        with seeded_rng(seed):
            pixel_values = self.transform(image)
        return {"pixel_values": pixel_values, "labels": int(row[self.label_column]), "index": int(index), **extra}
