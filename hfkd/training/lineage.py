"""The distillation lineage saved beside a student: what made it, reproducibly."""
from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any, Dict, List, Optional

import torch

from ..hub.card import local_checkpoint_name
from ..models.backbone import hub_id
from ..models.zero_shot import zero_shot_entry
from ..hub.secrets import redact_secrets
from .bad_images import bad_image_summary

# Keys of trainer.state.log_history worth keeping with the model (curves, not every callback field).
_HISTORY_KEYS = ("step", "epoch", "loss", "learning_rate", "eval_accuracy", "eval_top5_accuracy", "eval_loss",
                 "eval_mae", "eval_rmse", "eval_agreement", "eval_distillation_loss")


def library_versions() -> Dict[str, str]:
    out = {}
    for pkg in ("hfkd", "torch", "timm", "transformers", "accelerate", "datasets", "huggingface_hub"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["python"] = platform.python_version()
    return out


def hardware_info(accelerator=None) -> Dict[str, Any]:
    """Where the run happened, in the words a reader needs to compare wall times."""
    info: Dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "platform": platform.platform(terse=True)}
    device = getattr(accelerator, "device", torch.device("cpu"))
    info["device"] = str(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if accelerator is not None:
        info["num_processes"] = accelerator.num_processes
        info["mixed_precision"] = str(accelerator.mixed_precision)
    return info


@torch.no_grad()
def measure_throughput(backbone, batch_size: int = 32, budget_seconds: float = 0.5) -> Dict[str, Any]:
    """Eval-mode inference images/s of ``backbone`` on its own device, at its input size.

    Cheap by design (one warm-up batch, then batches for about ``budget_seconds``):
    an order of magnitude for the card, not a benchmark.
    """
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = backbone.training
    backbone.eval()
    x = torch.randn(batch_size, *backbone.preprocess.input_size, device=device)
    try:
        backbone(x)
        n, start = 0, time.perf_counter()
        while True:
            backbone(x)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget_seconds or n >= 50:
                break
    finally:
        backbone.train(was_training)
    return {"images_per_second": round(n * batch_size / elapsed, 1), "batch_size": batch_size,
            "device": str(device), "torch_threads": torch.get_num_threads()}


def architecture(backbone) -> str:
    """The network's architecture (``resnet18``, ``vit``), whatever folder or repository it came from."""
    if backbone.library == "timm":
        arch = (getattr(backbone.model, "pretrained_cfg", None) or {}).get("architecture")
    else:
        arch = getattr(getattr(backbone.model, "config", None), "model_type", None)
    return str(arch or type(backbone.model).__name__)


def source_license(backbone) -> Optional[str]:
    """The license of the pretrained weights the model started from, when timm records it."""
    if not backbone.source.get("pretrained") or backbone.library != "timm":
        return None
    return (getattr(backbone.model, "pretrained_cfg", None) or {}).get("license")


def model_entry(backbone) -> Dict[str, Any]:
    return {"name": backbone.name, "architecture": architecture(backbone), "library": backbone.library,
            "revision": backbone.source.get("revision"), "pretrained": backbone.source.get("pretrained"),
            "hub_id": hub_id(backbone), "local": local_checkpoint_name(backbone.name) is not None,
            "license": source_license(backbone),
            "num_parameters": backbone.num_parameters(), "preprocess": backbone.preprocess.to_dict(),
            **zero_shot_entry(backbone)}


def without_local_paths(value: Any) -> Any:
    """``value`` with every absolute path (or ``local-dir:`` name) replaced by its short stable name.

    A lineage is published with the model: it must not carry the writer's user name or folders.
    """
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str):
        return local_checkpoint_name(value) or value
    return value


