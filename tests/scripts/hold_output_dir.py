"""A run that trains 2 steps into OUT_DIR (checkpoint-2, seed 1), says "ready" and stays alive holding the folder.

    python hold_output_dir.py OUT_DIR

test_reliability_output_dir.py starts a second run on the same folder while this one lives.
"""
import sys
import time

import torch

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset


def main(out_dir):
    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=out_dir, max_steps=2, seed=1, per_device_train_batch_size=16,
                                 save_strategy="steps", save_steps=2, eval_strategy="no", disable_tqdm=True,
                                 eval_teachers=False)
    trainer = DistillationTrainer(student, method="supervised", args=args, train_dataset=digits.train.select(range(64)))
    trainer.train()
    print("ready", flush=True)
    time.sleep(300)


if __name__ == "__main__":
    main(sys.argv[1])
