"""The trainer's speed options: memory format, teacher precision and ``torch.compile``.

None of them changes what is computed, only how: channels_last reorders memory (outputs equal
to float tolerance), compiled modules keep their parameters and state-dict keys (``nn.Module.compile``
compiles in place, so checkpoints and saved students are unchanged), and ``teacher_dtype`` only
changes the teachers' arithmetic.  docs/performance.md has the measurements.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .args import DistillationArguments

TEACHER_DTYPES: Dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def teacher_dtype(args: DistillationArguments) -> Optional[torch.dtype]:
    return TEACHER_DTYPES[args.teacher_dtype] if args.teacher_dtype else None


def _compile(module: nn.Module, args: DistillationArguments) -> None:
    if getattr(module, "_compiled_call_impl", None) is None:  # idempotent: set-up may run twice
        module.compile(mode=args.torch_compile_mode)


def prepare_student(student: nn.Module, args: DistillationArguments) -> None:
    """channels_last, then compile: call after any copy of the student (the EMA) is made."""
    if args.channels_last:
        student.to(memory_format=torch.channels_last)
    if args.torch_compile:
        _compile(student.model, args)


def prepare_teachers(teachers: Sequence[nn.Module], args: DistillationArguments) -> None:
    """Teachers' dtype, memory format and compilation; safe to call more than once."""
    dtype = teacher_dtype(args)
    for t in teachers:
        if dtype is not None and t.compute_dtype != dtype:
            t.set_compute_dtype(dtype)
        if args.channels_last:
            t.to(memory_format=torch.channels_last)
        if args.torch_compile_teachers:
            _compile(t.backbone.model, args)


def channels_last_batch(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    x = batch["pixel_values"]
    if x.dim() != 4:
        return batch
    return {**batch, "pixel_values": x.contiguous(memory_format=torch.channels_last)}
