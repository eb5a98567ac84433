"""feature_kd matching pooled features and the patch grid (match='both') on 2 CPU processes (real DDP): each rank
writes its trained student and projectors.

Run by tests/test_feature_kd_spatial.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/feature_kd_tokens_ddp.py OUT_DIR
"""
import sys

import torch
from accelerate.utils import set_seed
from helpers.ddp import parameters, save_rank, short_run_args, trained_tensors
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from hfkd import DistillationTrainer, create_backbone, create_method, load_image_dataset
from hfkd.models import PreprocessConfig
from hfkd.models.backbone import HeadlessTransformersBackbone


def main(out_dir: str) -> None:
    train = load_image_dataset().train.select(range(96))
    set_seed(0)
    # a ViT student (class token + 2x2 patches) and a DINOv2 teacher with 4 registers (4x4 patches)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)
    teacher = HeadlessTransformersBackbone(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8,
        num_register_tokens=4)).eval(), PreprocessConfig(input_size=(3, 32, 32)), 0)
    initial = parameters("student", student)
    trainer = DistillationTrainer(student, teachers=[teacher], method=create_method("feature_kd", match="both"),
                                  args=short_run_args(out_dir), train_dataset=train)
    trainer.train()
    save_rank(trained_tensors(trainer, initial), out_dir, trainer)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
