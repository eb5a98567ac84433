"""Training views made on the accelerator: JPEG bytes decoded there, cropped and normalised there (``gpu_decode``).

On a GPU server the CPU's JPEG decode and crop is what limits a small student (docs/performance.md); nvJPEG,
through ``torchvision.io.decode_jpeg(device="cuda")``, decodes a batch on the GPU instead. The views must stay
the ones the CPU path makes, so that a resumed run, a teacher cache's stored views and a CPU run agree: the
training transform is timm's own, run on a ``uint8 [3, H, W]`` tensor instead of a PIL image, under the same
per-sample seeding. Its random steps draw the same numbers from the same generators whatever the input type
(the crop box from Python's ``random`` and the image size, the flip and the colour jitter from torch's), so the
boxes, flips and jitter factors are the CPU path's; the pixels differ only by the decoder and by torch's resize
against Pillow's.

Without CUDA the decode falls back to the CPU (with a warning): the same code path, slower than Pillow's.
"""
from __future__ import annotations

import warnings
from typing import Callable, List, Sequence

import torch

from .transforms import PCALighting, seeded_batch

# The steps that work on a tensor and draw as they do on a PIL image; anything else (RandAugment, the CIFAR
# preset's resize) is PIL-only and refused by name.
_TENSOR_STEPS = ("RandomResizedCropAndInterpolation", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
                 "Normalize", "PCALighting", "RandomErasing")
_TO_TENSOR_STEPS = ("MaybeToTensor", "ToTensor")


def tensor_transform(transform: Callable) -> Callable:
    """``transform`` (a ``Compose`` of timm's training steps) for a ``uint8 [3, H, W]`` tensor on any device.

    The crop, flip and jitter run on ``uint8`` (rounded and clamped as Pillow's are); the to-tensor step becomes a
    ``uint8 -> float32 / 255`` conversion, so the normalisation sees what it sees on the CPU path.
    """
    from torchvision import transforms

    steps, unsupported = [], []
    for step in getattr(transform, "transforms", [transform]):
        name = type(step).__name__
        if name in _TO_TENSOR_STEPS:
            steps.append(transforms.ConvertImageDtype(torch.float32))
        elif name in _TENSOR_STEPS or isinstance(step, PCALighting):
            steps.append(step)
        else:
            unsupported.append(name)
    if unsupported:
        raise ValueError(f"gpu_decode cannot run the training transform's {', '.join(unsupported)} on the device "
                         f"(it supports {', '.join(_TENSOR_STEPS)}); turn those augmentations off (auto_augment=None) "
                         "or decode on the CPU (gpu_decode=False)")
    return transforms.Compose(steps)


def decode_device(requested: str = "cuda") -> torch.device:
    """``requested`` when it is there; the CPU otherwise, with a warning (the views are the same, only slower)."""
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("gpu_decode: no CUDA device, so JPEGs are decoded and cropped on the CPU by torchvision "
                      "(slower than the default Pillow path; leave gpu_decode off on a machine without a GPU)")
        return torch.device("cpu")
    return device


def decode_jpegs(data: Sequence[bytes], device: torch.device) -> List[torch.Tensor]:
    """Each JPEG's bytes as an RGB ``uint8 [3, H, W]`` tensor on ``device`` (one batched call)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def device_views(data: Sequence[bytes], seeds: Sequence[int], transform: Callable, device: torch.device) -> torch.Tensor:
    """The training views of JPEGs ``data``, sample ``k`` made under seed ``seeds[k]``, as one batch on ``device``.

    ``transform`` is the CPU path's training transform; ``seeds`` the seeds the CPU path uses for those samples
    (``sample_seed(seed, epoch, index)``, or a teacher cache's), so the views are the CPU path's.
    """
    images = decode_jpegs(data, device)
    return torch.stack(seeded_batch(tensor_transform(transform), images, 0, 0, range(len(images)), seeds=seeds))
