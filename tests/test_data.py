"""Dataset loading, column detection, the embedded default and seeded augmentation."""
import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image

from hfkd.data import AugmentConfig, ImageClassificationDataset, create_image_transform, load_image_dataset
from hfkd.models import PreprocessConfig


def _tiny(n=20, label_name="label", string_labels=False):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for _ in range(n)]
    labels = [i % 2 for i in range(n)]
    if string_labels:
        return Dataset.from_dict({"img": imgs, label_name: ["cat" if l else "dog" for l in labels]},
                                 features=Features({"img": Image(), label_name: __import__("datasets").Value("string")}))
    return Dataset.from_dict({"img": imgs, label_name: labels},
                             features=Features({"img": Image(), label_name: ClassLabel(names=["a", "b"])}))


def test_default_dataset(digits):
    assert len(digits.train) == 1437 and len(digits.eval) == 360
    assert digits.label_names == [str(i) for i in range(10)]
    img = digits.train[0][digits.image_column]
    assert img.size == (32, 32) and img.mode == "RGB"
    # stratified: every class in both splits
    assert set(digits.eval[digits.label_column]) == set(range(10))


def test_in_memory_dataset_detects_columns_and_holds_out_eval():
    data = load_image_dataset(_tiny(), validation_fraction=0.2)
    assert (data.image_column, data.label_column) == ("img", "label")
    assert len(data.train) == 16 and len(data.eval) == 4
    assert data.label_names == ["a", "b"]


def test_string_labels_are_encoded():
    data = load_image_dataset(_tiny(string_labels=True, label_name="class"), validation_fraction=0.25)
    assert data.label_names == ["cat", "dog"]


def test_missing_label_column_is_a_clear_error(tmp_path):
    from conftest import run_args
    from hfkd import DistillationTrainer, create_backbone
    from hfkd.data import find_columns

    ds = _tiny().rename_column("label", "mystery")
    ds = ds.cast_column("mystery", __import__("datasets").Value("int64"))
    with pytest.raises(ValueError, match="no label column found.*label_column="):
        find_columns(ds)
    # Data without a label column loads (the methods that need no labels train on it); a method that needs labels
    # is refused by the trainer, naming the columns and the fix.
    data = load_image_dataset(ds)
    assert data.label_column is None and data.num_classes is None and not data.labelled("train")
    student = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="method 'supervised' needs labels.*'mystery'.*label_column=") as e:
        DistillationTrainer(student, method="supervised", args=run_args(tmp_path), train_dataset=data.train)
    assert "meal_v2" in str(e.value)
    with pytest.raises(ValueError, match="no label column 'nope'"):
        load_image_dataset(_tiny(), label_column="nope")


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        load_image_dataset(_tiny().select([]))


def test_imagefolder_parquet_and_saved_dataset(tmp_path):
    from PIL import Image as PILImage

    for split in ("train", "validation"):
        for cls in ("cat", "dog"):
            d = tmp_path / "folder" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                PILImage.new("RGB", (10, 10), (i * 40, 0, 0)).save(d / f"{i}.png")
    folder = load_image_dataset(str(tmp_path / "folder"), cache_dir=str(tmp_path / "cache"))
    assert folder.label_names == ["cat", "dog"] and len(folder.train) == 6 and len(folder.eval) == 6

    ds = _tiny()
    ds.to_parquet(str(tmp_path / "data.parquet"))
    pq = load_image_dataset(str(tmp_path / "data.parquet"), validation_fraction=0.5,
                            cache_dir=str(tmp_path / "cache"))
    assert len(pq.train) + len(pq.eval) == 20

    ds.save_to_disk(str(tmp_path / "saved"))
    saved = load_image_dataset(str(tmp_path / "saved"), validation_fraction=0.5)
    assert saved.label_names == ["a", "b"]


def test_augmentation_is_seeded_per_sample_and_epoch(digits):
    pre = PreprocessConfig(input_size=(3, 32, 32))
    ds = ImageClassificationDataset(digits.train, create_image_transform(pre, True, AugmentConfig()),
                                    digits.image_column, digits.label_column, seed=1)
    a = ds[5]["pixel_values"]
    torch.manual_seed(123)  # the global RNG neither drives nor is disturbed by augmentation
    state = torch.get_rng_state()
    assert torch.equal(a, ds[5]["pixel_values"])
    assert torch.equal(state, torch.get_rng_state())
    ds.set_epoch(1)
    assert not torch.equal(a, ds[5]["pixel_values"])
    row = ds[5]
    assert row["index"] == 5 and row["labels"] == digits.train[5][digits.label_column]
