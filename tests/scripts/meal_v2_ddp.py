"""MEAL V2 on 2 CPU processes (real DDP): each rank writes its trained student and discriminator.

Run by tests/test_meal_v2.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/meal_v2_ddp.py OUT_DIR
"""
import os
import sys

import torch
from accelerate.utils import set_seed
from safetensors.torch import save_file

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method, load_image_dataset


def main(out_dir: str) -> None:
    digits = load_image_dataset()
    train, evaluation = digits.train.select(range(96)), digits.eval.select(range(32))
    # Same seed on both ranks: identical random teachers and identical initial student / discriminator.
    set_seed(0)
    teachers = [create_backbone(name, num_classes=10, pretrained=False, image_size=32) for name in
                ("test_resnet", "test_convnext")]
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    # num_classes builds the discriminator now, so its initial weights can be kept for comparison.
    method = create_method("meal_v2", num_classes=10, discriminator_reduction=2, discriminator_lr=0.05)
    with torch.no_grad():  # keep D's final ReLU open at the start, so that D surely gets gradients
        method.discriminator.layers[4].bias.fill_(1.0)
    initial = {**_floats("student", student), **_floats("discriminator", method.discriminator)}
    args = DistillationArguments(output_dir=out_dir, num_train_epochs=2, per_device_train_batch_size=16,
                                 learning_rate=0.01, optim="momentum", lr_scheduler_type="constant",
                                 save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
                                 eval_teachers=False, seed=0)
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=args, train_dataset=train,
                                  eval_dataset=evaluation)
    trainer.train()
    acc = trainer.accelerator
    unwrapped = acc.unwrap_model(trainer._model)
    tensors = {**_floats("student", unwrapped.student), **_floats("discriminator", unwrapped.method.discriminator)}
    tensors.update({f"initial.{k}": v for k, v in initial.items()})
    d_lrs = [g["lr"] for g in trainer.optimizer.param_groups
             if any(p is q for p in g["params"] for q in unwrapped.method.discriminator.parameters())]
    tensors["discriminator_group_lr"] = torch.tensor(d_lrs, dtype=torch.float64)
    tensors["num_processes"] = torch.tensor([acc.num_processes])
    tensors["steps"] = torch.tensor([trainer.state.global_step])
    save_file(tensors, os.path.join(out_dir, f"rank{acc.process_index}.safetensors"))


def _floats(prefix, module):
    # Parameters only: DDP re-broadcasts BatchNorm buffers from rank 0 at each forward, so after the
    # last forward rank 1's running statistics legitimately differ from rank 0's.
    return {f"{prefix}.{k}": p.detach().clone().contiguous() for k, p in module.named_parameters()}


if __name__ == "__main__":
    main(sys.argv[1])
