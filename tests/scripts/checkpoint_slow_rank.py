"""A checkpoint where one process is slower to write its part (2 CPU processes, DDP).

Run by tests/test_reliability_ddp.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/checkpoint_slow_rank.py OUT_DIR

Every process writes into the checkpoint's temporary folder (its random states; under FSDP its shards).  Rank 1
starts its ``save_state`` a second late, as a busy or distant process would: the main process must not list
and rename the folder before rank 1 is done.
"""
import os
import sys
import time

import torch

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.launch import create_accelerator


def main(out_dir: str) -> None:
    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=os.path.join(out_dir, "run"), max_steps=2, per_device_train_batch_size=8,
                                 save_strategy="steps", save_steps=1, save_total_limit=None, eval_strategy="no",
                                 disable_tqdm=True, eval_teachers=False, seed=0)
    accelerator = create_accelerator(args)
    if accelerator.process_index == 1:
        save_state = accelerator.save_state

        def late_save_state(*a, **kw):
            time.sleep(1.0)
            return save_state(*a, **kw)

        accelerator.save_state = late_save_state
    trainer = DistillationTrainer(student, method="supervised", args=args, accelerator=accelerator,
                                  train_dataset=digits.train.select(range(64)))
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
