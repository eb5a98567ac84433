"""An exponential moving average of the student's weights, with timm's ``ModelEmaV3``.

After optimiser step ``t`` every floating-point tensor of the state dict (weights and BatchNorm
statistics) becomes ``ema = decay_t * ema + (1 - decay_t) * student``; integer buffers are copied.
``decay_t`` is 0 at the first step (the EMA starts as the student) and ``model_ema_decay`` after,
or with warm-up ``min(model_ema_decay, 1 - (1 + t - 1)^(-2/3))``, which suits runs of a few hundred
steps.  Checkpoints keep the EMA as tensors (safetensors, next to the method's state), so a resumed
run continues the same average.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from .args import DistillationArguments

PREFIX = "model_ema."


def create_model_ema(args: DistillationArguments, student: nn.Module):
    """A ``timm.utils.ModelEmaV3`` copy of ``student`` when ``args.model_ema``, else ``None``."""
    if not args.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(student, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)


def ema_state(ema) -> Dict[str, torch.Tensor]:
    """The EMA's tensors, keyed for a checkpoint's tensor file."""
    if ema is None:
        return {}
    return {PREFIX + k: v for k, v in ema.module.state_dict().items()}


def split_ema_state(state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(other tensors, EMA tensors without the prefix)`` of a checkpoint's tensor file."""
    other = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    ema = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    return other, ema


def load_ema_state(ema, state: Mapping[str, torch.Tensor], path: Optional[str] = None) -> None:
    if ema is None:
        return
    if not state:
        raise ValueError(f"model_ema=True but checkpoint {path} holds no EMA weights; it was written without "
                         "model_ema, so resume with model_ema=False or start a new run")
    ema.module.load_state_dict(state)
