"""The tiny, seeded student and teacher that the trainer tests share."""
import torch

from hfkd import create_backbone


def tiny_student(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)


def tiny_teacher():
    torch.manual_seed(100)
    return create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32)


def saved_model(folder, arch: str = "test_convnext", num_classes: int = 10, label_names=None, seed: int = 100,
                metadata=None) -> str:
    """A tiny random model saved as a folder (safetensors), loadable offline as a teacher or a student; returns it."""
    from hfkd import save_student

    torch.manual_seed(seed)
    model = create_backbone(arch, num_classes=num_classes, pretrained=False, label_names=label_names)
    return save_student(model, str(folder), metadata=metadata)
