"""Optimiser and learning-rate schedule from DistillationArguments, through timm and transformers."""
from __future__ import annotations

import bisect
import math
from typing import Any, Dict, List

import torch
from torch import nn

from .args import DistillationArguments


def create_optimizer(args: DistillationArguments, student: nn.Module, extra_groups: List[Dict[str, Any]]):
    """timm's optimizer factory over the student's groups (no decay on biases and norms) plus the method's."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

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
    """transformers' schedules, plus ``multistep`` (decay by ``lr_gamma`` at epochs ``lr_milestones``)."""
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
