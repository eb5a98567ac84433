"""The embedded default dataset: UCI handwritten digits, shipped with hfkd.

Source: "Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak, 1998),
UCI Machine Learning Repository, CC BY 4.0, as redistributed by scikit-learn's
``load_digits``: 1,797 grey 8x8 images with 17 intensity levels, 10 classes.
hfkd ships those pixels (``assets/digits.npz``, 45 kB) and upscales them to RGB
so that every recipe runs offline.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

DEFAULT_DATASET = "hfkd/digits"
DEFAULT_IMAGE_SIZE = 32
DIGITS_LICENSE = "cc-by-4.0"
DIGITS_SOURCE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"


def _digits_arrays():
    with resources.files("hfkd.data").joinpath("assets/digits.npz").open("rb") as f:
        data = np.load(f)
        return data["images"], data["labels"]


def load_all_digits(image_size: int = DEFAULT_IMAGE_SIZE):
    """All 1,797 digits as one ``Dataset`` in the file's order (what k-fold benchmarks split).

    Images are RGB PNGs of ``image_size`` pixels (bilinear upscaling of the 8x8 originals).
    """
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    images, labels = _digits_arrays()
    pixels = (images.astype(np.float32) * (255.0 / 16.0)).round().astype(np.uint8)
    rgb = [
        np.asarray(PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BILINEAR).convert("RGB"))
        for p in pixels
    ]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    return Dataset.from_dict({"image": rgb, "label": labels.tolist()}, features=features)


def load_default_dataset(image_size: int = DEFAULT_IMAGE_SIZE, validation_fraction: float = 0.2, seed: int = 0):
    """The digits as a ``DatasetDict`` with ``train`` and ``validation`` splits.

    The split is stratified and fixed by ``seed``.
    """
    from datasets import DatasetDict

    ds = load_all_digits(image_size)
    split = ds.train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column="label")
    return DatasetDict(train=split["train"], validation=split["test"])
