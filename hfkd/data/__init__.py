"""Datasets, transforms and samplers; names load on first use, so the settings can import this package without torch."""
from ..lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_DATASET": ".default", "DIGITS_LICENSE": ".default", "DIGITS_SOURCE": ".default",
    "load_default_dataset": ".default", "ImageClassificationData": ".loading", "find_columns": ".loading",
    "load_image_dataset": ".loading", "ClassAwareBatchSampler": ".samplers", "AugmentConfig": ".augment",
    "ImageClassificationDataset": ".transforms", "create_image_transform": ".transforms", "seeded_rng": ".transforms",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
