"""A tiny KD run for `accelerate launch --mixed_precision bf16`: which dtype does the student compute in?

Prints INNER_DTYPE (a convolution's output inside the student, hooked during training), THREADS and the
lineage's mixed_precision.  argv: OUTPUT_DIR.
"""
import json
import sys

import torch

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method
from hfkd.cli.pipeline import load_data
from hfkd.cli.arguments import DataArguments


def main(out):
    data = load_data(DataArguments(max_train_samples=32))
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                              label_names=data.label_names)
    teacher = create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32,
                              label_names=data.label_names)
    seen = []
    conv = next(m for m in student.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    args = DistillationArguments(output_dir=out, max_steps=2, per_device_train_batch_size=16, save_strategy="no",
                                 eval_strategy="no", eval_teachers=False, disable_tqdm=True)
    trainer = DistillationTrainer(student, [teacher], method=create_method("kd"), args=args,
                                  train_dataset=data.train, eval_dataset=data.eval)
    trainer.train()
    path = trainer.save_model()
    with open(f"{path}/hfkd.json") as f:
        lineage = json.load(f)
    print("INNER_DTYPE", seen[0], flush=True)
    print("THREADS", torch.get_num_threads(), flush=True)
    print("LINEAGE_MIXED_PRECISION", lineage["mixed_precision"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
