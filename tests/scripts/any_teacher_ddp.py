"""A CLIP zero-shot teacher on 2 CPU processes (real DDP): each rank writes its trained student (and projector).

Run by tests/test_zero_shot.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/any_teacher_ddp.py OUT_DIR CLIP METHOD
"""
import sys

from helpers.ddp import parameters, save_rank, short_run_args, trained_tensors
from accelerate.utils import set_seed

from hfkd import DistillationTrainer, create_backbone, create_method, load_image_dataset
from hfkd.models import create_teacher


def main(out_dir: str, clip_folder: str, method_name: str) -> None:
    digits = load_image_dataset()
    train = digits.train.select(range(96))
    set_seed(0)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32,
                              label_names=digits.label_names)
    teacher = create_teacher(clip_folder, student.preprocess, 10, digits.label_names,
                             prompt_templates=["a photo of the number {}.", "a drawing of a {}."])
    method = create_method(method_name)
    initial = parameters("student", student)
    trainer = DistillationTrainer(student, teachers=[teacher], method=method, args=short_run_args(out_dir),
                                  train_dataset=train)
    trainer.train()
    save_rank(trained_tensors(trainer, initial), out_dir, trainer)


if __name__ == "__main__":
    main(*sys.argv[1:4])
