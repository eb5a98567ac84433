"""PS-KD on 2 CPU processes (real DDP): each rank writes its bank and the predictions it made.

Run by tests/test_pskd.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/pskd_ddp.py OUT_DIR

44 images, 8 per process and step: 6 batches of which the last is short, so accelerate's even_batches
pads it with images from the start of the epoch.  A checkpoint is written after epoch 0 (step 3).
"""
import sys

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from helpers.ddp import save_rank

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.methods.pskd import PSKD


class RecordingPSKD(PSKD):
    def __init__(self):
        super().__init__(alpha_T=0.8)
        self.records = []  # (step, index, softmax) of every image this rank trained on
        self.calls = 0

    def compute_loss(self, batch, student, teachers):
        out = super().compute_loss(batch, student, teachers)
        probs = F.softmax(student.logits.detach().float(), 1)
        self.records += [(self.calls, i, p) for i, p in zip(batch["index"].tolist(), probs)]
        self.calls += 1
        return out


def main(out_dir: str) -> None:
    digits = load_image_dataset()
    set_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    method = RecordingPSKD()
    args = DistillationArguments(output_dir=out_dir, num_train_epochs=2, per_device_train_batch_size=8,
                                 learning_rate=0.01, save_strategy="steps", save_steps=3, save_total_limit=None,
                                 eval_strategy="no", disable_tqdm=True, eval_teachers=False, seed=0, logging_steps=1)
    trainer = DistillationTrainer(student, method=method, args=args, train_dataset=digits.train.select(range(44)))
    trainer.train()
    steps, index, probs = zip(*method.records)
    save_rank({"bank": method.bank, "seen": method.seen, "step": torch.tensor(steps), "index": torch.tensor(index),
               "softmax": torch.stack(probs)}, out_dir, trainer)


if __name__ == "__main__":
    main(sys.argv[1])
