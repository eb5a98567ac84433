"""The sizes a model's files declare (``config.json``, ``hfkd.json``, ``pruning.json``), checked before anything
is built from them.

Why: timm and transformers trust these numbers.  ``num_classes: -3`` makes timm build its default 1000-class
head with random weights (the saved head is then silently dropped), ``1e9`` asks torch for 384 GB, ``"ten"``
fails deep inside timm with a ``TypeError``, and ``input_size: [3, 0, -5]`` is accepted until the first
training step.  Each check names the file and the field, quotes the value (``shorten``) and says the fix.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

from ..settings import shorten

# Bounds on what a classifier can sanely declare; a value beyond them is a damaged or edited file, not a model.
MAX_NUM_CLASSES = 1_000_000  # the largest public label sets (e.g. iNaturalist, ImageNet-21k) are well below
MAX_CHANNELS = 1024  # image channels (3 for RGB; multispectral inputs have tens)
MAX_IMAGE_SIDE = 32_768  # pixels per side of the training resolution
MAX_WIDTH = 1_000_000  # a layer width (features, channels, heads) recorded by timm or by pruning.json

_FIX = "the file is damaged or was edited; save the model again or correct the field"


class ModelConfigError(ValueError):
    """A size in a model's file that no model can have; the message names the file, the field and the fix."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(path: str, field: str, value: Any, want: str) -> None:
    raise ModelConfigError(f"{path}: {field} must be {want}, got {shorten(value)}; {_FIX}")


def check_count(path: str, field: str, value: Any, bound: int, minimum: int = 1) -> None:
    """``value`` an integer in ``[minimum, bound]``."""
    if not _is_int(value) or not minimum <= value <= bound:
        low = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        _fail(path, field, value, f"{low} (at most {bound:,})")


