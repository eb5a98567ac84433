"""Optimiser and learning-rate schedule from DistillationArguments, through timm and transformers."""
from __future__ import annotations

import bisect
import math
from typing import Any, Dict, List

import torch
from torch import nn

from .args import DistillationArguments


def create_optimizer(args: DistillationArguments, student: nn.Module, extra_groups: List[Dict[str, Any]]):
    """timm's optimizer factory over the student's groups plus the method's.

    The student's biases and norm weights get no weight decay (timm's groups) unless
    ``args.weight_decay_norm_and_bias``.
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    if args.weight_decay_norm_and_bias:
        # PS-KD, BAKE, Factor Transfer and Wide ResNet hand model.parameters() to SGD: every weight decays.
        groups = [{"params": [p for p in student.parameters() if p.requires_grad], "weight_decay": args.weight_decay}]
    else:
        groups = param_groups_weight_decay(student, args.weight_decay)
    groups = [g for g in groups if len(g["params"])] + [dict(g) for g in extra_groups]
    kwargs: Dict[str, Any] = {}
    if "adam" in args.optim or "lamb" in args.optim:
        kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    return create_optimizer_v2(
        groups, opt=args.optim, lr=args.learning_rate, weight_decay=args.weight_decay, momentum=args.momentum, **kwargs
    )


def _warmup_steps(args: DistillationArguments, total_steps: int) -> int:
    return args.warmup_steps or int(math.ceil(args.warmup_ratio * total_steps))


def create_scheduler(args: DistillationArguments, optimizer, total_steps: int, steps_per_epoch: int):
    """transformers' schedules, plus ``multistep`` (decay by ``lr_gamma`` at epochs ``lr_milestones``).

    With ``lr_step_per_epoch``, ``warmup_epochs`` or ``warmup_start_factor`` set, the pycls schedule instead
    (:func:`_epoch_schedule`).
    """
    if args.uses_epoch_schedule:
        return _epoch_schedule(args, optimizer, total_steps, steps_per_epoch)
    warmup = _warmup_steps(args, total_steps)
    if args.lr_scheduler_type != "multistep":
        from transformers import get_scheduler

        return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    milestones = sorted(int(round(m * steps_per_epoch)) for m in args.lr_milestones)
    gamma = args.lr_gamma

    def factor(step: int) -> float:
        scale = gamma ** bisect.bisect_right(milestones, step)
        return scale * min(1.0, (step + 1) / warmup) if warmup else scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- pycls-style schedule (BAKE's ImageNet code, imagenet/pycls/core/optimizer.py L57-90) ----------------
def epoch_lr_factor(args: DistillationArguments, t: float, total_epochs: float) -> float:
    """The lr multiplier at training time ``t`` (in epochs): the decay over all of training times the warm-up.

    Unlike transformers' schedules, the decay does not wait for the warm-up to end: pycls multiplies
    ``cos``/``linear``/``multistep`` at epoch ``t`` by ``f (1 - t / W) + t / W`` for ``t < W``
    (``f = warmup_start_factor``, ``W = warmup_epochs``).
    """
    kind = args.lr_scheduler_type
    if kind == "cosine":
        scale = 0.5 * (1.0 + math.cos(math.pi * t / total_epochs))
    elif kind == "linear":
        scale = max(0.0, 1.0 - t / total_epochs)
    elif kind == "multistep":
        scale = args.lr_gamma ** bisect.bisect_right(sorted(args.lr_milestones), t)
    else:  # constant
        scale = 1.0
    if t < args.warmup_epochs:
        alpha = t / args.warmup_epochs
        scale *= args.warmup_start_factor * (1.0 - alpha) + alpha
    return scale


def _epoch_schedule(args: DistillationArguments, optimizer, total_steps: int, steps_per_epoch: int):
    total_epochs = total_steps / steps_per_epoch

    def factor(step: int) -> float:
        t = step // steps_per_epoch if args.lr_step_per_epoch else step / steps_per_epoch
        return epoch_lr_factor(args, t, total_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
