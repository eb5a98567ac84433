"""Checks that turn silent nonsense into a clear error: the number of steps, and the loss.

Run once before training where possible (the number of steps; settings are checked by
:mod:`hfkd.settings`, the data by :mod:`hfkd.data.checks`), and at every step for the loss, which no
up-front check can foresee.
"""
from __future__ import annotations

from typing import Dict

import torch

from .checkpoint import list_checkpoints


def check_steps(num_batches: int, num_samples: int, batch_size: int, drop_last: bool, world_size: int) -> None:
    """At least one batch per epoch, before training starts."""
    if num_batches > 0:
        return
    raise ValueError(
        f"0 training steps: {num_samples} train samples make no full batch of {batch_size} per process x "
        f"{world_size} process(es) with dataloader_drop_last={drop_last}; lower per_device_train_batch_size "
        "or set dataloader_drop_last=False"
    )


def nonfinite(loss: torch.Tensor, accelerator) -> bool:
    """True when the loss is not finite on any process (every process agrees, so all skip or stop together)."""
    bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad.item() > 0)


def nonfinite_loss_error(step: int, loss: torch.Tensor, logs: Dict[str, torch.Tensor], output_dir: str) -> FloatingPointError:
    terms = {"loss": float(loss.detach().float().mean()),
             **{k: float(v.detach().float().mean()) for k, v in logs.items() if torch.is_tensor(v)}}
    checkpoints = list_checkpoints(output_dir)
    last = (f"the last checkpoint is {checkpoints[-1]} (resume_from_checkpoint='latest')" if checkpoints
            else "no checkpoint was written")
    return FloatingPointError(
        f"the loss is not finite at step {step + 1}: {terms}; {last}. Lower the learning rate, check the data "
        "and the method's settings, or set on_nonfinite_loss='skip' to skip such steps"
    )
