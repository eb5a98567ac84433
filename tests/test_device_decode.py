"""gpu_decode's views: the CPU path's crop boxes, flips and jitter, decoded by torchvision (here on the CPU)."""
import io
import warnings

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hfkd.data.augment import AugmentConfig
import hfkd.training.trainer
from conftest import run_args
from hfkd import DistillationTrainer, create_backbone
from hfkd.data import load_image_dataset
from hfkd.data.device_decode import DeviceDecoder, device_views, gpu_decode_device, tensor_transform
from hfkd.data.transforms import (ImageClassificationDataset, collate_rows, create_image_transform, sample_seed,
                                  seeded_batch)
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


def test_a_non_cuda_device_keeps_the_cpu_path_with_a_warning():
    with pytest.warns(UserWarning, match="not a CUDA GPU"):
        assert gpu_decode_device(torch.device("cpu")) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gpu_decode_device(torch.device("cuda", 0)) == torch.device("cuda", 0)


# -- wired into the data path and the trainer ------------------------------------------------------------------
@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """Coordinate JPEGs of mixed sizes, one PNG among them (decoded by torchvision on the CPU), two classes."""
    root = tmp_path_factory.mktemp("jpegs")
    sizes = [(160, 120), (120, 160), (97, 131), (200, 90), (64, 64), (150, 150)]
    for i, (w, h) in enumerate(sizes * 2):
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        data = _coordinate_jpeg(w, h)
        if i == 4:
            Image.open(io.BytesIO(data)).save(folder / f"{i:02d}.png")
        else:
            (folder / f"{i:02d}.jpg").write_bytes(data)
    return load_image_dataset(str(root), validation_fraction=0.0)


def _boxes(monkeypatch):
    """Record every crop box timm's RandomResizedCrop draws."""
    from timm.data.transforms import RandomResizedCropAndInterpolation

    boxes, draw = [], RandomResizedCropAndInterpolation.get_params

    def recording(img, scale, ratio):
        boxes.append(draw(img, scale, ratio))
        return boxes[-1]

    monkeypatch.setattr(RandomResizedCropAndInterpolation, "get_params", staticmethod(recording))
    return boxes


def test_encoded_rows_carry_the_cpu_paths_seeds_and_boxes(jpeg_folder, monkeypatch):
    transform = create_image_transform(PREPROCESS, is_training=True, augment=AugmentConfig())
    data = ImageClassificationDataset(jpeg_folder.train, transform, "image", "label", seed=7)
    indices = [3, 0, 11, 4, 6]
    data.set_epoch(2)
    boxes = _boxes(monkeypatch)
    cpu = collate_rows(data.__getitems__(indices))
    cpu_boxes = list(boxes)
    data.encoded = True
    rows = data.__getitems__(indices)
    assert [r["view_seed"] for r in rows] == [sample_seed(7, 2, i) for i in indices]
    stored = jpeg_folder.train.cast_column("image", datasets.Image(decode=False))
    files = [stored[i]["image"]["path"] for i in indices]
    assert [r["image_bytes"] for r in rows] == [open(f, "rb").read() for f in files]
    boxes.clear()
    batch = DeviceDecoder(transform, torch.device("cpu"))(collate_rows(rows))
    assert boxes == cpu_boxes and len(set(cpu_boxes)) == len(indices)
    assert batch["index"].tolist() == cpu["index"].tolist() and torch.equal(batch["labels"], cpu["labels"])
    assert (batch["pixel_values"] - cpu["pixel_values"]).abs().mean(dim=(1, 2, 3)).max() < 0.05
    # another epoch draws other boxes: the comparison can fail
    data.set_epoch(3)
    boxes.clear()
    DeviceDecoder(transform, torch.device("cpu"))(collate_rows(data.__getitems__(indices)))
    assert boxes != cpu_boxes


def _trainer(tmp_path, data, **kw):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=48)
    args = run_args(tmp_path / "run", per_device_train_batch_size=4, max_steps=2, gpu_decode=True, **kw)
    return DistillationTrainer(student, [], method="supervised", args=args, train_dataset=data.train,
                               augment=AugmentConfig(color_jitter=0.4))


def test_gpu_decode_without_cuda_warns_once_and_trains_on_the_cpu_path(tmp_path, jpeg_folder):
    with pytest.warns(UserWarning, match="gpu_decode: the run's device is cpu") as caught:
        trainer = _trainer(tmp_path, jpeg_folder)
    assert sum("gpu_decode" in str(w.message) for w in caught) == 1
    assert trainer.device_decoder is None and not trainer.train_dataset.encoded
    trainer.train()
    assert trainer.state.global_step == 2


