"""An embedded regression task: how far was this digit rotated?

Each embedded digit (``hfkd.data.default``) is rotated by an angle drawn uniformly from
``[-max_angle, max_angle]`` degrees (one fixed draw per image, from ``seed``); the target column
``angle`` holds it.  The train/validation split is the digits' own, so no rotated copy of a
validation digit is ever trained on.
"""
from __future__ import annotations

import numpy as np

from .default import DEFAULT_DATASET, load_all_digits, load_default_dataset
from .loading import ImageClassificationData

ROTATION_COLUMN = "angle"
DEFAULT_MAX_ANGLE = 45.0


def load_rotated_digits(image_size: int = 32, max_angle: float = DEFAULT_MAX_ANGLE, validation_fraction: float = 0.2,
                        seed: int = 0):
    """``ImageClassificationData`` with an ``image`` column and a float ``angle`` target (degrees)."""
    if not 0 < max_angle <= 180:
        raise ValueError(f"max_angle must be in (0, 180] degrees, got {max_angle}")
    digits = load_default_dataset(image_size=image_size, validation_fraction=validation_fraction, seed=seed)
    splits = {}
    for offset, (name, split) in enumerate(digits.items()):
        angles = np.random.default_rng([seed, offset]).uniform(-max_angle, max_angle, len(split)).astype(np.float32)
        splits[name] = _rotated(split["image"], angles)
    return ImageClassificationData(train=splits["train"], eval=splits["validation"], image_column="image",
                                   label_column=ROTATION_COLUMN, label_names=None,
                                   source=f"{DEFAULT_DATASET}-rotation")


def load_all_rotated_digits(image_size: int = 32, max_angle: float = DEFAULT_MAX_ANGLE, seed: int = 0):
    """All 1,797 digits in the file's order (``load_all_digits``'s, so that k-fold indices mean the same images),
    each rotated by one fixed draw of angle: a ``Dataset`` with ``image`` and the float ``angle`` target."""
    if not 0 < max_angle <= 180:
        raise ValueError(f"max_angle must be in (0, 180] degrees, got {max_angle}")
    digits = load_all_digits(image_size=image_size)
    angles = np.random.default_rng([seed, len(digits)]).uniform(-max_angle, max_angle, len(digits)).astype(np.float32)
    return _rotated(digits["image"], angles)


def _rotated(images, angles: np.ndarray):
    """A ``Dataset`` of ``images`` (RGB) each turned by its angle (degrees, bilinear), with the ``angle`` target."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    turned = [img.convert("RGB").rotate(float(a), resample=PILImage.BILINEAR) for img, a in zip(images, angles)]
    features = Features({"image": Image(), ROTATION_COLUMN: Value("float32")})
    return Dataset.from_dict({"image": turned, ROTATION_COLUMN: angles.tolist()}, features=features)
