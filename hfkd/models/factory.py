"""``create_backbone``: a student or teacher from a name, a Hub id, a folder or a module."""
from __future__ import annotations

import json
import os
import shlex
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..settings import shorten
from .backbone import Backbone, HeadlessTransformersBackbone, ModuleBackbone, TimmBackbone, TransformersBackbone
from .config_check import check_input_size, check_model_config
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig
from .zero_shot import ZeroShotBackbone, is_zero_shot_config

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
    where = os.path.join(name, "config.json") if os.path.isdir(name) else f"config.json of {name}"
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:  # JSONDecodeError and bad UTF-8 alike: name the file
        raise ValueError(f"{where} is not valid JSON ({e}); the file is damaged: save or download the model again") from e
    # Checked before timm or transformers builds anything from it (hfkd/models/config_check.py).
    check_model_config(config, where, timm_format=isinstance(config, dict) and is_timm_config(config))
    return config


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


# Weight files timm or transformers would read instead of a pickle when both are there (timm's
# _PREFERRED_FILES puts pytorch_model.bin before any other name, so another *.safetensors is not enough).
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "open_clip_model.safetensors",
                 "open_clip_pytorch_model.safetensors")
_PICKLE_WEIGHTS = (".bin", ".pth", ".pt", ".pth.tar", ".pkl", ".ckpt")


def check_weights_format(folder: str, name: str, allow_pickle_weights: bool = False) -> None:
    """Refuse a model folder whose weights would be read from a pickle (hfkd loads safetensors only).

    torch's ``weights_only`` unpickler narrows what a pickle can do but is still an unpickler of a file
    from anywhere; ``allow_pickle_weights`` is the explicit opt-in that keeps it.
    """
    files = sorted(os.listdir(folder))
    pickles = [f for f in files if f.endswith(_PICKLE_WEIGHTS)]
    if allow_pickle_weights or not pickles or any(f in _SAFE_WEIGHTS for f in files):
        return
    raise ValueError(
        f"{shorten(name)} holds only pickled weights {shorten(pickles)}: hfkd loads safetensors only, for teachers "
        "as for students, because unpickling a file can run code. Convert it once, where you trust the file:\n"
        f"  cd {shlex.quote(folder)} && {_convert_command(pickles[0])}\n{_PICKLE_OPT_IN}"
    )


_PICKLE_OPT_IN = ("or pass allow_pickle_weights=True (--allow_pickle_weights) to load it with torch's weights_only "
                  "unpickler")


def _convert_command(pickle_file: str) -> str:
    """One shell command that writes ``model.safetensors`` next to ``pickle_file`` (run in its folder)."""
    code = ("import torch, safetensors.torch as st; st.save_file({k: v.contiguous() for k, v in "
            f"torch.load({json.dumps(pickle_file)}, weights_only=True).items()}}, \"model.safetensors\")")
    return f"python -c {shlex.quote(code)}"


def check_hub_weights_format(name: str, revision: Optional[str], allow_pickle_weights: bool = False) -> None:
    """Refuse a timm Hub model (``hf-hub:ORG/NAME``) without ``model.safetensors``: timm would unpickle the rest.

    timm reads ``model.safetensors`` when the repository has it (downloaded here first, so it is only
    fetched once) and falls back to ``pytorch_model.bin`` through torch's ``weights_only`` unpickler.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if allow_pickle_weights:
        return
    repo_id, _, pinned = name.split(":", 1)[-1].partition("@")
    try:
        hf_hub_download(repo_id, "model.safetensors", revision=pinned or revision)
    except EntryNotFoundError:
        folder = repo_id.split("/")[-1]
        raise ValueError(
            f"{shorten(name)} has no model.safetensors on the Hub: its weights are pickled, and hfkd loads "
            "safetensors only, for teachers as for students, because unpickling a file can run code. Convert them "
            f"once, where you trust the file, and give the folder instead:\n  hf download {shlex.quote(repo_id)} "
            f"--local-dir {shlex.quote(folder)} && cd {shlex.quote(folder)} && {_convert_command('pytorch_model.bin')}"
            f"\n{_PICKLE_OPT_IN}"
        ) from None


def check_remote_code(cfg: Dict[str, Any], name: str, trust_remote_code: bool = False) -> None:
    """Refuse, without prompting, a transformers model that only its own code (``auto_map``) can build.

    transformers asks ``Do you wish to run the custom code? [y/N]`` on a terminal when ``trust_remote_code``
    is left unset; hfkd always sets it, so this names the opt-in instead.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if trust_remote_code or not cfg.get("auto_map") or cfg.get("model_type") in CONFIG_MAPPING:
        return  # a known model_type is built by transformers' own class, never by the folder's code
    raise ValueError(
        f"{shorten(name)} needs its own Python code to be built (config.json: model_type "
        f"{shorten(cfg.get('model_type'))}, auto_map {shorten(cfg.get('auto_map'))}); hfkd never runs a model's "
        "code unless asked. Read that code, then pass trust_remote_code=True (--trust_remote_code) if you trust it"
    )


