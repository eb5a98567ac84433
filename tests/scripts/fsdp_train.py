"""The trainer on a sharded student: MEAL V2 with its discriminator, a checkpoint, a resume, the saved student.

Run by tests/test_fsdp.py, two ways:

- on GPUs, the real launch (at least 2 CUDA devices):
  ``accelerate launch --use_fsdp --fsdp_version 2 --fsdp_cpu_ram_efficient_loading false --num_processes 2
  tests/scripts/fsdp_train.py OUT_DIR TAG [--resume] [--shard_teachers]``
- on 2 CPU processes (``torchrun``, gloo) with ``--cpu_as_fsdp``: Accelerate does not run FSDP on CPU, so
  the Accelerator the trainer would make is told it runs FSDP2 (its state's distributed type and plugin are
  set, nothing else): Accelerate's FSDP2 branches then run as on GPUs (prepare, gradient clipping,
  accumulation, ``save_state`` / ``load_state`` with the sharded state dict), on gloo.

Trains 6 steps on 64 digits (batch 8 per process), checkpoints every 3 steps (``--resume``: from the first
run's ``checkpoint-3`` to step 6), evaluates, saves the student (gathered) into ``OUT_DIR/student-TAG``, and
the main process writes ``OUT_DIR/TAG.json``.
"""
import json
import os
import sys

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method, load_image_dataset
from hfkd.launch import create_accelerator


def accelerator_told_it_runs_fsdp(args):
    accelerator = create_accelerator(args)
    state = accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState sets it
    assert accelerator.is_fsdp2
    return accelerator


def main(out_dir: str, tag: str, resume: bool, shard_teachers: bool, cpu_as_fsdp: bool) -> None:
    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)
    torch.manual_seed(100)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    method = create_method("meal_v2", num_classes=10)
    args = DistillationArguments(
        output_dir=os.path.join(out_dir, "run"), max_steps=6, per_device_train_batch_size=8, learning_rate=0.01,
        optim="momentum", lr_scheduler_type="constant", save_strategy="steps", save_steps=3, save_total_limit=None,
        max_grad_norm=0.5, gradient_accumulation_steps=2,
        eval_strategy="no", logging_steps=1, disable_tqdm=True, eval_teachers=True, seed=0,
        resume_from_checkpoint=os.path.join(out_dir, "run", "checkpoint-3") if resume else None,
        shard_teachers=shard_teachers)
    accelerator = accelerator_told_it_runs_fsdp(args) if cpu_as_fsdp else None
    trainer = DistillationTrainer(student, teachers=[teacher], method=method, args=args, accelerator=accelerator,
                                  train_dataset=digits.train.select(range(128)), eval_dataset=digits.eval.select(range(32)))
    trainer.train()
    sharded = all(isinstance(p, DTensor) for p in trainer._model.parameters())
    trainer.save_model(os.path.join(out_dir, f"student-{tag}"))
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        with open(os.path.join(out_dir, f"{tag}.json"), "w", encoding="utf-8") as f:
            json.dump({"distributed_type": str(trainer.accelerator.distributed_type), "sharded": sharded,
                       "steps": trainer.state.global_step, "eval_accuracy": metrics.get("eval_accuracy"),
                       "teacher_metrics": trainer.teacher_metrics,
                       "checkpoint_files": sorted(os.listdir(os.path.join(out_dir, "run", "checkpoint-3")))}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv, "--shard_teachers" in sys.argv, "--cpu_as_fsdp" in sys.argv)
