"""The training data path at real sizes: a batch made in one buffer has the per-sample path's pixels, bitwise."""
import numpy as np
import pytest
import torch
from PIL import Image

from hfkd.data import load_image_dataset
from hfkd.data.augment import AugmentConfig
from hfkd.data.transforms import (ImageClassificationDataset, RowBatch, collate_rows, create_image_transform,
                                  seeded_batch)
from hfkd.models.preprocess import PreprocessConfig

PREPROCESS = PreprocessConfig(input_size=(3, 64, 64))
JITTER = AugmentConfig(color_jitter=0.4)  # timm's defaults otherwise: RandomResizedCrop 0.08-1, flip 0.5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An imagefolder of JPEGs of mixed sizes and modes (a grey one, a landscape, a portrait), as a user has."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    sizes = [(160, 120), (120, 160), (97, 131), (200, 90), (64, 64), (150, 150)]
    for i, (w, h) in enumerate(sizes * 2):
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L") if i == 3 else Image.fromarray(pixels)
        image.save(folder / f"{i:02d}.jpg", quality=90)
    return load_image_dataset(str(root), validation_fraction=0.0)


def _per_sample(dataset, indices, epoch=None):
    """What the dataset made before the batch buffer: each sample transformed alone, then stacked."""
    images = [dataset.dataset[i][dataset.image_column].convert(dataset.image_mode) for i in indices]
    epoch = dataset.epoch if epoch is None else epoch
    return torch.stack(seeded_batch(dataset.transform, images, dataset.seed, epoch, indices))


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_buffer_is_the_per_sample_path_bitwise(photos, mode, channels, training):
    preprocess = PreprocessConfig(input_size=(channels, 64, 64), mean=(0.5,) * channels, std=(0.25,) * channels) \
        if channels == 1 else PREPROCESS
    transform = create_image_transform(preprocess, training, JITTER)
    data = ImageClassificationDataset(photos.train, transform, photos.image_column, photos.label_column, seed=3,
                                      image_mode=mode)
    indices = [5, 0, 3, 11, 7]
    for epoch in (0, 2):
        data.set_epoch(epoch)
        rows = data.__getitems__(indices)
        assert isinstance(rows, RowBatch)
        batch = collate_rows(rows)
        # the loader's batch is the buffer itself, not a stacked copy of it
        assert batch["pixel_values"].data_ptr() == rows.pixel_values.data_ptr()
        assert batch["pixel_values"].shape == (5, channels, 64, 64)
        assert torch.equal(batch["pixel_values"], _per_sample(data, indices)), epoch
        assert batch["index"].tolist() == indices
        # torch's default_collate (a user's own DataLoader) stacks the rows' views into the same batch
        assert torch.equal(torch.utils.data.default_collate(rows)["pixel_values"], batch["pixel_values"])
    if training:  # the comparison can fail: another epoch's draw is other pixels
        data.set_epoch(1)
        assert not torch.equal(collate_rows(data.__getitems__(indices))["pixel_values"], _per_sample(data, indices, 0))


def test_transforms_without_the_tensor_tail_keep_the_per_sample_path(photos):
    # Random erasing comes after the normalisation: the batch is made sample by sample, as before.
    transform = create_image_transform(PREPROCESS, True, AugmentConfig(re_prob=1.0))
    data = ImageClassificationDataset(photos.train, transform, photos.image_column, photos.label_column, seed=3)
    rows = data.__getitems__([1, 2, 4])
    assert not isinstance(rows, RowBatch)
    assert torch.equal(collate_rows(rows)["pixel_values"], _per_sample(data, [1, 2, 4]))


def test_a_zero_std_is_still_refused_by_normalize(photos):
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms

    transform = transforms.Compose([transforms.CenterCrop(64), MaybeToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))])
    data = ImageClassificationDataset(photos.train, transform, photos.image_column, photos.label_column)
    with pytest.raises(ValueError, match="std evaluated to zero"):
        data.__getitems__([0, 1])


@pytest.mark.slow
def test_workers_batches_are_the_main_processs(photos):
    """Workers make the buffer in shared memory; the batches are those of the main process, bitwise."""
    transform = create_image_transform(PREPROCESS, True, JITTER)
    data = ImageClassificationDataset(photos.train, transform, photos.image_column, photos.label_column, seed=1)

    def batches(workers):
        loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=workers, collate_fn=collate_rows)
        return [b["pixel_values"] for b in loader]

    main, workers = batches(0), batches(2)
    assert len(main) == len(workers) == 3
    assert all(torch.equal(a, b) for a, b in zip(main, workers))