def _transformers_preprocess(model: nn.Module, path: Optional[str], revision: Optional[str],
                             trust_remote_code: bool = False) -> PreprocessConfig:
    # A two-tower model (CLIP) keeps the image size in its vision config.
    config = getattr(model.config, "vision_config", None) or model.config
    size = getattr(config, "image_size", 224)
    size = size if isinstance(size, int) else max(size)
    pre = PreprocessConfig(input_size=(getattr(config, "num_channels", 3), size, size))
    if path is None:
        return pre
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
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
    # The sizes come from preprocessor_config.json: checked here, naming it, before a transform is built on them.
    check_input_size(f"preprocessor_config.json of {path}", "size / crop_size", d["input_size"])
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
                       revision: Optional[str] = None, trust_remote_code: bool = False) -> TransformersBackbone:
    return TransformersBackbone(
        model, _transformers_preprocess(model, path, revision, trust_remote_code), model.config.num_labels,
        _transformers_labels(model), source,
    )


def _from_transformers(path: str, num_classes, revision, pretrained, model_kwargs, trust_remote_code: bool = False,
                       allow_pickle_weights: bool = False) -> TransformersBackbone:
    from transformers import AutoConfig, AutoModelForImageClassification

    # Always explicit: left unset, transformers prompts on a terminal for a model with its own code.
    kwargs = dict(model_kwargs, trust_remote_code=trust_remote_code)
    if not allow_pickle_weights:  # a Hub repository too: its pickled weights are never read
        kwargs.setdefault("use_safetensors", True)
    if num_classes is not None:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    if pretrained:
        model = AutoModelForImageClassification.from_pretrained(path, revision=revision, **kwargs)
    else:
        kwargs.pop("ignore_mismatched_sizes", None)
        kwargs.pop("use_safetensors", None)
        config = AutoConfig.from_pretrained(path, revision=revision, **kwargs)
        model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
    return _wrap_transformers(model, {"name": path, "revision": revision, "pretrained": pretrained}, path, revision,
                              trust_remote_code)