def _history(log_history: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for entry in log_history:
        kept = {k: entry[k] for k in _HISTORY_KEYS if isinstance(entry.get(k), (int, float))}
        if any(k in kept for k in ("loss", "eval_accuracy", "eval_mae", "eval_agreement", "eval_distillation_loss")):
            out.append(kept)
    return out


def build_lineage(trainer, measure_inference: bool = True) -> Dict[str, Any]:
    """Everything that made the student, as JSON-ready data with no credentials in it."""
    evals = [e for e in trainer.state.log_history if "eval_samples" in e]  # the student's evaluations, any task
    teachers = []
    for i, t in enumerate(trainer.teachers):
        entry = model_entry(t.backbone)
        entry["weight"] = t.weight
        entry["metrics"] = {k: v for k, v in trainer.teacher_metrics.get(f"teacher_{i}", {}).items() if k != "name"}
        teachers.append(entry)
    cache = getattr(trainer, "teacher_cache", None)
    if cache is not None:  # the teachers are the cache's: name them, and the cache itself (lineage)
        teachers = [{**t, "metrics": {}} for t in cache.metadata.teachers]
    student = trainer.unwrapped_student()
    student_entry = model_entry(student)
    if measure_inference:
        student_entry["inference"] = measure_throughput(student)
    runtime = float(trainer.state.train_runtime)
    args = trainer.args
    # Samples seen per second over all processes (what a reader compares across machines).
    samples = trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps \
        * trainer.accelerator.num_processes
    lineage = {
        "format_version": 1,
        "method": {"name": trainer.method.name, "hparams": trainer.method.hparams(),
                   "citation": trainer.method.citation},
        "task": {"name": trainer.task.name, **trainer.task.options()},
        "student": student_entry,
        "label_names": trainer.student.label_names,
        "teachers": teachers,
        "ensemble_metrics": trainer.teacher_metrics.get("ensemble", {}),
        "dataset": trainer.dataset_info,
        "teacher_cache": cache.lineage() if cache is not None else None,
        "training_args": args.to_dict(),
        "augmentation": dict(vars(trainer.augment)),
        "metrics": evals[-1] if evals else {},
        "train_runtime_seconds": round(runtime, 2),
        "train_samples_per_second": round(samples / runtime, 1) if runtime > 0 else None,
        "global_step": trainer.state.global_step,
        "num_processes": trainer.accelerator.num_processes,
        # What Accelerate used (launcher, config or the argument), not what the argument said.
        "mixed_precision": str(trainer.accelerator.mixed_precision),
        "hardware": hardware_info(trainer.accelerator),
        "log_history": _history(trainer.state.log_history),
        "bad_images": bad_image_summary(trainer),
        "versions": library_versions(),
    }
    return redact_secrets(without_local_paths(lineage))


def backbone_lineage(lineage: Dict[str, Any], backbone) -> Dict[str, Any]:
    """The lineage of a student saved without its head (``backbone``, see hfkd/models/heads.py).

    The head was never trained (the loss read no labels), so what was measured through it (accuracy, NLL, the
    evaluation curves) describes nothing that is saved: it is left out, and the student entry says ``headless``.
    """
    out = dict(lineage)
    entry = {**model_entry(backbone), "headless": True, "num_features": _num_features(backbone)}
    entry["inference"] = (lineage.get("student") or {}).get("inference")
    out["student"] = redact_secrets(without_local_paths(entry))
    out["label_names"] = None
    out["metrics"] = {k: v for k, v in (lineage.get("metrics") or {}).items()
                      if not k.startswith("eval_") or k == "eval_samples"}
    out["log_history"] = [{k: v for k, v in e.items() if not k.startswith("eval_")} for e in lineage.get("log_history")
                          or []]
    out["log_history"] = [e for e in out["log_history"] if "loss" in e]
    out.pop("baseline", None)
    return out


def _num_features(backbone) -> Optional[int]:
    """The width of the backbone's pooled features (what a new head reads)."""
    width = getattr(backbone.model, "num_features", None)  # timm
    if width is None:
        config = getattr(backbone.model, "config", None)
        width = getattr(config, "hidden_size", None) or (getattr(config, "hidden_sizes", None) or [None])[-1]
    return int(width) if isinstance(width, int) else None
