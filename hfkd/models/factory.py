"""``create_backbone``: a student or teacher from a name, a Hub id, a folder or a module."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from .backbone import Backbone, ModuleBackbone, TimmBackbone, TransformersBackbone
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

ModelSource = Union[str, nn.Module, Backbone, "PretrainedConfig"]  # noqa: F821


def is_timm_config(cfg: Dict[str, Any]) -> bool:
    # transformers' own rule: a config with pretrained_cfg and no model_type is timm's (docs/hub.md).
    return "pretrained_cfg" in cfg and "model_type" not in cfg


def _read_config(name: str, revision: Optional[str]) -> Dict[str, Any]:
    if os.path.isdir(name):
        path = os.path.join(name, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name} is a folder without config.json; it is not a saved timm or transformers model")
    else:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name, "config.json", revision=revision)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _timm_preprocess(model: nn.Module) -> PreprocessConfig:
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    return PreprocessConfig.from_dict(cfg)


def _timm_labels(model: nn.Module, num_classes: int):
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if isinstance(names, dict):
        names = [names.get(i, names.get(str(i))) for i in range(num_classes)]
    return list(names) if names is not None and len(names) == num_classes else None


def _wrap_timm(model: nn.Module, source: Dict[str, Any]) -> TimmBackbone:
    return TimmBackbone(model, _timm_preprocess(model), model.num_classes, _timm_labels(model, model.num_classes), source)


def _transformers_preprocess(model: nn.Module, path: Optional[str], revision: Optional[str]) -> PreprocessConfig:
    size = getattr(model.config, "image_size", 224)
    size = size if isinstance(size, int) else max(size)
    pre = PreprocessConfig(input_size=(getattr(model.config, "num_channels", 3), size, size))
    if path is None:
        return pre
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(path, revision=revision)
    except (OSError, ValueError):
        return pre
    d = pre.to_dict()
    s = getattr(proc, "size", None) or {}
    if "height" in s:
        d["input_size"] = (d["input_size"][0], s["height"], s["width"])
    elif "shortest_edge" in s:
        d["input_size"] = (d["input_size"][0], s["shortest_edge"], s["shortest_edge"])
    crop = getattr(proc, "crop_size", None)
    if isinstance(crop, dict) and "height" in crop:
        d["input_size"] = (d["input_size"][0], crop["height"], crop["width"])
    d["mean"] = getattr(proc, "image_mean", None) or IMAGENET_MEAN
    d["std"] = getattr(proc, "image_std", None) or IMAGENET_STD
    d["crop_pct"] = getattr(proc, "crop_pct", None) or 1.0
    return PreprocessConfig.from_dict(d)


def _transformers_labels(model: nn.Module):
    id2label = getattr(model.config, "id2label", None) or {}
    names = [id2label.get(i, id2label.get(str(i))) for i in range(model.config.num_labels)]
    if any(n is None for n in names) or all(str(n) == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return [str(n) for n in names]


def _wrap_transformers(model: nn.Module, source: Dict[str, Any], path: Optional[str] = None,
                       revision: Optional[str] = None) -> TransformersBackbone:
    return TransformersBackbone(
        model, _transformers_preprocess(model, path, revision), model.config.num_labels,
        _transformers_labels(model), source,
    )


def _from_transformers(path: str, num_classes, revision, pretrained, model_kwargs) -> TransformersBackbone:
    from transformers import AutoConfig, AutoModelForImageClassification

    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    if pretrained:
        model = AutoModelForImageClassification.from_pretrained(path, revision=revision, **kwargs)
    else:
        kwargs.pop("ignore_mismatched_sizes", None)
        config = AutoConfig.from_pretrained(path, revision=revision, **kwargs)
        model = AutoModelForImageClassification.from_config(config)
    return _wrap_transformers(model, {"name": path, "revision": revision, "pretrained": pretrained}, path, revision)


def _from_timm(name: str, num_classes, revision, pretrained, model_kwargs) -> TimmBackbone:
    import timm

    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if revision and name.startswith("hf-hub:") and "@" not in name:
        name = f"{name}@{revision}"
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return _wrap_timm(model, {"name": name, "revision": revision, "pretrained": pretrained})


def create_backbone(
    model: ModelSource,
    num_classes: Optional[int] = None,
    pretrained: bool = True,
    image_size: Optional[Union[int, Sequence[int]]] = None,
    label_names: Optional[Sequence[str]] = None,
    revision: Optional[str] = None,
    preprocess: Optional[PreprocessConfig] = None,
    **model_kwargs: Any,
) -> Backbone:
    """Build a :class:`Backbone` from any supported source.

    ``model`` may be a timm registry name (``"resnet18"``), a timm Hub id
    (``"hf-hub:org/name"``), a Hub id or local folder of a timm or transformers
    checkpoint (``"org/name"``, ``"./student"``, ``"local-dir:./student"``), a
    transformers config (random init), a timm / transformers / plain
    ``nn.Module``, or a :class:`Backbone` (returned as is, relabelled if asked).

    ``pretrained`` only applies to names: registry names load timm's weights,
    Hub ids and folders load theirs.  ``image_size`` overrides the training
    resolution recorded in the preprocessing.
    """
    _check_sizes(num_classes, image_size)
    if isinstance(model, Backbone):
        backbone = model
    elif isinstance(model, nn.Module):
        backbone = _wrap_module(model, preprocess)
    elif type(model).__name__.endswith("Config") and hasattr(model, "to_dict"):
        from transformers import AutoModelForImageClassification

        if num_classes is not None:
            model.num_labels = num_classes
        backbone = _wrap_transformers(AutoModelForImageClassification.from_config(model),
                                      {"name": getattr(model, "model_type", "transformers"), "pretrained": False})
    elif isinstance(model, str):
        backbone = _from_name_or_explain(model, num_classes, revision, pretrained, model_kwargs)
    else:
        raise TypeError(f"cannot build a model from {type(model).__name__}; pass a name, a folder or an nn.Module")
    if num_classes is not None and backbone.num_classes != num_classes:
        raise ValueError(f"{backbone.name} predicts {backbone.num_classes} classes, but {num_classes} were asked for")
    if preprocess is not None:
        backbone.preprocess = preprocess
    backbone.preprocess = backbone.preprocess.with_image_size(image_size)
    backbone.set_label_names(label_names)
    return backbone


def _check_sizes(num_classes, image_size) -> None:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer (got {num_classes!r})")
    sizes = [image_size] if isinstance(image_size, (int, float)) else list(image_size or [])
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sizes):
        raise ValueError(f"image_size must be a positive integer or (height, width) (got {image_size!r})")


def _from_name_or_explain(name: str, num_classes, revision, pretrained, model_kwargs) -> Backbone:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return _from_name(name, num_classes, revision, pretrained, model_kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        what = "the pretrained weights" if pretrained else "the configuration"
        fix = "Pass pretrained=False (--student_pretrained false) to start from random weights, or go" if pretrained \
            else "Go"
        raise OSError(
            f"cannot load {what} of {name!r}: the Hub is unreachable (offline?) and they are not in the local "
            f"cache. {fix} online once (HF_HUB_OFFLINE=0) to download them, or give a local folder"
        ) from e


def _wrap_module(model: nn.Module, preprocess: Optional[PreprocessConfig]) -> Backbone:
    if hasattr(model, "pretrained_cfg") and hasattr(model, "forward_head"):
        return _wrap_timm(model, {"name": model.pretrained_cfg.get("architecture"), "pretrained": False})
    if hasattr(model, "config") and hasattr(model.config, "num_labels"):
        return _wrap_transformers(model, {"name": getattr(model.config, "_name_or_path", None), "pretrained": False})
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None or preprocess is None:
        raise ValueError(
            f"a plain {type(model).__name__} needs `model.num_classes` and an explicit `preprocess=PreprocessConfig(...)`"
        )
    return ModuleBackbone(model, preprocess, num_classes, source={"name": type(model).__name__})


def run_folder_student(path: str) -> Optional[str]:
    """``path/student`` when ``path`` is a run's output folder (no model of its own, a saved student inside)."""
    student = os.path.join(path, "student")
    if (os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json"))
            and os.path.isfile(os.path.join(student, "config.json"))):
        return student
    return None


