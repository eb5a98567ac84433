"""Shared set-up of the 2-process scripts in tests/scripts (imported there as ``helpers.ddp``)."""
import os

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from hfkd import DistillationArguments, create_backbone, load_image_dataset


def two_teacher_setup(seed: int = 0):
    """96 training and 32 evaluation digits, two random test teachers and a test student.

    The same seed on every rank gives identical teachers and an identical initial student.
    """
    digits = load_image_dataset()
    set_seed(seed)
    teachers = [create_backbone(name, num_classes=10, pretrained=False, image_size=32)
                for name in ("test_resnet", "test_convnext")]
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    return digits.train.select(range(96)), digits.eval.select(range(32)), teachers, student


def short_run_args(out_dir: str, **overrides) -> DistillationArguments:
    """Two epochs of constant-lr momentum SGD, logging every step, no saving nor evaluation."""
    kwargs = dict(output_dir=out_dir, num_train_epochs=2, per_device_train_batch_size=16, learning_rate=0.01,
                  optim="momentum", lr_scheduler_type="constant", save_strategy="no", eval_strategy="no",
                  logging_steps=1, disable_tqdm=True, eval_teachers=False, seed=0)
    kwargs.update(overrides)
    return DistillationArguments(**kwargs)


def parameters(prefix: str, module) -> dict:
    # Parameters only: DDP re-broadcasts BatchNorm buffers from rank 0 at each forward, so after the
    # last forward rank 1's running statistics legitimately differ from rank 0's.
    return {f"{prefix}.{k}": p.detach().clone().contiguous() for k, p in module.named_parameters()}


def save_rank(tensors: dict, out_dir: str, trainer) -> None:
    """Write this rank's tensors, plus the world size and step count, to ``OUT_DIR/rank{i}.safetensors``."""
    accelerator = trainer.accelerator
    tensors = dict(tensors, num_processes=torch.tensor([accelerator.num_processes]),
                   steps=torch.tensor([trainer.state.global_step]))
    save_file(tensors, os.path.join(out_dir, f"rank{accelerator.process_index}.safetensors"))


def trained_tensors(trainer, initial: dict) -> dict:
    """After training: this rank's student and method parameters, and the ``initial`` ones as ``initial.*``."""
    unwrapped = trainer.accelerator.unwrap_model(trainer._model)
    tensors = {**parameters("student", unwrapped.student), **parameters("method", unwrapped.method)}
    tensors.update({f"initial.{k}": v for k, v in initial.items()})
    return tensors
