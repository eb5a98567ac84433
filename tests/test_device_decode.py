"""gpu_decode's views: the CPU path's crop boxes, flips and jitter, decoded by torchvision (here on the CPU)."""
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hfkd.data.augment import AugmentConfig
from hfkd.data.device_decode import decode_device, device_views, tensor_transform
from hfkd.data.transforms import create_image_transform, sample_seed, seeded_batch
from hfkd.models.preprocess import PreprocessConfig

PREPROCESS = PreprocessConfig(input_size=(3, 64, 64))


def _coordinate_jpeg(width=160, height=120) -> bytes:
    """A JPEG whose red channel is the column and green the row: a crop's pixels say where it was taken."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _cpu_views(data, transform, seeds):
    images = [Image.open(io.BytesIO(d)).convert("RGB") for d in data]
    return torch.stack(seeded_batch(transform, images, 0, 0, range(len(images)), seeds=seeds))


@pytest.mark.parametrize("augment", [AugmentConfig(color_jitter=None), AugmentConfig(color_jitter=0.4)],
                         ids=["crop-flip", "crop-flip-jitter"])
def test_device_views_have_the_cpu_paths_boxes(augment):
    transform = create_image_transform(PREPROCESS, is_training=True, augment=augment)
    data = [_coordinate_jpeg()] * 8
    seeds = [sample_seed(0, 3, i) for i in range(8)]
    before = (torch.default_generator.get_state(), np.random.get_state()[1].copy())
    device = device_views(data, seeds, transform, torch.device("cpu"))
    cpu = _cpu_views(data, transform, seeds)
    assert device.shape == cpu.shape == (8, 3, 64, 64)
    # Same box, flip and jitter: only the decoder and the resize differ (a few levels of 255, normalised).
    assert (device - cpu).abs().mean(dim=(1, 2, 3)).max() < 0.05
    # The check can fail: the views of other seeds are other boxes, far apart on this image.
    other = device_views(data, [s + 1 for s in seeds], transform, torch.device("cpu"))
    assert (other - cpu).abs().mean(dim=(1, 2, 3)).min() > 0.2
    # The training generators are left as they were.
    assert torch.equal(torch.default_generator.get_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])


def test_pil_only_augmentation_is_refused_by_name():
    transform = create_image_transform(PREPROCESS, is_training=True,
                                       augment=AugmentConfig(auto_augment="rand-m9-mstd0.5"))
    with pytest.raises(ValueError, match="RandAugment.*auto_augment=None"):
        tensor_transform(transform)


def test_no_cuda_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="no CUDA device"):
        assert decode_device("cuda") == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_device("cpu") == torch.device("cpu")