def _from_name(name: str, num_classes, revision, pretrained, model_kwargs) -> Backbone:
    import timm

    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        return _from_timm(name, num_classes, revision, pretrained, model_kwargs)
    local = name[len("local-dir:"):] if name.startswith("local-dir:") else name
    saved = run_folder_student(local)
    if saved is not None:
        # An hfkd run's output folder (`hfkd train --output_dir outputs/teacher`): its saved student, named by the
        # run's folder so that tables and cards say "teacher", not "teacher/student".
        backbone = _from_name(saved, num_classes, revision, pretrained, model_kwargs)
        backbone.source["name"] = ("local-dir:" if backbone.library == "timm" else "") + os.path.abspath(local)
        return backbone
    if os.path.isdir(local) or "/" in name and not timm.is_model(name):
        cfg = _read_config(local, revision)
        if is_timm_config(cfg):
            prefix = "local-dir:" if os.path.isdir(local) else "hf-hub:"
            return _from_timm(prefix + local, num_classes, revision, pretrained, model_kwargs)
        return _from_transformers(local, num_classes, revision, pretrained, model_kwargs)
    if timm.is_model(name):
        return _from_timm(name, num_classes, revision, pretrained, model_kwargs)
    raise ValueError(
        f"unknown model {name!r}: not a timm model name (see timm.list_models()), an existing folder, "
        "or a Hub id of the form 'org/name'"
    )
