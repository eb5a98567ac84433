"""timm transforms over a ``datasets`` split, with augmentation that resumes exactly.

timm's random transforms draw from Python's ``random``, NumPy and torch's global
generators.  Each sample is transformed with those generators seeded from
``(seed, epoch, index)``, and the generators are restored afterwards, so
augmentation neither depends on nor disturbs the training RNG: a mid-epoch
resume, or a data-loader worker, sees the same images.

Seeding is cheap (a few microseconds); saving and restoring the three global
states is not (NumPy's alone costs ~65 us).  A batch is therefore transformed
under one save/restore (:func:`seeded_batch`), and the data loader asks for
whole batches (``__getitems__``), which also reads the rows from ``datasets``
in one call.  The pixels are the same as seeding and restoring around every
sample (docs/performance.md).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

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


def seed_global_rng(seed: int) -> None:
    """Seed Python's, NumPy's and torch's CPU global generators for one sample."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # The CPU generator only: torch.manual_seed also re-seeds every accelerator (~100 us per call on a
    # CPU-only machine) and the transforms draw from the CPU generator alone.
    torch.default_generator.manual_seed(seed)


@contextmanager
def preserved_global_rng():
    """Restore Python's, NumPy's and torch's CPU global generators on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.default_generator.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.default_generator.set_state(torch_state)


@contextmanager
def seeded_rng(seed: int):
    """Run a block with the global generators seeded, then restore them."""
    with preserved_global_rng():
        seed_global_rng(seed)
        yield


def seeded_batch(transform: Callable, images: Sequence, seed: int, epoch: int, indices: Sequence[int]) -> List:
    """``transform`` each image with the generators seeded from ``(seed, epoch, index)``; restore them once."""
    with preserved_global_rng():
        out = []
        for image, index in zip(images, indices):
            seed_global_rng(sample_seed(seed, epoch, int(index)))
            out.append(transform(image))
    return out


class ImageClassificationDataset(torch.utils.data.Dataset):
    """Rows ``{"pixel_values", "labels", "index"}`` from a ``datasets`` split.

    ``index`` is the row's position in the split: PS-KD keys its prediction
    bank on it.  ``set_epoch`` (called through ``DataLoader.set_epoch``) changes
    the augmentation draw.
    """

    def __init__(self, dataset, transform: Callable, image_column: str, label_column: str, seed: int = 0,
                 image_mode: str = "RGB"):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: there is nothing to train or evaluate on")
        self.dataset = dataset.select_columns([image_column, label_column])
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64)
        self.image_mode = image_mode

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def share_epoch(self) -> "ImageClassificationDataset":
        """Put the epoch in shared memory before data-loader workers start.

        Workers hold copies of the dataset; persistent ones keep theirs across
        epochs, so ``set_epoch`` in the main process reaches them only through
        shared memory.  Without it they would augment every epoch like the first.
        """
        self._epoch.share_memory_()
        return self

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self):
        return self.dataset[self.label_column]

    def _image(self, image):
        if not hasattr(image, "convert"):
            from PIL import Image

            image = Image.fromarray(np.asarray(image))
        return image.convert(self.image_mode)

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[dict]:
        """A batch of rows: the DataLoader calls this with a batch's indices (one ``datasets`` read)."""
        indices = [int(i) for i in indices]
        rows = self.dataset[indices]
        images = [self._image(image) for image in rows[self.image_column]]
        pixels = seeded_batch(self.transform, images, self.seed, self.epoch, indices)
        return [{"pixel_values": p, "labels": int(label), "index": i}
                for p, label, i in zip(pixels, rows[self.label_column], indices)]
