"""Load an image-classification dataset from anywhere ``datasets`` can, and find its columns."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import List, Optional, Union

from .checks import check_eval_label_names, check_num_classes
from .default import DEFAULT_DATASET, load_default_dataset
from .stream import is_stream, load_stream

_EVAL_SPLITS = ("validation", "valid", "val", "test")
_IMAGE_NAMES = ("image", "img", "images", "picture", "pixel_values")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "y", "cls")  # cls: WebDataset's class file


@dataclass
class ImageClassificationData:
    """A train split, an optional eval split and where the images and labels are."""

    train: "Dataset"  # noqa: F821
    eval: Optional["Dataset"]  # noqa: F821
    image_column: str
    label_column: str
    label_names: Optional[List[str]]
    source: str = "in-memory"
    revision: Optional[str] = None
    #: where the eval images come from: a split name, or the held-out part of train
    eval_split: Optional[str] = None

    @property
    def streamed(self) -> bool:
        """Whether the splits are streams (``datasets.IterableDataset``, ``streaming=True``)."""
        return is_stream(self.train)

    @property
    def num_classes(self) -> int:
        if self.label_names is not None:
            return len(self.label_names)
        return int(max(self.train[self.label_column])) + 1


def find_columns(dataset, image_column: Optional[str] = None, label_column: Optional[str] = None):
    """Return ``(image_column, label_column)``, detected from the features when not given."""
    from datasets import ClassLabel, Image

    features = dataset.features
    names = list(features)
    for given, kind in ((image_column, "image"), (label_column, "label")):
        if given is not None and given not in features:
            raise ValueError(f"the dataset has no {kind} column {given!r}; its columns are {names}")
    if image_column is None:
        found = [n for n, f in features.items() if isinstance(f, Image)] or [n for n in _IMAGE_NAMES if n in features]
        if not found:
            raise ValueError(f"no image column found among {names}; name it with image_column=...")
        image_column = found[0]
    if label_column is None:
        found = [n for n, f in features.items() if isinstance(f, ClassLabel)] or [n for n in _LABEL_NAMES if n in features]
        if not found:
            raise ValueError(f"no label column found among {names}; name it with label_column=...")
        label_column = found[0]
    return image_column, label_column


def _label_names(dataset, label_column: str):
    from datasets import ClassLabel

    feature = dataset.features[label_column]
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _load_source(source, revision, config_name, cache_dir):
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if source is None or source == DEFAULT_DATASET:
        return load_default_dataset(), DEFAULT_DATASET
    if isinstance(source, (Dataset, DatasetDict)):
        return source, "in-memory"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"dataset source must be a name, a path or a datasets.Dataset, not {type(source).__name__}")
    source = os.fspath(source)
    if os.path.isdir(source):
        if any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json")):
            return load_from_disk(source), source
        parquet = sorted(glob.glob(os.path.join(source, "**", "*.parquet"), recursive=True))
        if parquet:
            return load_dataset("parquet", data_files=parquet, cache_dir=cache_dir), source
        return _image_folder(source, cache_dir), source
    if source.endswith(".parquet") or "*" in source:
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"no parquet file matches {source!r}")
        return load_dataset("parquet", data_files=files, cache_dir=cache_dir), source
    if os.path.exists(source):
        raise ValueError(f"{source!r} is a file hfkd cannot read; give a folder of images, parquet files or a saved dataset")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        # a path, not a Hub id (ORG/NAME): say it is missing instead of failing to reach the Hub
        raise FileNotFoundError(f"the dataset path {source!r} does not exist (resolved: {os.path.abspath(source)})")
    return load_dataset(source, config_name, revision=revision, cache_dir=cache_dir), source


def _image_folder(source: str, cache_dir):
    from datasets import ClassLabel, load_dataset

    data = load_dataset("imagefolder", data_dir=source, cache_dir=cache_dir)
    # With a single class sub-folder, datasets drops the label column altogether.
    if not any(isinstance(f, ClassLabel) for split in data.values() for f in split.features.values()):
        folders = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
        raise ValueError(f"the image folder {source} has no class labels (its sub-folders: {folders}); classification "
                         "needs at least 2 classes, one sub-folder per class (root/cat/*.png, root/dog/*.png)")
    return data


def load_image_dataset(
    source: Union[None, str, "Dataset", "DatasetDict"] = None,  # noqa: F821
    *,
    train_split: str = "train",
    eval_split: Optional[str] = None,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    revision: Optional[str] = None,
    config_name: Optional[str] = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    streaming: bool = False,
    class_names: Optional[List[str]] = None,
) -> ImageClassificationData:
    """Load an image-classification dataset with a train and an eval split.

    ``source``: ``None`` (the embedded digits), a Hub id, a folder (imagefolder
    layout, parquet files, or ``save_to_disk`` output), a parquet file or glob,
    or a ``datasets.Dataset``/``DatasetDict``.  When there is no eval split,
    ``validation_fraction`` of train is held out (stratified when possible).

    ``streaming=True``: the splits are streams (``datasets.IterableDataset``) of a Hub id, or of a folder or glob
    of Parquet or WebDataset (.tar) shards (:func:`hfkd.data.stream.load_stream`); nothing is held out of a
    stream, the eval split is the source's own (or none).  A stream's classes must be declared: a ``ClassLabel``
    column, or ``class_names`` for integer labels (WebDataset's ``.cls`` files).
    """
    from datasets import ClassLabel, Dataset

    if streaming:
        return _streamed_data(source, train_split, eval_split, image_column, label_column, revision, config_name,
                              cache_dir, class_names)

    loaded, name = _load_source(source, revision, config_name, cache_dir)
    if isinstance(loaded, Dataset):
        loaded = {train_split: loaded}
    if train_split not in loaded:
        raise ValueError(f"the dataset has no split {train_split!r}; its splits are {list(loaded)}; set train_split=...")
    train = loaded[train_split]
    if eval_split is None:
        eval_split = next((s for s in _EVAL_SPLITS if s in loaded and s != train_split), None)
    elif eval_split not in loaded:
        raise ValueError(f"the dataset has no split {eval_split!r}; its splits are {list(loaded)}")
    image_column, label_column = find_columns(train, image_column, label_column)
    if len(train) == 0:
        raise ValueError(f"the train split of {name} is empty")
    if not isinstance(train.features[label_column], ClassLabel) and train.features[label_column].dtype == "string":
        train = train.class_encode_column(label_column)
    evaluation = loaded[eval_split] if eval_split else None
    names = _label_names(train, label_column)
    check_num_classes(len(names) if names is not None else len(set(train[label_column])), name, label_column)
    if evaluation is not None and label_column in evaluation.features:
        check_eval_label_names(names, evaluation, label_column)
    if evaluation is None and validation_fraction > 0:
        stratify = label_column if isinstance(train.features[label_column], ClassLabel) else None
        parts = train.train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column=stratify)
        train, evaluation = parts["train"], parts["test"]
        eval_split = f"{validation_fraction:g} of {train_split} (held out)"
    if evaluation is not None:
        find_columns(evaluation, image_column, label_column)
        if evaluation.features[label_column] != train.features[label_column]:
            evaluation = evaluation.cast_column(label_column, train.features[label_column])
        if len(evaluation) == 0:
            raise ValueError(f"the eval split of {name} is empty")
    return ImageClassificationData(
        train=train, eval=evaluation, image_column=image_column, label_column=label_column,
        label_names=_label_names(train, label_column), source=name, revision=revision,
        eval_split=eval_split if evaluation is not None else None,
    )


def _streamed_data(source, train_split, eval_split, image_column, label_column, revision, config_name, cache_dir,
                   class_names):
    from datasets import ClassLabel

    if source is None or source == DEFAULT_DATASET:
        raise ValueError("streaming=True streams shards or a Hub dataset; the embedded digits are in memory already: "
                         "drop --streaming")
    splits, name = load_stream(source, revision=revision, config_name=config_name, cache_dir=cache_dir)
    if train_split not in splits:
        raise ValueError(f"the streamed dataset has no split {train_split!r}; its splits are {list(splits)}; set "
                         "train_split=...")
    if eval_split is None:
        eval_split = next((s for s in _EVAL_SPLITS if s in splits and s != train_split), None)
    elif eval_split not in splits:
        raise ValueError(f"the streamed dataset has no split {eval_split!r}; its splits are {list(splits)}")
    train = splits[train_split]
    if not train.features:
        raise ValueError(f"the streamed {name} does not declare its features; load it in Python and cast it with "
                         "dataset.cast(features) before training")
    image_column, label_column = find_columns(train, image_column, label_column)
    feature = train.features[label_column]
    if class_names and not isinstance(feature, ClassLabel):  # integer labels 0..C-1, named here
        feature = ClassLabel(names=list(class_names))
        splits = {name_: split.cast_column(label_column, feature) if label_column in (split.features or {}) else split
                  for name_, split in splits.items()}
        train = splits[train_split]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"the streamed train split's label column {label_column!r} is {feature!r}, not a "
                         "datasets.ClassLabel, so its classes cannot be known without reading the whole stream: name "
                         "them with class_names=[...] (--class_names cat dog ...), in the order of the label numbers, "
                         "or write the shards with a ClassLabel feature (datasets' to_parquet keeps it)")
    check_num_classes(len(feature.names), name, label_column)
    evaluation = splits[eval_split] if eval_split else None
    if evaluation is not None:
        check_eval_label_names(list(feature.names), evaluation, label_column)
    return ImageClassificationData(train=train, eval=evaluation, image_column=image_column, label_column=label_column,
                                   label_names=list(feature.names), source=name, revision=revision,
                                   eval_split=eval_split)
