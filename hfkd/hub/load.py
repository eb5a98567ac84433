"""``from_pretrained``: a saved or published student, ready for inference."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable, Dict, Optional, Union

from ..data.transforms import create_image_transform
from ..models.backbone import Backbone
from ..models.config_check import check_label_names, check_model_config, check_preprocess_record
from ..models.factory import create_backbone, is_timm_config
from ..models.preprocess import PreprocessConfig
from ..models.pruned import is_pruned_folder, load_pruned
from ..settings import shorten
from .save import HFKD_METADATA_FILE, PICKLE_SUFFIXES

# What a student needs; pickled weights are never even downloaded.
_ALLOW_PATTERNS = ["*.json", "*.safetensors", "README.md", "*.png"]


def _local_folder(repo_id_or_dir: str, revision: Optional[str], token, cache_dir) -> str:
    path = repo_id_or_dir[len("local-dir:"):] if repo_id_or_dir.startswith("local-dir:") else repo_id_or_dir
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{repo_id_or_dir!r} is not a folder with a saved student (config.json + model.safetensors)")
    from huggingface_hub import snapshot_download

    repo_id = path[len("hf-hub:"):] if path.startswith("hf-hub:") else path
    if "@" in repo_id and revision is None:
        repo_id, revision = repo_id.split("@", 1)
    return snapshot_download(repo_id, revision=revision, allow_patterns=_ALLOW_PATTERNS, token=token,
                             cache_dir=cache_dir)


def _check_files(folder: str, source: str) -> Dict[str, Any]:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{source} has no config.json: it is not a saved timm or transformers model")
    if not glob.glob(os.path.join(folder, "*.safetensors")):
        pickles = [f for f in os.listdir(folder) if f.endswith(PICKLE_SUFFIXES)]
        hint = f" (it has {', '.join(pickles)}, which hfkd never loads: unpickling can run arbitrary code)" if pickles else ""
        raise ValueError(
            f"{source} has no .safetensors weights{hint}. hfkd loads safetensors only; convert the checkpoint "
            "once in a trusted environment (e.g. model.save_pretrained(dir) or timm's save_for_hf(..., "
            "safe_serialization=True)) and load that"
        )
    for path in glob.glob(os.path.join(folder, "*.safetensors")):
        _check_safetensors(path)
    config = _read_json(config_path)
    check_model_config(config, config_path, timm_format=isinstance(config, dict) and is_timm_config(config))
    return config


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError and bad UTF-8 alike: name the file
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged: save or download the model again") from e


def _check_safetensors(path: str) -> None:
    """Read the header (it declares every tensor's byte range): a truncated or damaged file is named here."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 - SafetensorError and OSError alike: name the file
        raise ValueError(f"{path} is damaged (truncated, emptied or not safetensors: {e}); save the student "
                         "again or download it again") from e


def load_lineage(repo_id_or_dir: str, revision: Optional[str] = None, token=None) -> Optional[Dict[str, Any]]:
    """The distillation lineage (``hfkd.json``) of a saved student, or ``None`` if it has none."""
    folder = _local_folder(repo_id_or_dir, revision, token, None)
    path = os.path.join(folder, HFKD_METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def from_pretrained(repo_id_or_dir: str, revision: Optional[str] = None, *, token: Union[str, bool, None] = None,
                    cache_dir: Optional[str] = None, device: Union[str, "torch.device", None] = None) -> Backbone:  # noqa: F821
    """Load a distilled student (a Hub id, ``hf-hub:ORG/NAME[@rev]``, or a folder) for inference.

    Returns a :class:`hfkd.models.Backbone` in eval mode with its label names and
    preprocessing (``backbone.preprocess``; see :func:`eval_transform`).  The
    library (timm or transformers) is read from ``config.json``; the lineage,
    when present, is on ``backbone.lineage``.  Only ``.safetensors`` weights are
    read: a repository holding only pickled weights is refused.
    """
    folder = _local_folder(str(repo_id_or_dir), revision, token, cache_dir)
    config = _check_files(folder, repr(repo_id_or_dir))
    if is_pruned_folder(folder):  # a pruned student (hfkd.compress): narrower layers
        backbone = load_pruned(folder, config)
    elif is_timm_config(config):
        # timm's local-dir loader picks model.safetensors before any pickle (timm _PREFERRED_FILES).
        backbone = create_backbone(f"local-dir:{folder}", pretrained=True)
    else:
        backbone = create_backbone(folder, pretrained=True, use_safetensors=True)
    lineage_path = os.path.join(folder, HFKD_METADATA_FILE)
    lineage = None
    if os.path.isfile(lineage_path):
        lineage = _read_json(lineage_path)
        if not isinstance(lineage, dict):
            raise ValueError(f"{lineage_path} must hold a JSON object (the lineage), got {shorten(lineage)}; "
                             "the file is damaged: save or download the model again")
        recorded = (lineage.get("student") or {}).get("preprocess")
        if recorded:  # exact (crop_pct, interpolation), where the library's own config may round
            check_preprocess_record(recorded, lineage_path, "student.preprocess")
            backbone.preprocess = PreprocessConfig.from_dict(recorded)
        check_label_names(lineage_path, "label_names", lineage.get("label_names"), backbone.num_classes)
        if backbone.label_names is None and lineage.get("label_names"):
            backbone.set_label_names(lineage["label_names"])
    backbone.source = {"name": str(repo_id_or_dir), "revision": revision, "pretrained": True}
    backbone.lineage = lineage
    if device is not None:
        backbone.to(device)
    return backbone.eval()


def eval_transform(model: Union[Backbone, PreprocessConfig]) -> Callable:
    """The student's eval transform (PIL image -> normalised tensor), built by timm's ``create_transform``."""
    preprocess = model if isinstance(model, PreprocessConfig) else model.preprocess
    return create_image_transform(preprocess, is_training=False)
