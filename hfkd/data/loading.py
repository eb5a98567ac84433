"""Load an image-classification dataset from anywhere ``datasets`` can, and find its columns."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

from ..settings import shorten
from .checks import check_eval_label_names, check_labels, check_num_classes
from .default import DEFAULT_DATASET, load_default_dataset
from .stream import STREAM_WITHOUT_LABELS, is_stream, load_stream
from .labels import FROM_DATASET, FROM_OPTION, check_label_names

_EVAL_SPLITS = ("validation", "valid", "val", "test")
# Sub-folder names that datasets' imagefolder reads as splits, not classes.
_SPLIT_FOLDERS = ("train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval", "evaluation")
_IMAGE_NAMES = ("image", "img", "images", "picture", "pixel_values")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "y", "cls")  # cls: WebDataset's class file


@dataclass
class ImageClassificationData:
    """A train split, an optional eval split and where the images and labels are.

    ``label_column`` is ``None`` when the data has no labels (a flat folder of images, a Parquet file with only an
    image column): methods that need no labels train on it (docs/any_teacher.md, "Without labels").  It may name a
    column that only the eval split has (unlabelled train images, a labelled eval split): :meth:`labelled` says.
    """

    train: "Dataset"  # noqa: F821
    eval: Optional["Dataset"]  # noqa: F821
    image_column: str
    label_column: Optional[str]
    label_names: Optional[List[str]]
    source: str = "in-memory"
    revision: Optional[str] = None
    #: where the eval images come from: a split name, or the held-out part of train
    eval_split: Optional[str] = None
    #: where ``label_names`` come from (hfkd.data.labels: the dataset's label column, --label_names, a teacher)
    label_source: Optional[str] = None
    #: the number of classes of data without labels whose classes a teacher declares without naming them
    declared_num_classes: Optional[int] = None

    def labelled(self, split: str = "train") -> bool:
        """Whether ``split`` (``"train"`` or ``"eval"``) has a label column."""
        dataset = self.train if split == "train" else self.eval
        return dataset is not None and self.label_column is not None and self.label_column in dataset.features

    @property
    def streamed(self) -> bool:
        """Whether the splits are streams (``datasets.IterableDataset``, ``streaming=True``)."""
        return is_stream(self.train)

    @property
    def num_classes(self) -> Optional[int]:
        """The number of classes: of the label names, else of the train labels; ``None`` when neither is known."""
        if self.label_names is not None:
            return len(self.label_names)
        if not self.labelled("train"):
            return self.declared_num_classes
        return int(max(self.train[self.label_column])) + 1


def find_columns(dataset, image_column: Optional[str] = None, label_column: Optional[str] = None,
                 require_label: bool = True):
    """Return ``(image_column, label_column)``, detected from the features when not given.

    With ``require_label=False`` a dataset without a label column (or without the one named) gives
    ``label_column=None`` instead of an error: data without labels, for the methods that need none.
    """
    from datasets import Image

    features = dataset.features
    names = list(features)
    if not require_label and label_column is not None and label_column not in features:
        label_column = None if _label_candidates(features) == [] else label_column
    for given, kind in ((image_column, "image"), (label_column, "label")):
        if given is not None and given not in features:
            raise ValueError(f"the dataset has no {kind} column {given!r}; its columns are {names}")
    if image_column is None:
        found = [n for n, f in features.items() if isinstance(f, Image)] or [n for n in _IMAGE_NAMES if n in features]
        if not found:
            raise ValueError(f"no image column found among {names}; name it with image_column=...")
        image_column = found[0]
    if label_column is None:
        found = _label_candidates(features)
        if not found:
            if not require_label:
                return image_column, None
            raise ValueError(f"no label column found among {names}; name it with label_column=...")
        label_column = found[0]
    return image_column, label_column


def _label_candidates(features) -> List[str]:
    from datasets import ClassLabel

    return [n for n, f in features.items() if isinstance(f, ClassLabel)] or [n for n in _LABEL_NAMES if n in features]


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
    # Split folders of images without classes (root/train/*.jpg, root/validation/*.jpg): datasets makes a label
    # column whose classes are the split folders (None in some splits, the folder's index in others).  Drop it:
    # the images have no labels.
    data = type(data)({name: _without_split_labels(split) for name, split in data.items()})
    if any(isinstance(f, ClassLabel) for split in data.values() for f in split.features.values()):
        return data
    # No labels.  Images directly in the folder: data without labels, for the methods that need none.  Images in
    # a single sub-folder: datasets drops the label column of one class, and one class is a mistake, not a choice.
    folders = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d))
                     and not d.startswith("."))
    nested = [d for d in folders if any(not f.startswith(".") for f in os.listdir(os.path.join(source, d)))
              and d.lower() not in _SPLIT_FOLDERS]  # root/train/*.jpg is a split of unlabelled images
    if nested and not _has_images_at_top(source):
        raise ValueError(f"the image folder {shorten(source)} has no class labels (its sub-folders: "
                         f"{shorten(folders)}); classification needs at least 2 classes, one sub-folder per class "
                         "(root/cat/*.png, root/dog/*.png). Images without labels go directly in the folder "
                         "(root/*.jpg), for the methods that need no labels (docs/any_teacher.md)")
    return data


def _without_split_labels(split):
    from datasets import ClassLabel

    splits = [name for name, f in split.features.items()
              if isinstance(f, ClassLabel) and all(n.lower() in _SPLIT_FOLDERS for n in f.names)]
    return split.remove_columns(splits) if splits else split


def _has_images_at_top(folder: str) -> bool:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {e.lower() for e in ImageFolder.EXTENSIONS}
    return any(os.path.splitext(f)[1].lower() in extensions for f in os.listdir(folder)
               if os.path.isfile(os.path.join(folder, f)))


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
    label_names: Optional[Sequence[str]] = None,
) -> ImageClassificationData:
    """Load an image-classification dataset with a train and an eval split.

    ``source``: ``None`` (the embedded digits), a Hub id, a folder (imagefolder
    layout, parquet files, or ``save_to_disk`` output), a parquet file or glob,
    or a ``datasets.Dataset``/``DatasetDict``.  When there is no eval split,
    ``validation_fraction`` of train is held out (stratified when possible).

    ``streaming=True``: the splits are streams (``datasets.IterableDataset``) of a Hub id, or of a folder or glob
    of Parquet or WebDataset (.tar) shards (:func:`hfkd.data.stream.load_stream`); nothing is held out of a
    stream, the eval split is the source's own (or none).  A stream's classes must be declared: a ``ClassLabel``
    column, or ``label_names`` for integer labels (WebDataset's ``.cls`` files).
    Data without a label column (a flat folder of images, a Parquet file with only images) loads with
    ``label_column=None``; the trainer accepts it for the methods that need no labels.  ``label_names`` names the
    classes: of data without labels (what a zero-shot teacher prompts for and the student predicts), or of integer
    labels without names; where the dataset names its classes, they must be the same.
    """
    from datasets import ClassLabel, Dataset

    if streaming:
        return _streamed_data(source, train_split, eval_split, image_column, label_column, revision, config_name,
                              cache_dir, label_names)

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
    evaluation = loaded[eval_split] if eval_split else None
    given_label = label_column
    image_column, label_column = find_columns(train, image_column, label_column, require_label=False)
    if label_column is None and evaluation is not None:  # unlabelled train images, maybe a labelled eval split
        label_column = find_columns(evaluation, image_column, given_label, require_label=False)[1]
    if given_label is not None and label_column is None:
        raise ValueError(f"the dataset has no label column {given_label!r}; its columns are {shorten(list(train.features))}")
    if len(train) == 0:
        raise ValueError(f"the train split of {name} is empty")
    labelled = label_column is not None and label_column in train.features
    if labelled and not isinstance(train.features[label_column], ClassLabel) \
            and train.features[label_column].dtype == "string":
        train = train.class_encode_column(label_column)
    names = _label_names(train, label_column) if labelled else None
    if labelled:
        check_num_classes(len(names) if names is not None else len(set(train[label_column])), name, label_column)
    if evaluation is not None and label_column is not None and label_column in evaluation.features:
        if labelled:
            check_eval_label_names(names, evaluation, label_column)
        else:
            names = _label_names(evaluation, label_column)
    names, label_source = _named_classes(names, label_names, train if labelled else None, label_column)
    if evaluation is None and validation_fraction > 0:
        stratify = label_column if labelled and isinstance(train.features[label_column], ClassLabel) else None
        parts = train.train_test_split(test_size=validation_fraction, seed=seed, stratify_by_column=stratify)
        train, evaluation = parts["train"], parts["test"]
        eval_split = f"{validation_fraction:g} of {train_split} (held out)"
    if evaluation is not None:
        find_columns(evaluation, image_column, None, require_label=False)  # the image column is there
        if labelled and label_column in evaluation.features \
                and evaluation.features[label_column] != train.features[label_column]:
            evaluation = evaluation.cast_column(label_column, train.features[label_column])
        if len(evaluation) == 0:
            raise ValueError(f"the eval split of {name} is empty")
    return ImageClassificationData(
        train=train, eval=evaluation, image_column=image_column, label_column=label_column,
        label_names=names, source=name, revision=revision,
        eval_split=eval_split if evaluation is not None else None, label_source=label_source,
    )


def _streamed_data(source, train_split, eval_split, image_column, label_column, revision, config_name, cache_dir,
                   label_names):
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
    image_column, label_column = find_columns(train, image_column, label_column, require_label=False)
    if label_column is None:
        raise ValueError(STREAM_WITHOUT_LABELS)
    feature = train.features[label_column]
    given = check_label_names(label_names, "label_names (--label_names)") if label_names is not None else None
    if given is not None and isinstance(feature, ClassLabel) and list(feature.names) != given:
        raise ValueError(f"label_names (--label_names) {shorten(given)} differ from the stream's own class names "
                         f"{shorten(list(feature.names))}; leave --label_names out to use the stream's names")
    source_of_names = FROM_DATASET
    if given is not None and not isinstance(feature, ClassLabel):  # integer labels 0..C-1, named here
        feature, source_of_names = ClassLabel(names=given), FROM_OPTION
        splits = {name_: split.cast_column(label_column, feature) if label_column in (split.features or {}) else split
                  for name_, split in splits.items()}
        train = splits[train_split]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"the streamed train split's label column {label_column!r} is {feature!r}, not a "
                         "datasets.ClassLabel, so its classes cannot be known without reading the whole stream: name "
                         "them with label_names=[...] (--label_names cat dog ... or a file), in the order of the label "
                         "numbers, or write the shards with a ClassLabel feature (datasets' to_parquet keeps it)")
    check_num_classes(len(feature.names), name, label_column)
    evaluation = splits[eval_split] if eval_split else None
    if evaluation is not None:
        check_eval_label_names(list(feature.names), evaluation, label_column)
    return ImageClassificationData(train=train, eval=evaluation, image_column=image_column, label_column=label_column,
                                   label_names=list(feature.names), source=name, revision=revision,
                                   eval_split=eval_split, label_source=source_of_names)


def _named_classes(names: Optional[List[str]], given: Optional[Sequence[str]], train, label_column: Optional[str]):
    """The class names and where they come from: the dataset's, or ``given`` (checked against the dataset's)."""
    if given is None:
        return names, FROM_DATASET if names is not None else None
    given = check_label_names(given, "label_names (--label_names)")
    if names is not None and names != given:
        raise ValueError(f"label_names (--label_names) {shorten(given)} differ from the dataset's own class names "
                         f"{shorten(names)}; leave --label_names out to use the dataset's names, or relabel the dataset")
    if names is None and train is not None:  # integer labels without names: one name per class index
        check_labels(train, label_column, "train", len(given))
    return given, FROM_DATASET if names is not None else FROM_OPTION
