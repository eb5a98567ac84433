"""Save a compressed student without pickle (``hfkd.models.pruned`` loads it back).

The folder is the student's ordinary save (``config.json``, ``model.safetensors``,
``hfkd.json``, ``README.md``) plus ``pruning.json`` (per-layer widths, see
:mod:`hfkd.models.pruned`), ``model.onnx`` (fp32) and ``model.int8.onnx``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from safetensors.torch import save

from ..models.backbone import Backbone
from ..models.pruned import PRUNING_FORMAT_VERSION, record_widths


def pruning_record(backbone: Backbone, report: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON written to ``pruning.json``: format, library, the pruning report and every layer's widths."""
    return {"format_version": PRUNING_FORMAT_VERSION, "library": backbone.library,
            "architecture": backbone.name, "report": report or {}, "widths": record_widths(backbone.model)}


def state_dict_bytes(backbone: Backbone) -> bytes:
    """The model's own state dict as safetensors bytes, under the names the live module uses.

    transformers' ``save_pretrained`` may rename keys to a legacy layout; a pruned
    model is rebuilt by hfkd (not by transformers), so its weights keep the names
    :func:`hfkd.models.pruned.load_pruned` loads strictly.
    """
    return save({k: v.detach().contiguous().clone() for k, v in backbone.model.state_dict().items()})
