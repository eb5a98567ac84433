"""Parallel FEED on 2 CPU processes (real DDP): each rank writes its trained student and transforms.

Run by tests/test_feed.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/feed_ddp.py OUT_DIR
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
    # Same seed on both ranks: identical random teachers and identical initial student.
    set_seed(0)
    teachers = [create_backbone(name, num_classes=10, pretrained=False, image_size=32) for name in
                ("test_resnet", "test_convnext")]
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    initial = _floats("student", student)
    method = create_method("feed", beta=50.0)
    args = DistillationArguments(output_dir=out_dir, num_train_epochs=2, per_device_train_batch_size=16,
                                 learning_rate=0.01, optim="momentum", lr_scheduler_type="constant",
                                 save_strategy="no", eval_strategy="no", logging_steps=1, disable_tqdm=True,
                                 eval_teachers=False, seed=0)
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=args, train_dataset=train,
                                  eval_dataset=evaluation)
    # The transforms are built by setup() inside train(); record them right after it, before any step.
    acc = trainer.accelerator
    built = {}
    original_setup = method.setup

    def setup_and_record(context):
        original_setup(context)
        built.update(_floats("transforms", method.transforms))

    method.setup = setup_and_record
    trainer.train()
    unwrapped = acc.unwrap_model(trainer._model)
    tensors = {**_floats("student", unwrapped.student), **_floats("transforms", unwrapped.method.transforms)}
    tensors.update({f"initial.{k}": v for k, v in {**initial, **built}.items()})
    tensors["num_processes"] = torch.tensor([acc.num_processes])
    tensors["steps"] = torch.tensor([trainer.state.global_step])
    save_file(tensors, os.path.join(out_dir, f"rank{acc.process_index}.safetensors"))


def _floats(prefix, module):
    # Parameters only: BatchNorm running statistics are per-rank buffers that DDP syncs before each forward,
    # so they legitimately differ after the last step.
    return {f"{prefix}.{k}": p.detach().clone().contiguous() for k, p in module.named_parameters()}


if __name__ == "__main__":
    main(sys.argv[1])
