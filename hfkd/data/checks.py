"""Checks of a dataset split before training: one split, decoded images, integer labels in range.

Each error names the split, the column, the offending row and value, and the fix.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..settings import shorten


def check_split(dataset, name: str) -> None:
    """A single split (a ``datasets.Dataset``, or a streamed ``datasets.IterableDataset``), not a dict of splits."""
    from datasets import DatasetDict, IterableDatasetDict

    if isinstance(dataset, (DatasetDict, IterableDatasetDict, dict)):
        raise TypeError(f"{name} is a {type(dataset).__name__} with splits {list(dataset)}; pass one split, "
                        f"e.g. {name}=dataset['train'] (or use hfkd.load_image_dataset, which picks the splits)")


def check_image_column(dataset, image_column: str, split: str) -> None:
    """Refuse an image column of file paths or text before any image is read."""
    feature = dataset.features[image_column]
    if getattr(feature, "dtype", None) in ("string", "large_string"):
        raise TypeError(
            f"the {split} column {image_column!r} holds strings (file paths?), not images; decode it with "
            f"dataset = dataset.cast_column({image_column!r}, datasets.Image())"
        )


def check_labels(dataset, label_column: str, split: str, num_classes: Optional[int] = None) -> None:
    """Every label is an integer in ``[0, num_classes)``; the error names the first offending row and value."""
    values = dataset[label_column]
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        row = next(i for i, v in enumerate(values) if not isinstance(v, (int, float, np.number)) or isinstance(v, bool))
        raise ValueError(f"{split} label {label_column!r} at row {row} is {values[row]!r}, not a class index") from None
    if array.ndim != 1:
        raise ValueError(f"{split} label {label_column!r} is not one class index per row (shape {array.shape}); "
                         "hfkd trains single-label classification")
    bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"{split} label {label_column!r} at row {row} is {values[row]!r}, not an integer class "
                         f"index ({bad.size} such rows); encode the labels as integers 0..C-1")
    low = np.flatnonzero(array < 0)
    if low.size:
        row = int(low[0])
        raise ValueError(f"{split} label {label_column!r} at row {row} is {values[row]!r}: class indices start at 0 "
                         f"({low.size} negative rows); drop or relabel those rows")
    if num_classes is not None:
        high = np.flatnonzero(array >= num_classes)
        if high.size:
            row = int(high[0])
            raise ValueError(f"{split} label {label_column!r} at row {row} is {values[row]!r}, but there are "
                             f"{num_classes} classes (0..{num_classes - 1}); {high.size} rows are out of range")


def check_eval_label_names(train_names: Optional[List[str]], eval_dataset, label_column: str) -> None:
    """The eval split's classes are the train split's, in the same order."""
    from datasets import ClassLabel

    feature = eval_dataset.features[label_column]
    if train_names is None or not isinstance(feature, ClassLabel) or list(feature.names) == list(train_names):
        return
    names = list(feature.names)
    missing = [n for n in train_names if n not in names]
    extra = [n for n in names if n not in train_names]
    detail = f"missing {missing[:5]}" if missing else ""
    detail += (", " if detail and extra else "") + (f"unknown {extra[:5]}" if extra else "")
    raise ValueError(
        f"the eval split's label names differ from the train split's ({detail or 'same names in another order'}): "
        f"train {train_names[:10]}, eval {names[:10]}; the eval split must use the train split's classes "
        "(cast it with eval = eval.cast_column(label, train.features[label]) if only the encoding differs)"
    )


def check_num_classes(num_classes: int, source: str, label_column: str) -> None:
    """Classification needs two classes; an imagefolder with one sub-folder has one."""
    if num_classes < 2:
        raise ValueError(
            f"{source} has {num_classes} class in {label_column!r}: classification needs at least 2. An image "
            "folder needs one sub-folder per class (root/cat/*.png, root/dog/*.png)"
        )


# -- bad images: unreadable, truncated, or larger than PIL's decompression-bomb limit --------------------------
BAD_IMAGE_POLICIES = ("raise", "skip")
_FIXES = ("remove or replace that file, skip such images with on_bad_image='skip' (--on_bad_image skip), or list "
          "them all before training with verify_images=True (--verify_images)")


def _bad_image_errors():
    from PIL import Image

    # UnidentifiedImageError is an OSError; DecompressionBombError (more than 2 x Image.MAX_IMAGE_PIXELS) is not.
    return OSError, SyntaxError, Image.DecompressionBombError


class BadImageError(OSError):
    """An image that cannot be read; ``row``, ``file`` and ``reason`` say which and why."""

    # Optional: a data-loader worker's error is re-raised in the main process as ``BadImageError(message)``.
    def __init__(self, message: str, row: Optional[int] = None, file: Optional[str] = None,
                 reason: Optional[str] = None):
        super().__init__(message)
        self.row, self.file, self.reason = row, file, reason


def _reason(error: BaseException) -> str:
    from PIL import Image

    if isinstance(error, Image.DecompressionBombError):  # PIL's message gives the pixel count and the limit
        return f"too large to decode safely: {error} (PIL.Image.MAX_IMAGE_PIXELS)"
    return f"{type(error).__name__}: {error}"


def bad_image_error(dataset, index: int, image_column: str, error: BaseException, split: str = "") -> BadImageError:
    """The error for an unreadable image: the split, row, column and file, why, and the ways out."""
    file, reason = image_file(dataset, index, image_column), _reason(error)
    where = f"{split} row" if split else "row"
    return BadImageError(f"cannot read the image of {where} {index} (column {image_column!r}, file "
                         f"{shorten(file)}): {shorten(reason, 300)}; {_FIXES}", index, file, reason)


def read_row(dataset, index: int, image_column: str, mode: str):
    """Row ``index`` and its image decoded in ``mode``; a missing or unreadable image is named."""
    try:
        row = dataset[index]
    except _bad_image_errors() as e:  # PIL: unidentified, truncated, or a decompression bomb
        raise bad_image_error(dataset, index, image_column, e) from e
    return _image(row[image_column], dataset, index, image_column, mode), row


def read_rows(dataset, indices: Sequence[int], image_column: str, mode: str, on_bad_image: str = "raise"):
    """Rows ``indices`` in one ``datasets`` read (a dict of columns) and their images decoded in ``mode``.

    Returns ``(images, rows, bad)``.  With ``on_bad_image="skip"`` the rows whose image cannot be read are left
    out of ``images`` and ``rows`` and their indices are ``bad``; with ``"raise"`` the first one raises
    :class:`BadImageError` naming it.
    """
    try:
        rows = dataset[list(indices)]
        images = [_image(image, dataset, index, image_column, mode)
                  for image, index in zip(rows[image_column], indices)]
        return images, rows, []
    except _bad_image_errors():
        pass
    # One row at a time: to name the row and file that cannot be read, or to leave them out.
    images, kept, bad = [], [], []
    for index in indices:
        try:
            image, row = read_row(dataset, index, image_column, mode)
        except BadImageError:
            if on_bad_image != "skip":
                raise
            bad.append(index)
            continue
        images.append(image)
        kept.append(row)
    columns = {k: [row[k] for row in kept] for k in (kept[0] if kept else {})}
    return images, columns, bad


def read_encoded(dataset, indices: Sequence[int], image_column: str, on_bad_image: str = "raise"):
    """Rows ``indices`` with each image's file bytes as stored, not decoded (``gpu_decode`` decodes them later).

    ``dataset``'s image column must be ``datasets.Image(decode=False)``. Each image's header is read (by PIL,
    which applies its decompression-bomb limit), so an unreadable file is named, or skipped, here as
    :func:`read_rows` does; a file whose header is sound but whose data is truncated fails when decoded.
    Returns ``(data, rows, bad)``.
    """
    import io
    import warnings

    from PIL import Image

    rows = dataset[list(indices)]
    data, kept, bad = [], [], []
    for position, (value, index) in enumerate(zip(rows[image_column], indices)):
        try:
            if not value or not (value.get("bytes") or value.get("path")):
                raise OSError("the row has no image")
            encoded = value.get("bytes")
            if not encoded:
                with open(value["path"], "rb") as f:
                    encoded = f.read()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.open(io.BytesIO(encoded)).close()  # the header only
        except _bad_image_errors() as e:
            error = bad_image_error(dataset, index, image_column, e)
            if on_bad_image != "skip":
                raise error from e
            bad.append(index)
            continue
        data.append(encoded)
        kept.append(position)
    if bad:
        rows = {k: [v[p] for p in kept] for k, v in rows.items()}
    return data, rows, bad


def verify_images(dataset, image_column: str, split: str = "train", chunk: int = 512) -> List[BadImageError]:
    """Every row whose image header cannot be read, or declares more pixels than PIL decodes safely.

    Cheap: each file is opened and checked by PIL (``Image.open`` reads the header and applies the
    decompression-bomb limit, ``verify()`` walks the file's structure) without decoding the pixels.
    Columns that are not ``datasets.Image`` (arrays) are decoded already and have nothing to verify.
    """
    import io
    import warnings

    from datasets import Image as ImageFeature
    from PIL import Image

    if not isinstance((getattr(dataset, "features", None) or {}).get(image_column), ImageFeature):
        return []
    raw = dataset.cast_column(image_column, ImageFeature(decode=False))
    bad = []
    for start in range(0, len(raw), chunk):
        for offset, value in enumerate(raw[start:start + chunk][image_column]):
            index = start + offset
            try:
                if not value or not (value.get("bytes") or value.get("path")):
                    raise OSError("the row has no image")
                source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(source) as image:
                        image.verify()
            except _bad_image_errors() as e:
                bad.append(bad_image_error(dataset, index, image_column, e, split))
    return bad


def bad_images_error(bad: Sequence[BadImageError], split: str, limit: int = 20) -> ValueError:
    """One error listing the bad images ``verify_images`` found (the first ``limit``)."""
    lines = [f"  row {b.row}: {shorten(b.file)}: {shorten(b.reason, 200)}" for b in bad[:limit]]
    more = [f"  ... and {len(bad) - limit} more"] if len(bad) > limit else []
    return ValueError(f"{len(bad)} image(s) of the {split} split cannot be read:\n" + "\n".join(lines + more)
                      + "\nRemove or replace them, or skip them with on_bad_image='skip' (--on_bad_image skip)")


def _image(image, dataset, index: int, image_column: str, mode: str):
    from PIL import Image

    if image is None:
        raise ValueError(f"row {index} of column {image_column!r} has no image (None); drop such rows first")
    if isinstance(image, (str, bytes)):
        raise TypeError(f"row {index} of column {image_column!r} is a {type(image).__name__}, not an image; "
                        f"cast the column with dataset.cast_column({image_column!r}, datasets.Image())")
    try:
        if not hasattr(image, "convert"):
            image = Image.fromarray(np.asarray(image))
        # Already in the mode (datasets decodes RGB JPEGs as RGB): convert() would copy it, ~3 % of a 224-px
        # training sample's cost (docs/performance.md); the transforms never write into their input.
        return image if image.mode == mode else image.convert(mode)
    except _bad_image_errors() as e:  # PIL decodes lazily: a truncated file fails here
        raise bad_image_error(dataset, index, image_column, e) from e


def image_file(dataset, index: int, image_column: str) -> str:
    """Where row ``index``'s image comes from: its file path, or that it is embedded in the dataset."""
    from datasets import Image

    try:
        raw = dataset.cast_column(image_column, Image(decode=False))[index][image_column]
        return (raw or {}).get("path") or "an embedded image"
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return "file unknown"
