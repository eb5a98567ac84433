"""The trainer under Accelerate's FSDP2 (GPUs only): MEAL V2 with its discriminator, a checkpoint, a resume.

Run by tests/test_fsdp.py where at least 2 CUDA devices are present:

    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 tests/scripts/fsdp_train.py OUT_DIR TAG [--resume]

``--shard_teachers`` shards the teacher too.  Trains 6 steps on 64 digits (batch 8 per process), checkpoints
every 3 steps (``--resume``: from the first run's ``checkpoint-3`` to step 6); the main process saves the student (gathered) and writes ``OUT_DIR/TAG.json``: the distributed
type, whether the student's weights were DTensors, the checkpoint's files, the step count.
"""
import json
import os
import sys

import torch
from torch.distributed.tensor import DTensor

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method, load_image_dataset


def main(out_dir: str, tag: str, resume: bool, shard_teachers: bool) -> None:
    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)
    torch.manual_seed(100)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    method = create_method("meal_v2", num_classes=10)
    args = DistillationArguments(
        output_dir=os.path.join(out_dir, "run"), max_steps=6, per_device_train_batch_size=8, learning_rate=0.01,
        optim="momentum", lr_scheduler_type="constant", save_strategy="steps", save_steps=3, save_total_limit=None,
        eval_strategy="no", logging_steps=1, disable_tqdm=True, eval_teachers=True, seed=0,
        resume_from_checkpoint=os.path.join(out_dir, "run", "checkpoint-3") if resume else None,
        shard_teachers=shard_teachers)
    trainer = DistillationTrainer(student, teachers=[teacher], method=method, args=args,
                                  train_dataset=digits.train.select(range(64)), eval_dataset=digits.eval.select(range(32)))
    trainer.train()
    sharded = any(isinstance(p, DTensor) for p in trainer._model.student.parameters())
    trainer.save_model(os.path.join(out_dir, f"student-{tag}"))
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        with open(os.path.join(out_dir, f"{tag}.json"), "w", encoding="utf-8") as f:
            json.dump({"distributed_type": str(trainer.accelerator.distributed_type), "sharded": sharded,
                       "steps": trainer.state.global_step, "eval_accuracy": metrics.get("eval_accuracy"),
                       "checkpoint_files": sorted(os.listdir(os.path.join(out_dir, "run", "checkpoint-3")))}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv, "--shard_teachers" in sys.argv)