def test_gpu_decode_wired_into_the_training_step(tmp_path, jpeg_folder, monkeypatch):
    """The device path run on the CPU: the loader yields bytes, the step gets the CPU path's views."""
    monkeypatch.setattr(hfkd.training.trainer, "gpu_decode_device", lambda device: torch.device("cpu"))
    trainer = _trainer(tmp_path, jpeg_folder)
    assert trainer.train_dataset.encoded
    seen = []
    prepare = trainer.method.prepare_batch
    monkeypatch.setattr(trainer.method, "prepare_batch", lambda batch: seen.append(batch) or prepare(batch))
    trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 2
    reference = ImageClassificationDataset(jpeg_folder.train, trainer.train_dataset.transform, "image", "label",
                                           seed=trainer.args.seed)
    for epoch_batch in seen:
        assert "image_bytes" not in epoch_batch and epoch_batch["pixel_values"].shape == (4, 3, 48, 48)
        reference.set_epoch(0)
        cpu = collate_rows(reference.__getitems__(epoch_batch["index"].tolist()))
        assert (epoch_batch["pixel_values"] - cpu["pixel_values"]).abs().mean(dim=(1, 2, 3)).max() < 0.05


def test_gpu_decode_refuses_pil_only_augmentation_before_training(tmp_path, jpeg_folder):
    # refused on this CPU-only machine too: the configuration cannot run where gpu_decode is meant to run
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=48)
    args = run_args(tmp_path / "run", per_device_train_batch_size=4, max_steps=2, gpu_decode=True)
    with pytest.raises(ValueError, match="RandAugment.*auto_augment=None"):
        DistillationTrainer(student, [], method="supervised", args=args, train_dataset=jpeg_folder.train,
                            augment=AugmentConfig(auto_augment="rand-m9-mstd0.5"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA GPU; this machine has none")
def test_nvjpeg_views_match_the_cpu_path():
    transform = create_image_transform(PREPROCESS, is_training=True, augment=AugmentConfig(color_jitter=0.4))
    data = [_coordinate_jpeg()] * 8
    seeds = [sample_seed(0, 1, i) for i in range(8)]
    views = device_views(data, seeds, transform, torch.device("cuda"))
    assert views.device.type == "cuda"
    assert (views.cpu() - _cpu_views(data, transform, seeds)).abs().mean(dim=(1, 2, 3)).max() < 0.05


def test_dry_run_lists_gpu_decode_with_pil_only_augmentation(tmp_path):
    from hfkd.cli import main as hfkd_main

    for i in range(20):
        (tmp_path / "photos" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / f"c{i % 2}" / f"{i}.jpg").write_bytes(_coordinate_jpeg(90 + i, 70))
    with pytest.raises(SystemExit) as stop:
        hfkd_main(["train", "--dataset", str(tmp_path / "photos"), "--student", "test_resnet",
                   "--student_pretrained", "false", "--gpu_decode", "--aug_auto_augment", "rand-m9-mstd0.5",
                   "--output_dir", str(tmp_path / "never"), "--dry_run"])
    assert "gpu_decode cannot run the training transform's RandAugment" in str(stop.value)
    assert not (tmp_path / "never").exists()


def test_gpu_decode_from_a_teacher_cache_warns_and_trains(tmp_path, jpeg_folder, monkeypatch):
    from hfkd import cache_teacher_outputs

    torch.manual_seed(1)
    teacher = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=48)
    student = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=48)
    augment = AugmentConfig(color_jitter=0.4)
    folder = str(tmp_path / "cache")
    cache_teacher_outputs([teacher], jpeg_folder.train, folder, student=student, augment=augment, num_views=2, seed=0)
    monkeypatch.setattr(hfkd.training.trainer, "gpu_decode_device", lambda device: torch.device("cpu"))
    args = run_args(tmp_path / "run", per_device_train_batch_size=4, max_steps=2, gpu_decode=True,
                    teacher_cache=folder)
    with pytest.warns(UserWarning, match="gpu_decode with a teacher cache"):
        trainer = DistillationTrainer(student, [], method="kd", args=args, train_dataset=jpeg_folder.train)
    assert trainer.train_dataset.encoded
    trainer.train()
    assert trainer.state.global_step == 2


def test_the_views_of_one_image_decode_it_once(monkeypatch):
    import torchvision.io

    from hfkd.data.device_decode import decode_images

    decoded, decode_jpeg = [], torchvision.io.decode_jpeg

    def counting(inputs, **kw):
        decoded.append(len(inputs))
        return decode_jpeg(inputs, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", counting)
    first, second = _coordinate_jpeg(), _coordinate_jpeg(100, 80)
    images = decode_images([first, first, first, second, second, bytes(bytearray(second))], torch.device("cpu"))
    assert decoded == [3]  # first, second, and the equal but separate copy of second
    assert images[0] is images[1] is images[2] and images[3] is images[4]
    assert images[0].shape == (3, 120, 160) and torch.equal(images[4], images[5])
