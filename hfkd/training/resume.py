"""What makes a run the same run: recorded in every checkpoint, compared on resume.

Resuming continues a trajectory; a checkpoint resumed with another batch size, seed, learning rate,
method or dataset silently becomes a different experiment.  Each checkpoint records the settings that
change the trajectory (``run_signature``); on resume a difference is refused, listing each one, unless
the user names it in ``resume_allow_changes``.  Output-only settings (logging, evaluation, saving,
output_dir, trackers) are not recorded, so changing them never blocks a resume.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any, Dict, Optional, Sequence

from ..settings import shorten

logger = logging.getLogger(__name__)


class ResumeRefused(ValueError):
    """A checkpoint written by a different run: resuming it would continue another trajectory."""

# DistillationArguments fields that change what the student becomes.  The step budget is among them:
# the learning-rate schedule (cosine, linear, warm-up ratio) is a function of the total length, so a
# longer run is a different run; resume_allow_changes=["max_steps"] accepts it knowingly.
TRAJECTORY_ARGS = (
    "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "seed",
    "learning_rate", "weight_decay", "optim", "momentum", "adam_beta1", "adam_beta2", "adam_epsilon",
    "max_grad_norm", "lr_scheduler_type", "lr_milestones", "lr_gamma", "warmup_steps", "warmup_ratio",
    "dataloader_drop_last", "on_nonfinite_loss",
    "weight_decay_norm_and_bias", "lr_step_per_epoch", "warmup_epochs", "warmup_start_factor", "sync_batchnorm",
    "channels_last", "model_ema", "model_ema_decay", "model_ema_warmup", "teacher_dtype",
)
OTHER_FIELDS = ("method", "method_hparams", "augment", "dataset", "train_samples", "world_size", "mixed_precision",
                "student", "teachers", "teacher_cache", "crops_per_image",
                "spread_crops")


def dataset_fingerprint(dataset) -> str:
    """``datasets``' own fingerprint when there is one, else a hash of the size and the labels."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint:
        return str(fingerprint)
    labels = [int(v) for v in dataset.labels] if hasattr(dataset, "labels") else []
    return "labels-sha256:" + hashlib.sha256(json.dumps([len(dataset), labels]).encode()).hexdigest()[:16]


def cache_signature(cache) -> Optional[Dict[str, Any]]:
    """What identifies a teacher cache's contents (not where it is read from); ``None`` without one."""
    if cache is None:
        return None
    m = cache.metadata
    return {"teachers": [{k: t.get(k) for k in ("name", "revision", "weight")} for t in m.teachers],
            "num_views": m.num_views, "seed": m.seed, "top_k": m.top_k, "dtype": m.dtype, "ensembled": m.ensembled,
            "augmentation": m.augmentation, "train_fingerprint": m.train_fingerprint}


def run_signature(trainer) -> Dict[str, Any]:
    """The settings of ``trainer``'s run that change its trajectory, as JSON values."""
    args, student = trainer.args, trainer.student
    signature = {name: getattr(args, name) for name in TRAJECTORY_ARGS if hasattr(args, name)}
    train = trainer.train_dataset
    signature.update(
        method=trainer.method.name, method_hparams=trainer.method.hparams(), augment=asdict(trainer.augment),
        dataset=dataset_fingerprint(getattr(train, "dataset", train)),
        train_samples=None if getattr(train, "is_stream", False) else len(train),
        world_size=trainer.accelerator.num_processes,
        mixed_precision=trainer.accelerator.mixed_precision,  # what runs, whether set here or by Accelerate
        student={"name": student.name, "num_classes": student.num_classes,
                 "input_size": list(student.preprocess.input_size),
                 "parameters": sum(p.numel() for p in student.parameters())},
        teachers=[t.name for t in trainer.teachers],
        # The stored outputs that stand in for the teachers: another cache is another trajectory.
        teacher_cache=cache_signature(getattr(trainer, "teacher_cache", None)),
    )
    if args.crops_per_image != 1:  # recorded only when set, so checkpoints written before it resume unchanged
        signature["crops_per_image"] = args.crops_per_image
        signature["spread_crops"] = args.spread_crops
    return json.loads(json.dumps(signature, default=str))  # tuples -> lists, as read back from the checkpoint


def check_same_run(recorded: Optional[Dict[str, Any]], now: Dict[str, Any], allowed: Sequence[str], path: str) -> None:
    """Refuse to resume ``path`` when ``now`` differs from the ``recorded`` run outside ``allowed``."""
    known = set(TRAJECTORY_ARGS) | set(OTHER_FIELDS)
    unknown = sorted(set(allowed) - known)
    if unknown:
        raise ValueError(f"resume_allow_changes names unknown fields {unknown}; the recorded ones are {sorted(known)}")
    if recorded is None:
        logger.warning("%s records no run settings (written by an older hfkd): resuming without checking them", path)
        return
    changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    refused = [k for k in changed if k not in allowed]
    for k in changed:
        if k not in refused:
            logger.warning("resuming %s with %s changed (allowed): checkpoint %r, now %r", path, k, recorded.get(k), now.get(k))
    if refused:
        lines = "\n".join(f"  {k}: checkpoint {shorten(recorded.get(k))}, now {shorten(now.get(k))}"
                          for k in refused)
        raise ResumeRefused(
            f"{path} was written by a different run; resuming would continue another trajectory silently:\n{lines}\n"
            f"Resume with the checkpoint's settings, use a new output_dir, or accept the changes with "
            f"resume_allow_changes={refused}"
        )
