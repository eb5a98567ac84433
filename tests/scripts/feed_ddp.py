"""Parallel FEED on 2 CPU processes (real DDP): each rank writes its trained student and transforms.

Run by tests/test_feed.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/feed_ddp.py OUT_DIR
"""
import sys

from helpers.ddp import parameters, save_rank, short_run_args, two_teacher_setup

from hfkd import DistillationTrainer, create_method


def main(out_dir: str) -> None:
    train, evaluation, teachers, student = two_teacher_setup()
    initial = parameters("student", student)
    method = create_method("feed", beta=50.0)
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=short_run_args(out_dir),
                                  train_dataset=train, eval_dataset=evaluation)
    # The transforms are built by setup() inside train(); record them right after it, before any step.
    built = {}
    original_setup = method.setup

    def setup_and_record(context):
        original_setup(context)
        built.update(parameters("transforms", method.transforms))

    method.setup = setup_and_record
    trainer.train()
    unwrapped = trainer.accelerator.unwrap_model(trainer._model)
    tensors = {**parameters("student", unwrapped.student), **parameters("transforms", unwrapped.method.transforms)}
    tensors.update({f"initial.{k}": v for k, v in {**initial, **built}.items()})
    save_rank(tensors, out_dir, trainer)


if __name__ == "__main__":
    main(sys.argv[1])