def _from_zero_shot(path: str, revision, pretrained, model_kwargs, zero_shot: Dict[str, Any],
                    trust_remote_code: bool = False, allow_pickle_weights: bool = False) -> ZeroShotBackbone:
    """A CLIP folder or Hub id as a classifier over ``zero_shot["label_names"]`` (hfkd/models/zero_shot.py)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    kwargs = dict(model_kwargs, trust_remote_code=trust_remote_code)
    if pretrained:
        if not allow_pickle_weights:
            kwargs.setdefault("use_safetensors", True)
        model = AutoModel.from_pretrained(path, revision=revision, **kwargs)
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(path, revision=revision, **kwargs))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    return ZeroShotBackbone(
        model, tokenizer, _transformers_preprocess(model, path, revision, trust_remote_code),
        zero_shot.get("label_names"), zero_shot.get("prompt_templates"),
        {"name": path, "revision": revision, "pretrained": pretrained},
    )


def is_headless_config(cfg: Dict[str, Any]) -> bool:
    """A transformers encoder saved without a classification head (``architectures: ["Dinov2Model"]``)."""
    architectures = cfg.get("architectures") or []
    return bool(architectures) and not any(str(a).endswith("ForImageClassification") for a in architectures)


def _from_transformers_headless(path: str, revision, pretrained, model_kwargs, trust_remote_code: bool = False,
                                allow_pickle_weights: bool = False) -> HeadlessTransformersBackbone:
    """A feature teacher: the encoder as saved, no head added (a random head would teach nothing)."""
    from transformers import AutoConfig, AutoModel

    kwargs = dict(model_kwargs, trust_remote_code=trust_remote_code)
    if pretrained:
        if not allow_pickle_weights:
            kwargs.setdefault("use_safetensors", True)
        model, info = AutoModel.from_pretrained(path, revision=revision, output_loading_info=True, **kwargs)
        drop_unsaved_pooler(model, info.get("missing_keys") or ())
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(path, revision=revision, **kwargs))
    return HeadlessTransformersBackbone(model, _transformers_preprocess(model, path, revision, trust_remote_code), 0,
                                        None, {"name": path, "revision": revision, "pretrained": pretrained})


def drop_unsaved_pooler(model: nn.Module, missing_keys) -> None:
    """Remove a pooler that ``AutoModel`` added with random weights because the checkpoint has none.

    ``ViTForImageClassification`` (and DeiT's) build their encoder without a pooler and read the class token;
    ``AutoModel`` builds ``ViTModel`` with one, randomly initialised: its ``pooler_output`` would be noise.
    """
    missing = list(missing_keys)
    if missing and all(k.startswith("pooler.") for k in missing) and getattr(model, "pooler", None) is not None:
        model.pooler = None


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
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
    prompt_templates: Optional[Sequence[str]] = None,
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

    ``trust_remote_code``: build a transformers model whose ``config.json`` names its own code (``auto_map``);
    off by default, and never asked interactively.  ``allow_pickle_weights``: load a folder holding only pickled
    weights (``pytorch_model.bin``, ``*.pth``) with torch's ``weights_only`` unpickler; by default it is refused.

    A CLIP model (a folder or Hub id whose ``config.json`` says ``model_type: clip``) becomes a zero-shot
    classifier over ``label_names`` (required), its logits the model's scaled similarities to the prompts
    ``template.format(label)`` for each of ``prompt_templates`` (default ``["a photo of a {}."]``), the
    templates' embeddings averaged (docs/any_teacher.md).
    """
    _check_sizes(num_classes, image_size)
    if isinstance(model, Backbone):
        backbone = model
    elif isinstance(model, nn.Module):
        backbone = _wrap_module(model, preprocess)
    elif type(model).__name__.endswith("Config") and hasattr(model, "to_dict") and num_classes == 0:
        from transformers import AutoModel

        encoder = AutoModel.from_config(model)  # no head: a transformers config's encoder (ViTModel, ...)
        backbone = HeadlessTransformersBackbone(encoder, _transformers_preprocess(encoder, None, None), 0, None,
                                                {"name": getattr(model, "model_type", "transformers"),
                                                 "pretrained": False})
    elif type(model).__name__.endswith("Config") and hasattr(model, "to_dict"):
        from transformers import AutoModelForImageClassification

        if num_classes is not None:
            model.num_labels = num_classes
        backbone = _wrap_transformers(AutoModelForImageClassification.from_config(model),
                                      {"name": getattr(model, "model_type", "transformers"), "pretrained": False})
    elif isinstance(model, str):
        zero_shot = {"label_names": label_names, "prompt_templates": prompt_templates}
        backbone = _from_name_or_explain(model, num_classes, revision, pretrained, model_kwargs, zero_shot=zero_shot,
                                         trust_remote_code=trust_remote_code, allow_pickle_weights=allow_pickle_weights)
    else:
        raise TypeError(f"cannot build a model from {type(model).__name__}; pass a name, a folder or an nn.Module")
    if prompt_templates is not None and not isinstance(backbone, ZeroShotBackbone):
        raise ValueError(
            f"prompt_templates apply to zero-shot (CLIP) models only, and {shorten(backbone.name)} is a classifier "
            "with classes of its own; drop the templates for it"
        )
    if num_classes is not None and backbone.num_classes != num_classes:
        raise ValueError(f"{backbone.name} predicts {backbone.num_classes} classes, but {num_classes} were asked for")
    if preprocess is not None:
        backbone.preprocess = preprocess
    backbone.preprocess = backbone.preprocess.with_image_size(image_size)
    backbone.set_label_names(label_names)
    return backbone


def _check_sizes(num_classes, image_size) -> None:
    # 0 asks for the backbone without a classifier, as timm's num_classes=0 does
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0):
        raise ValueError(f"num_classes must be a positive integer, or 0 for a backbone without a classifier "
                         f"(got {shorten(num_classes)})")
    sizes = [image_size] if isinstance(image_size, (int, float)) else list(image_size or [])
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sizes):
        raise ValueError(f"image_size must be a positive integer or (height, width) (got {image_size!r})")


def _from_name_or_explain(name: str, num_classes, revision, pretrained, model_kwargs, **trust) -> Backbone:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return _from_name(name, num_classes, revision, pretrained, model_kwargs, **trust)
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


