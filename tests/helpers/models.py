"""The tiny, seeded student and teacher that the trainer tests share."""
import torch

from hfkd import create_backbone


def tiny_student(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)


def tiny_teacher():
    torch.manual_seed(100)
    return create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32)
