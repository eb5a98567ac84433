"""MEAL V2 on 2 CPU processes (real DDP): each rank writes its trained student and discriminator.

Run by tests/test_meal_v2.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/meal_v2_ddp.py OUT_DIR
"""
import sys

import torch
from helpers.ddp import parameters, save_rank, short_run_args, two_teacher_setup

from hfkd import DistillationTrainer, create_method


def main(out_dir: str) -> None:
    train, evaluation, teachers, student = two_teacher_setup()
    # num_classes builds the discriminator now, so its initial weights can be kept for comparison.
    method = create_method("meal_v2", num_classes=10, discriminator_reduction=2, discriminator_lr=0.05)
    with torch.no_grad():  # keep D's final ReLU open at the start, so that D surely gets gradients
        method.discriminator.layers[4].bias.fill_(1.0)
    initial = {**parameters("student", student), **parameters("discriminator", method.discriminator)}
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=short_run_args(out_dir),
                                  train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    unwrapped = trainer.accelerator.unwrap_model(trainer._model)
    tensors = {**parameters("student", unwrapped.student),
               **parameters("discriminator", unwrapped.method.discriminator)}
    tensors.update({f"initial.{k}": v for k, v in initial.items()})
    d_lrs = [g["lr"] for g in trainer.optimizer.param_groups
             if any(p is q for p in g["params"] for q in unwrapped.method.discriminator.parameters())]
    tensors["discriminator_group_lr"] = torch.tensor(d_lrs, dtype=torch.float64)
    save_rank(tensors, out_dir, trainer)


if __name__ == "__main__":
    main(sys.argv[1])
