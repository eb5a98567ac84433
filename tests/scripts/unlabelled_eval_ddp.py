"""Evaluation without labels on 2 CPU processes (real DDP): KD at alpha 1 on images without labels, then the
student's agreement with its teachers over an eval split that does not divide evenly between the ranks.

Run by tests/test_without_labels.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/unlabelled_eval_ddp.py OUT_DIR
"""
import json
import os
import sys

from accelerate.utils import set_seed
from helpers.ddp import short_run_args, two_teacher_setup
from safetensors.torch import save_file

from hfkd import DistillationTrainer, create_backbone, create_method


def vit_student():
    set_seed(1)
    return create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)


def main(out_dir: str) -> None:
    train, evaluation, teachers, _ = two_teacher_setup(seed=0)
    # A student without BatchNorm: DDP keeps rank 0's running statistics only, so a BatchNorm student would
    # evaluate its ranks' halves with different statistics.
    student = vit_student()
    train, evaluation = train.remove_columns("label"), evaluation.select(range(21)).remove_columns("label")
    trainer = DistillationTrainer(student, teachers=teachers, method=create_method("kd", alpha=1.0),
                                  args=short_run_args(out_dir, per_device_eval_batch_size=4),
                                  train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    metrics = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        state = {k: v.detach().clone().contiguous() for k, v in trainer.unwrapped_student().state_dict().items()}
        save_file(state, os.path.join(out_dir, "student.safetensors"))
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump({"num_processes": trainer.accelerator.num_processes, **metrics}, f)


if __name__ == "__main__":
    main(sys.argv[1])