def check_input_size(path: str, field: str, value: Any) -> None:
    """``(channels, height, width)``: three positive integers within the bounds."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_int(v) and v > 0 for v in value) \
            or value[0] > MAX_CHANNELS or max(value[1:]) > MAX_IMAGE_SIDE:
        _fail(path, field, value, f"[channels, height, width]: three positive integers (channels at most "
                                  f"{MAX_CHANNELS}, sides at most {MAX_IMAGE_SIDE:,})")


def _check_image_size(path: str, field: str, value: Any) -> None:
    sizes = [value] if not isinstance(value, (list, tuple)) else list(value)
    if not 1 <= len(sizes) <= 2 or not all(_is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in sizes):
        _fail(path, field, value, f"a positive integer or [height, width] (at most {MAX_IMAGE_SIDE:,})")


def _check_normalisation(path: str, prefix: str, cfg: Dict[str, Any], channels: Optional[int]) -> None:
    for key in ("mean", "std"):
        value = cfg.get(key)
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        ok = ok and (key == "mean" or all(v > 0 for v in values))
        if not ok or (channels is not None and len(values) not in (1, channels)):
            want = "finite numbers" if key == "mean" else "positive finite numbers"
            _fail(path, f"{prefix}{key}", value, f"{want}, one per channel" + (f" ({channels})" if channels else ""))


def check_label_names(path: str, field: str, names: Any, num_classes: Optional[int]) -> None:
    if names is None:
        return
    if not isinstance(names, (list, dict)):
        _fail(path, field, names, "a list of class names")
    if num_classes is not None and len(names) != num_classes:
        raise ModelConfigError(f"{path}: {field} has {len(names):,} names but the model has {num_classes:,} classes "
                               f"({shorten(names)}); {_FIX}")


def check_timm_config(config: Dict[str, Any], path: str) -> None:
    num_classes = config.get("num_classes")
    if "num_classes" in config:  # 0: a backbone without a classifier (timm's num_classes=0)
        check_count(path, "num_classes", num_classes, MAX_NUM_CLASSES, minimum=0)
    if "num_features" in config:
        check_count(path, "num_features", config["num_features"], MAX_WIDTH)
    pretrained_cfg = config.get("pretrained_cfg")
    if not isinstance(pretrained_cfg, dict):
        _fail(path, "pretrained_cfg", pretrained_cfg, "an object (timm's data config)")
    channels = None
    if pretrained_cfg.get("input_size") is not None:
        check_input_size(path, "pretrained_cfg.input_size", pretrained_cfg["input_size"])
        channels = pretrained_cfg["input_size"][0]
    for key in ("test_input_size", "min_input_size"):
        if pretrained_cfg.get(key) is not None:
            check_input_size(path, f"pretrained_cfg.{key}", pretrained_cfg[key])
    if pretrained_cfg.get("num_classes") is not None:  # timm builds the head from the top-level value
        check_count(path, "pretrained_cfg.num_classes", pretrained_cfg["num_classes"], MAX_NUM_CLASSES, minimum=0)
    _check_normalisation(path, "pretrained_cfg.", pretrained_cfg, channels)
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        _fail(path, "model_args", model_args, "an object (keyword arguments of the architecture)")
    if "in_chans" in model_args:
        check_count(path, "model_args.in_chans", model_args["in_chans"], MAX_CHANNELS)
    if "num_classes" in model_args:
        check_count(path, "model_args.num_classes", model_args["num_classes"], MAX_NUM_CLASSES, minimum=0)
    if model_args.get("img_size") is not None:
        _check_image_size(path, "model_args.img_size", model_args["img_size"])
    check_label_names(path, "label_names", config.get("label_names"), num_classes)


def check_transformers_config(config: Dict[str, Any], path: str) -> None:
    id2label = config.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict) or not 1 <= len(id2label) <= MAX_NUM_CLASSES:
            _fail(path, "id2label", id2label, f"an object of 1 to {MAX_NUM_CLASSES:,} class names")
        if sorted(str(k) for k in id2label) != sorted(str(i) for i in range(len(id2label))):
            _fail(path, "id2label", id2label, f"keyed by the class ids 0 to {len(id2label) - 1}")
    if "num_labels" in config:
        check_count(path, "num_labels", config["num_labels"], MAX_NUM_CLASSES)
        if id2label is not None and config["num_labels"] != len(id2label):
            raise ModelConfigError(f"{path}: num_labels is {config['num_labels']:,} but id2label names "
                                   f"{len(id2label):,} classes; {_FIX}")
    if "num_channels" in config:
        check_count(path, "num_channels", config["num_channels"], MAX_CHANNELS)
    if config.get("image_size") is not None:
        _check_image_size(path, "image_size", config["image_size"])


def check_model_config(config: Any, path: str, timm_format: bool) -> None:
    """Every size ``config.json`` (at ``path``) declares; raises :class:`ModelConfigError` naming the field."""
    if not isinstance(config, dict):
        _fail(path, "the file", config, "a JSON object")
    if timm_format:
        check_timm_config(config, path)
    else:
        check_transformers_config(config, path)


def check_preprocess_record(record: Any, path: str, field: str) -> None:
    """A recorded preprocessing (``hfkd.json``'s ``student.preprocess``): input size and normalisation."""
    if not isinstance(record, dict):
        _fail(path, field, record, "an object (input_size, mean, std, ...)")
    if record.get("input_size") is not None:
        check_input_size(path, f"{field}.input_size", record["input_size"])
    channels = record["input_size"][0] if record.get("input_size") is not None else None
    _check_normalisation(path, f"{field}.", record, channels)


def check_widths(widths: Any, path: str) -> None:
    """``pruning.json``'s ``widths``: ``{layer: {attribute: width or [widths]}}``, each a count within bounds."""
    if not isinstance(widths, dict):
        _fail(path, "widths", widths, "an object {layer: {attribute: width}}")
    for layer, attrs in widths.items():
        if not isinstance(attrs, dict):
            _fail(path, f"widths.{layer}", attrs, "an object {attribute: width}")
        for attr, value in attrs.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(_is_int(v) and 0 <= v <= MAX_WIDTH for v in values):
                _fail(path, f"widths.{layer}.{attr}", value, f"a width from 0 to {MAX_WIDTH:,} (or a list of them)")
