"""BAKE with global ensembling and class-aware batches on 2 CPU processes (real DDP).

Run by tests/test_bake.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/bake_ddp.py OUT_DIR

Each rank writes, per step, the indices of its batch, its detached pooled features and logits, and the Q
it trained against, so the test can rebuild Q over the union of both ranks' batches.
"""
import sys

import torch
from accelerate.utils import set_seed
from helpers.ddp import save_rank

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.methods.bake import BAKE


class RecordingBAKE(BAKE):
    def __init__(self):
        super().__init__(omega=0.5, temperature=4.0, intra_class_images=1, global_ensemble=True)
        self.records = {}

    def compute_loss(self, batch, student, teachers):
        step = len(self.records) // 6  # six records per step
        q = self.targets(student.pooled, student.logits)
        for name, value in (("index", batch["index"]), ("labels", batch["labels"]), ("features", student.pooled),
                            ("logits", student.logits), ("q", q)):
            self.records[f"{name}.{step}"] = value.detach().float().contiguous()
        self.records[f"epoch.{step}"] = torch.tensor([self.epoch])
        return super().compute_loss(batch, student, teachers)


def main(out_dir: str) -> None:
    digits = load_image_dataset()
    set_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    method = RecordingBAKE()
    args = DistillationArguments(output_dir=out_dir, num_train_epochs=2, per_device_train_batch_size=8,
                                 learning_rate=0.01, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                                 eval_teachers=False, seed=0, logging_steps=1)
    trainer = DistillationTrainer(student, method=method, args=args, train_dataset=digits.train.select(range(32)))
    trainer.train()
    save_rank({k: v.cpu() for k, v in method.records.items()}, out_dir, trainer)


if __name__ == "__main__":
    main(sys.argv[1])
