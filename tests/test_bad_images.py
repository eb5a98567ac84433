"""Issue 21: an unreadable image or a decompression bomb among many is named, or skipped and listed."""
import json
import os

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from conftest import run_args
from hfkd import DistillationArguments, DistillationTrainer, create_backbone

NUM_CLASSES = 4


def _student():
    torch.manual_seed(0)
    return create_backbone("test_resnet", num_classes=NUM_CLASSES, pretrained=False, image_size=32)


def _image_files(folder, n, bad=None):
    """``n`` small PNG files, rows ``bad`` replaced: {row: "garbage" | "truncated" | "bomb"}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        kind = (bad or {}).get(i)
        if kind == "bomb":  # 64x64: over twice the MAX_IMAGE_PIXELS the tests set (see the bomb_limit fixture)
            PILImage.new("L", (64, 64)).save(path)
        else:
            PILImage.new("RGB", (16, 16), color=(i * 7 % 256, i * 13 % 256, 90)).save(path)
        if kind == "garbage":
            path.write_bytes(b"this is not an image")
        elif kind == "truncated":
            path.write_bytes(path.read_bytes()[:60])
        paths.append(str(path))
    return paths


def _dataset(folder, n, bad=None):
    features = Features({"image": Image(), "label": ClassLabel(names=[f"c{i}" for i in range(NUM_CLASSES)])})
    return Dataset.from_dict({"image": _image_files(folder, n, bad), "label": [i % NUM_CLASSES for i in range(n)]},
                             features=features)


@pytest.fixture
def bomb_limit(monkeypatch):
    """A 64x64 image stands for a 20000x20000 one: PIL refuses more than 2 x MAX_IMAGE_PIXELS in both cases."""
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 16x16 images stay far below it


def _args(tmp_path, **kw):
    return run_args(tmp_path / "run", **{"per_device_train_batch_size": 8, "num_train_epochs": 1, **kw})


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_an_unreadable_image_is_named_with_the_ways_out(tmp_path, workers):
    from hfkd.data.checks import BadImageError

    train = _dataset(tmp_path / "train", 40, {11: "garbage"})
    trainer = DistillationTrainer(_student(), method="supervised", args=_args(tmp_path, dataloader_num_workers=workers),
                                  train_dataset=train)
    with pytest.raises(BadImageError, match=r"row 11 \(column 'image', file '.*img_011.png'\).*UnidentifiedImageError"
                                      r".*--on_bad_image skip.*--verify_images"):
        trainer.train()


def test_a_decompression_bomb_at_evaluation_names_the_file_and_its_pixels(tmp_path, bomb_limit):
    train, evaluation = _dataset(tmp_path / "train", 16), _dataset(tmp_path / "eval", 12, {5: "bomb"})
    trainer = DistillationTrainer(_student(), method="supervised", args=_args(tmp_path), train_dataset=train,
                                  eval_dataset=evaluation)
    with pytest.raises(OSError, match=r"row 5 .*img_005.png.*too large to decode safely.*4096 pixels"):
        trainer.evaluate()


@pytest.mark.slow
def test_skip_leaves_bad_images_out_counts_and_lists_them_with_workers(tmp_path, bomb_limit):
    """120 images, 3 bad (garbage, truncated, bomb), 2 data-loader workers: one epoch trains on the other 117."""
    bad = {11: "garbage", 40: "truncated", 77: "bomb"}
    train = _dataset(tmp_path / "train", 120, bad)
    evaluation = _dataset(tmp_path / "eval", 20, {3: "garbage"})
    args = _args(tmp_path, on_bad_image="skip", dataloader_num_workers=2, eval_strategy="epoch")
    trainer = DistillationTrainer(_student(), method="supervised", args=args, train_dataset=train,
                                  eval_dataset=evaluation)
    trainer.train()
    assert trainer.state.global_step == 15  # every batch trained (120 / 8)
    assert sorted(trainer.train_dataset.bad_rows) == sorted(bad)
    logged = [e for e in trainer.state.log_history if "train_bad_images_skipped" in e]
    assert logged and logged[-1]["train_bad_images_skipped"] == 3
    metrics = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    assert metrics["eval_samples"] == 19  # the unreadable eval image is not counted as a sample
    folder = trainer.save_model()
    lineage = json.load(open(os.path.join(folder, "hfkd.json")))["bad_images"]
    assert lineage["on_bad_image"] == "skip" and lineage["train"]["skipped_while_reading"] == 3
    assert {e["file"] for e in lineage["train"]["skipped"]} == {f"img_{r:03d}.png" for r in bad}  # no local paths
    assert lineage["eval"]["skipped"] == [{"row": 3, "file": "img_003.png"}]


def test_verify_images_lists_every_bad_file_before_training(tmp_path, bomb_limit):
    train = _dataset(tmp_path / "train", 30, {4: "garbage", 20: "bomb"})
    with pytest.raises(ValueError, match=r"(?s)2 image\(s\) of the train split cannot be read:\n  row 4: '.*img_004"
                                         r".png'.*\n  row 20: '.*img_020.png': .*4096 pixels.*--on_bad_image skip"):
        DistillationTrainer(_student(), method="supervised", args=_args(tmp_path, verify_images=True),
                            train_dataset=train)
    assert not os.path.exists(tmp_path / "run" / "checkpoint-1")


def test_verify_images_with_skip_trains_without_them(tmp_path, bomb_limit):
    train = _dataset(tmp_path / "train", 30, {4: "garbage", 20: "bomb"})
    args = _args(tmp_path, verify_images=True, on_bad_image="skip", max_steps=2)
    trainer = DistillationTrainer(_student(), method="supervised", args=args, train_dataset=train)
    assert len(trainer.train_dataset) == 28
    trainer.train()
    assert trainer.train_dataset.bad_rows == []  # nothing left to skip while reading
    summary = trainer.lineage()["bad_images"]
    assert summary["train"]["left_out_by_verification"] == 2
    assert [e["row"] for e in summary["train"]["verification"]] == [4, 20]


def test_a_batch_of_only_bad_images_is_never_empty(tmp_path):
    from hfkd.data.transforms import ImageClassificationDataset

    data = ImageClassificationDataset(_dataset(tmp_path / "d", 6, {1: "garbage", 2: "garbage"}), lambda im: 0,
                                      "image", "label", on_bad_image="skip")
    assert [row["index"] for row in data.__getitems__([1, 2])] == [3]
    assert data.bad_rows == [1, 2]


def test_bad_image_options_are_checked_and_on_the_command_line():
    from hfkd.cli.parser import parse_args

    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        DistillationArguments(on_bad_image="ignore")
    (args,), _ = parse_args((DistillationArguments,), ["--on_bad_image", "skip", "--verify_images"])
    assert args.on_bad_image == "skip" and args.verify_images


@pytest.mark.slow
def test_a_real_20000_by_20000_png_is_a_bad_image(tmp_path):
    """The issue's case with PIL's own limit: the file is 48 kB, its header declares 400 million pixels."""
    evaluation = _dataset(tmp_path / "eval", 8)
    bomb = tmp_path / "eval" / "huge.png"
    PILImage.new("1", (20000, 20000)).save(bomb)  # 1 bit per pixel: 50 MB in memory for a moment
    evaluation = evaluation.cast_column("image", Image(decode=False)).map(
        lambda row, i: {"image": {"path": str(bomb), "bytes": None} if i == 6 else row["image"]}, with_indices=True
    ).cast_column("image", Image())
    trainer = DistillationTrainer(_student(), method="supervised", args=_args(tmp_path),
                                  train_dataset=_dataset(tmp_path / "train", 16), eval_dataset=evaluation)
    with pytest.raises(OSError, match=r"row 6 .*huge.png.*too large to decode safely: Image size \(400000000 pixels\)"):
        trainer.evaluate()
    from hfkd.data.checks import verify_images

    assert [(b.row, os.path.basename(b.file)) for b in verify_images(evaluation, "image", "eval")] == [(6, "huge.png")]
