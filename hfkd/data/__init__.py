from .default import DEFAULT_DATASET, DIGITS_LICENSE, DIGITS_SOURCE, load_default_dataset
from .loading import ImageClassificationData, find_columns, load_image_dataset
from .samplers import ClassAwareBatchSampler
from .transforms import AugmentConfig, ImageClassificationDataset, create_image_transform, seeded_rng

__all__ = [
    "DEFAULT_DATASET", "DIGITS_LICENSE", "DIGITS_SOURCE", "load_default_dataset", "ImageClassificationData",
    "find_columns", "load_image_dataset", "AugmentConfig", "ImageClassificationDataset", "create_image_transform",
    "seeded_rng",
]
