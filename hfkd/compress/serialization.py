"""Save a compressed student without pickle, and rebuild a pruned one from safetensors + ``pruning.json``.

The folder is the student's ordinary save (``config.json``, ``model.safetensors``,
``hfkd.json``, ``README.md``) plus ``pruning.json`` (per-layer widths, see
:mod:`hfkd.compress.structure`), ``model.onnx`` (fp32) and ``model.int8.onnx``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ..models.backbone import Backbone
from .structure import PRUNING_FILE, PRUNING_FORMAT_VERSION, apply_widths, record_widths

WEIGHTS_FILE = "model.safetensors"


def pruning_record(backbone: Backbone, report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON written to ``pruning.json``: format, library, the pruning report and every layer's widths."""
    return {"format_version": PRUNING_FORMAT_VERSION, "library": backbone.library,
            "architecture": backbone.name, "report": report or {}, "widths": record_widths(backbone.model)}


def state_dict_bytes(backbone: Backbone) -> bytes:
    """The model's own state dict as safetensors bytes, under the names the live module uses.

    transformers' ``save_pretrained`` may rename keys to a legacy layout; a pruned
    model is rebuilt by hfkd (not by transformers), so its weights keep the names
    :func:`load_pruned` loads strictly.
    """
    from safetensors.torch import save

    return save({k: v.detach().contiguous().clone() for k, v in backbone.model.state_dict().items()})


def is_pruned_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, PRUNING_FILE))


def load_pruned(folder: str, config: Dict[str, Any]) -> Backbone:
    """Rebuild the original architecture from ``config.json``, narrow it to ``pruning.json``, load the weights.

    Weights are read with safetensors (no pickle) and loaded strictly: a missing
    or misshapen tensor is an error, never a silent re-initialisation.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..models.factory import create_backbone

    with open(os.path.join(folder, PRUNING_FILE), encoding="utf-8") as f:
        record = json.load(f)
    if record.get("format_version") != PRUNING_FORMAT_VERSION:
        raise ValueError(f"{folder}/{PRUNING_FILE} has format_version {record.get('format_version')}; "
                         f"this hfkd reads version {PRUNING_FORMAT_VERSION}: upgrade hfkd")
    is_timm = "pretrained_cfg" in config and "model_type" not in config
    # pretrained=False: the original architecture only; its full-width weights would not fit.
    backbone = create_backbone(f"local-dir:{folder}" if is_timm else folder, pretrained=False)
    path = os.path.join(folder, WEIGHTS_FILE)
    with safe_open(path, framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    apply_widths(backbone.model, record["widths"], shapes)
    backbone.model.load_state_dict(load_file(path), strict=True)
    return backbone