def is_zero_shot_source(model: ModelSource, revision: Optional[str] = None) -> bool:
    """Whether ``model`` names a zero-shot (CLIP) model, which takes its classes from the label names it is given."""
    if isinstance(model, ZeroShotBackbone):
        return True
    if not isinstance(model, str) or model.startswith(("hf-hub:", "hf_hub:")):
        return False
    local = model[len("local-dir:"):] if model.startswith("local-dir:") else model
    local = run_folder_student(local) or local
    if not (os.path.isdir(local) or "/" in local):
        return False
    try:
        return is_zero_shot_config(_read_config(local, revision))
    except (OSError, ValueError):
        return False  # not a readable model: create_backbone names the problem


def saved_num_classes(model: ModelSource) -> Optional[int]:
    """The classes of the head saved in a local model folder (or a run's output folder): 0 for a backbone saved
    without one; ``None`` for anything else (a timm name, a Hub id, a module), whose head is replaced as asked."""
    if not isinstance(model, str):
        return None
    local = model[len("local-dir:"):] if model.startswith("local-dir:") else model
    local = run_folder_student(local) or local
    if not os.path.isfile(os.path.join(local, "config.json")):
        return None
    cfg = _read_config(local, None)
    if is_timm_config(cfg):
        return int(cfg.get("num_classes", (cfg.get("pretrained_cfg") or {}).get("num_classes", 1000)))
    if is_zero_shot_config(cfg) or is_headless_config(cfg):
        return 0
    return int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2)


def run_folder_student(path: str) -> Optional[str]:
    """``path/student`` when ``path`` is a run's output folder (no model of its own, a saved student inside)."""
    student = os.path.join(path, "student")
    if (os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json"))
            and os.path.isfile(os.path.join(student, "config.json"))):
        return student
    return None


def _from_name(name: str, num_classes, revision, pretrained, model_kwargs, trust_remote_code: bool = False,
               allow_pickle_weights: bool = False, zero_shot: Optional[Dict[str, Any]] = None) -> Backbone:
    import timm

    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        repo, _, at = name[len("hf-hub:"):].partition("@")
        _read_config(repo, at or revision)  # timm reads the same file next: its sizes are checked first
        if pretrained:
            check_hub_weights_format(name, revision, allow_pickle_weights)
        return _from_timm(name, num_classes, revision, pretrained, model_kwargs)
    local = name[len("local-dir:"):] if name.startswith("local-dir:") else name
    saved = run_folder_student(local)
    if saved is not None:
        # An hfkd run's output folder (`hfkd train --output_dir outputs/teacher`): its saved student, named by the
        # run's folder so that tables and cards say "teacher", not "teacher/student".
        backbone = _from_name(saved, num_classes, revision, pretrained, model_kwargs, trust_remote_code,
                              allow_pickle_weights, zero_shot)
        backbone.source["name"] = ("local-dir:" if backbone.library == "timm" else "") + os.path.abspath(local)
        return backbone
    if os.path.isdir(local) or "/" in name and not timm.is_model(name):
        cfg = _read_config(local, revision)
        if pretrained and os.path.isdir(local):
            check_weights_format(local, name, allow_pickle_weights)
        if is_timm_config(cfg):
            prefix = "local-dir:" if os.path.isdir(local) else "hf-hub:"
            if pretrained and prefix == "hf-hub:":
                check_hub_weights_format(local, revision, allow_pickle_weights)
            return _from_timm(prefix + local, num_classes, revision, pretrained, model_kwargs)
        check_remote_code(cfg, name, trust_remote_code)
        if is_zero_shot_config(cfg):
            return _from_zero_shot(local, revision, pretrained, model_kwargs, zero_shot or {}, trust_remote_code,
                                   allow_pickle_weights)
        if num_classes == 0 or num_classes is None and is_headless_config(cfg):
            return _from_transformers_headless(local, revision, pretrained, model_kwargs, trust_remote_code,
                                               allow_pickle_weights)
        return _from_transformers(local, num_classes, revision, pretrained, model_kwargs, trust_remote_code,
                                  allow_pickle_weights)
    if timm.is_model(name):
        return _from_timm(name, num_classes, revision, pretrained, model_kwargs)
    raise ValueError(
        f"unknown model {name!r}: not a timm model name (see timm.list_models()), an existing folder, "
        "or a Hub id of the form 'org/name'"
    )
