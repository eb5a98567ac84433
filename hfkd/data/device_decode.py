"""Training views made on the accelerator: JPEG bytes decoded there, cropped and normalised there (``gpu_decode``).

On a GPU server the CPU's JPEG decode and crop is what limits a small student (docs/performance.md); nvJPEG,
through ``torchvision.io.decode_jpeg(device="cuda")``, decodes a batch on the GPU instead. The views must stay
the ones the CPU path makes, so that a resumed run, a teacher cache's stored views and a CPU run agree: the
training transform is timm's own, run on a ``uint8 [3, H, W]`` tensor instead of a PIL image, under the same
per-sample seeding. Its random steps draw the same numbers from the same generators whatever the input type
(the crop box from Python's ``random`` and the image size, the flip and the colour jitter from torch's), so the
boxes, flips and jitter factors are the CPU path's; the pixels differ only by the decoder and by torch's resize
against Pillow's.

In training (``DistillationArguments.gpu_decode``), the data loader yields each image's file bytes and its view's
seed (``ImageClassificationDataset.encoded``); :class:`DeviceDecoder` makes the batch on the device at the start of
the step. Without CUDA the run keeps the ordinary CPU path, with one warning (:func:`gpu_decode_device`).
"""
from __future__ import annotations

import warnings
from typing import Callable, List, Optional, Sequence

import torch

from ..settings import shorten
from .checks import BadImageError
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
                         f"(it supports {', '.join(_TENSOR_STEPS)}); turn those augmentations off (auto_augment=None; the "
                         "CIFAR preset's crops: preset='timm') or decode on the CPU (gpu_decode=False)")
    return transforms.Compose(steps)


def gpu_decode_device(device: torch.device) -> Optional[torch.device]:
    """``device`` when it is a CUDA device; ``None`` otherwise, with one warning: the views are then made by the
    ordinary CPU path (Pillow in the data loader), which is faster than torchvision's decoder on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return device
    warnings.warn(f"gpu_decode: the run's device is {device.type}, not a CUDA GPU, so the images are decoded and "
                  "cropped on the CPU by the data loader as without gpu_decode (same crop boxes; leave gpu_decode "
                  "off on a machine without a GPU)", stacklevel=2)
    return None


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"  # the SOI marker and the next marker's first byte


def decode_images(data: Sequence[bytes], device: torch.device, mode: str = "RGB") -> List[torch.Tensor]:
    """Each image's bytes as a ``uint8 [C, H, W]`` tensor on ``device``, EXIF orientation applied as ``datasets`` does.

    JPEGs are decoded in one batched call on ``device`` (nvJPEG on a GPU); other formats (PNG, WebP, ...) by
    torchvision on the CPU, then moved. ``mode``: ``"RGB"`` or ``"L"``.
    """
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    # crops_per_image=K repeats an image's bytes (the same object) for its K views: decoded once, cropped K times
    # (the transform's steps return new tensors, so the views share the decoded image safely).
    position, unique = {}, []
    for b in data:
        if id(b) not in position:
            position[id(b)] = len(unique)
            unique.append(b)
    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in unique]
    jpegs = [k for k, b in enumerate(unique) if _is_jpeg(b)]
    out: List[Optional[torch.Tensor]] = [None] * len(unique)
    if jpegs:
        decoded = decode_jpeg([encoded[k] for k in jpegs], mode=read_mode, device=device, apply_exif_orientation=True)
        for k, image in zip(jpegs, decoded):
            out[k] = image
    for k, image in enumerate(out):
        if image is None:
            out[k] = decode_image(encoded[k], mode=read_mode, apply_exif_orientation=True).to(device)
    return [out[position[id(b)]] for b in data]


def device_views(data: Sequence[bytes], seeds: Sequence[int], transform: Callable, device: torch.device,
                 mode: str = "RGB") -> torch.Tensor:
    """The training views of images ``data``, sample ``k`` made under seed ``seeds[k]``, as one batch on ``device``.

    ``transform`` is the CPU path's training transform; ``seeds`` the seeds the CPU path uses for those samples
    (``sample_seed(seed, epoch, index)``, or a teacher cache's), so the views are the CPU path's.
    """
    images = decode_images(data, device, mode)
    return torch.stack(seeded_batch(tensor_transform(transform), images, 0, 0, range(len(images)), seeds=seeds))


class DeviceDecoder:
    """Turns a ``gpu_decode`` batch (``image_bytes``, ``view_seed``) into the CPU path's batch (``pixel_values``)."""

    def __init__(self, transform: Callable, device: torch.device, mode: str = "RGB"):
        tensor_transform(transform)  # refuses PIL-only steps by name, before the first step
        self.transform, self.device, self.mode = transform, torch.device(device), mode

    def __call__(self, batch: dict) -> dict:
        if "image_bytes" not in batch:
            return batch
        batch = dict(batch)
        data, seeds = batch.pop("image_bytes"), batch.pop("view_seed")
        seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
        try:
            pixels = device_views(data, seeds, self.transform, self.device, self.mode)
        except RuntimeError as e:  # a file whose header reads but whose data does not decode
            rows = batch["index"].tolist() if isinstance(batch.get("index"), torch.Tensor) else batch.get("index")
            raise BadImageError(f"gpu_decode: an image of the rows {shorten(str(rows))} cannot be decoded: "
                                f"{shorten(str(e), 300)}; find it with verify_images=True (--verify_images), or "
                                "train without gpu_decode, whose loader names or skips (on_bad_image) such files")
        return {"pixel_values": pixels, **batch}
