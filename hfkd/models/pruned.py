"""A pruned student (``hfkd.compress``): its per-layer widths as JSON, and loading it back from safetensors.

A pruned network is the original architecture with narrower layers.  Neither
timm's nor transformers' config can say "this conv has 13 output channels", so
hfkd records every layer's width attributes (``out_channels``, ``in_features``,
``num_features``, heads, ...) in ``pruning.json``.  Rebuilding = create the
original architecture, set those attributes, give every parameter and buffer
the shape stored in ``model.safetensors``, then load the weights strictly.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Sequence

from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .backbone import Backbone
from ..settings import shorten
from .config_check import check_widths
from .factory import create_backbone, is_timm_config

PRUNING_FILE = "pruning.json"
PRUNING_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
# Module attributes that describe a width; torch-pruning updates those of the layers it shrinks and hfkd the
# head counts of attention modules.  ``groups`` changes with depthwise convolutions.
WIDTH_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape", "num_channels", "num_attention_heads", "num_heads", "all_head_size",
               "embed_dim", "head_dim", "attention_head_size")


def record_widths(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """``{module name: {attribute: value}}`` for every module with a width attribute."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {a: _jsonable(getattr(module, a)) for a in WIDTH_ATTRS
                 if isinstance(getattr(module, a, None), (int, tuple, list)) and not isinstance(getattr(module, a), bool)}
        if attrs:
            out[name] = attrs
    return out


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def apply_widths(model: nn.Module, widths: Mapping[str, Mapping[str, Any]],
                 shapes: Mapping[str, Sequence[int]]) -> nn.Module:
    """Shrink ``model`` in place to the recorded ``widths`` and the tensor ``shapes`` of a saved state dict.

    Tensors get uninitialised storage of the saved shape: the caller loads the weights next (strictly).
    """
    modules = dict(model.named_modules())
    missing = [n for n in widths if n not in modules]
    if missing:
        raise ValueError(f"{PRUNING_FILE} names layers this architecture does not have: {missing[:5]}; "
                         "the folder was saved from a different model")
    for name, attrs in widths.items():
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, shape in shapes.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            continue  # load_state_dict(strict=True) reports it
        shape = tuple(shape)
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            param = owner._parameters[leaf]
            if tuple(param.shape) != shape:
                owner._parameters[leaf] = nn.Parameter(param.new_empty(shape), requires_grad=param.requires_grad)
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            buf = owner._buffers[leaf]
            if tuple(buf.shape) != shape:
                owner._buffers[leaf] = buf.new_empty(shape)
    return model


def is_pruned_folder(folder: str) -> bool:
    """Whether ``folder`` holds a pruned student (``pruning.json`` beside the weights)."""
    return os.path.isfile(os.path.join(folder, PRUNING_FILE))


def load_pruned(folder: str, config: Dict[str, Any]) -> Backbone:
    """Rebuild the original architecture from ``config.json``, narrow it to ``pruning.json``, load the weights.

    Weights are read with safetensors (no pickle) and loaded strictly: a missing
    or misshapen tensor is an error, never a silent re-initialisation.
    """
    record_path = os.path.join(folder, PRUNING_FILE)
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except ValueError as e:
        raise ValueError(f"{record_path} is not valid JSON ({e}); the file is damaged: save the pruned student again") from e
    version = record.get("format_version") if isinstance(record, dict) else None
    if version != PRUNING_FORMAT_VERSION:
        raise ValueError(f"{folder}/{PRUNING_FILE} has format_version {shorten(version)}; "
                         f"this hfkd reads version {PRUNING_FORMAT_VERSION}: upgrade hfkd")
    check_widths(record.get("widths"), record_path)
    # pretrained=False: the original architecture only; its full-width weights would not fit.
    backbone = create_backbone(f"local-dir:{folder}" if is_timm_config(config) else folder, pretrained=False)
    path = os.path.join(folder, WEIGHTS_FILE)
    with safe_open(path, framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    apply_widths(backbone.model, record["widths"], shapes)
    backbone.model.load_state_dict(load_file(path), strict=True)
    return backbone
