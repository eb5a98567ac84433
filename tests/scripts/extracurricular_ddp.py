"""Extracurricular learning on 2 CPU processes (real DDP): each rank writes its trained student.

Run by tests/test_extracurricular.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/extracurricular_ddp.py OUT_DIR
"""
import sys

import torch
from helpers.ddp import parameters, save_rank, short_run_args, two_teacher_setup

from hfkd import DistillationTrainer
from hfkd.methods.extracurricular import Extracurricular


class CountingEL(Extracurricular):
    def prepare_batch(self, batch):
        out = super().prepare_batch(batch)
        self.__dict__.setdefault("rows", []).append(out["pixel_values"].shape[0])
        return out


def main(out_dir: str) -> None:
    train, evaluation, teachers, student = two_teacher_setup()
    initial = parameters("student", student)
    method = CountingEL(extra_ratio=1.0, uncertainty="weight")
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=short_run_args(out_dir),
                                  train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    unwrapped = trainer.accelerator.unwrap_model(trainer._model)
    tensors = parameters("student", unwrapped.student)
    tensors.update({f"initial.{k}": v for k, v in initial.items()})
    tensors["rows_per_step"] = torch.tensor(method.rows)
    save_rank(tensors, out_dir, trainer)


if __name__ == "__main__":
    main(sys.argv[1])
