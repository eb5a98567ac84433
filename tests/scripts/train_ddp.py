"""2-process KD run: afterwards every rank must hold bitwise the same student."""
import sys

import torch

import hfkd
from hfkd.data import load_image_dataset


def main(out):
    data = load_image_dataset()
    torch.manual_seed(0)
    student = hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    teacher = hfkd.create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32)
    args = hfkd.DistillationArguments(output_dir=out, max_steps=4, per_device_train_batch_size=16,
                                      save_strategy="no", eval_strategy="no", disable_tqdm=True)
    trainer = hfkd.DistillationTrainer(student, [teacher], method="kd", args=args,
                                       train_dataset=data.train.select(range(128)), eval_dataset=data.eval.select(range(50)))
    trainer.train()
    acc = trainer.accelerator
    flat = torch.cat([p.detach().flatten() for p in trainer.unwrapped_student().parameters()])
    gathered = acc.gather(flat.unsqueeze(0))
    metrics = trainer.evaluate()
    if acc.is_main_process:
        print("WORLD", acc.num_processes)
        print("RANKS_IDENTICAL", bool(torch.equal(gathered[0], gathered[1])))
        print("EVAL_SAMPLES", metrics["eval_samples"])


if __name__ == "__main__":
    main(sys.argv[1])
