"""One KD step under whatever `accelerate launch` set up; prints what Accelerate prepared the student as."""
import sys

import torch

import hfkd
from hfkd.data import load_image_dataset


def main(out):
    data = load_image_dataset()
    torch.manual_seed(0)
    student = hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    teacher = hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = hfkd.DistillationArguments(output_dir=out, max_steps=1, per_device_train_batch_size=4,
                                      save_strategy="no", eval_strategy="no", eval_teachers=False, disable_tqdm=True)
    trainer = hfkd.DistillationTrainer(student, [teacher], method="kd", args=args,
                                       train_dataset=data.train.select(range(16)))
    trainer.train()
    if trainer.accelerator.is_main_process:
        print("PREPARED", trainer.accelerator.distributed_type.value, type(trainer._model).__name__, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
