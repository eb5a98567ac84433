"""Sizes read from a saved model's files (config.json, hfkd.json, pruning.json) are checked before a model is built:
the message names the file, the field and the fix, and quotes at most a few hundred characters of the value."""
import json
import os
import shutil

import pytest

import hfkd
from hfkd import create_backbone
from hfkd.models.config_check import MAX_NUM_CLASSES


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("saved") / "timm")
    hfkd.save_student(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32), folder)
    return folder


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    from transformers import ViTConfig

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, num_labels=4)
    folder = str(tmp_path_factory.mktemp("saved") / "vit")
    hfkd.save_student(create_backbone(config), folder)
    return folder


def _edited(folder, tmp_path, edit, name="config.json"):
    copy = str(tmp_path / "edited")
    shutil.copytree(folder, copy)
    path = os.path.join(copy, name)
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    edit(config)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return copy


def _set(key, value, within=None):
    def edit(config):
        (config[within] if within else config)[key] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_set("num_classes", -3), "num_classes"),  # was: a 1000-class model with a random head
    (_set("num_classes", 10 ** 9), "num_classes"),  # was: "can't allocate memory ... 384000000000 bytes"
    (_set("num_classes", 1e9), "num_classes"),  # was: TypeError: empty(): ... found element of type float
    (_set("num_classes", "ten"), "num_classes"),  # was: TypeError '>=' not supported between 'str' and 'int'
    (_set("num_classes", MAX_NUM_CLASSES + 1), "num_classes"),
    (_set("input_size", [3, 0, -5], within="pretrained_cfg"), "pretrained_cfg.input_size"),  # was: accepted
    (_set("input_size", [3, 32], within="pretrained_cfg"), "pretrained_cfg.input_size"),
    (_set("std", [0.5, 0.0, 0.5], within="pretrained_cfg"), "pretrained_cfg.std"),
    (_set("label_names", ["zero", "one"]), "label_names"),  # two names for ten classes
    (_set("in_chans", 0, within="model_args"), "model_args.in_chans"),
])
def test_a_bad_size_in_a_timm_config_is_named(timm_folder, tmp_path, edit, field):
    folder = _edited(timm_folder, tmp_path, edit)
    for load in (hfkd.from_pretrained, lambda f: create_backbone(f, pretrained=False)):
        with pytest.raises(ValueError, match=rf"edited/config.json: {field} .*save the model again or correct the field"):
            load(folder)


@pytest.mark.parametrize("edit, field", [
    (_set("image_size", -32), "image_size"),
    (_set("num_channels", "three"), "num_channels"),
    (_set("id2label", {"0": "a", "1": "b", "7": "c", "3": "d"}), "id2label"),
])
def test_a_bad_size_in_a_transformers_config_is_named(vit_folder, tmp_path, edit, field):
    folder = _edited(vit_folder, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"edited/config.json: {field} must be"):
        hfkd.from_pretrained(folder)


def test_a_huge_value_is_quoted_short(timm_folder, tmp_path):
    folder = _edited(timm_folder, tmp_path, _set("input_size", ["x" * 100_000, 1, 1], within="pretrained_cfg"))
    with pytest.raises(ValueError, match="pretrained_cfg.input_size") as error:
        hfkd.from_pretrained(folder)
    assert len(str(error.value)) < 600


def test_a_truncated_config_is_named(timm_folder, tmp_path):
    folder = str(tmp_path / "cut")
    shutil.copytree(timm_folder, folder)
    path = os.path.join(folder, "config.json")
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"cut/config.json is not valid JSON .*download the model again"):
        hfkd.from_pretrained(folder)


def test_the_lineage_sizes_are_checked(timm_folder, tmp_path):
    folder = str(tmp_path / "lineage")
    shutil.copytree(timm_folder, folder)
    preprocess = {"input_size": [3, -1, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    with open(os.path.join(folder, "hfkd.json"), "w", encoding="utf-8") as f:
        json.dump({"student": {"preprocess": preprocess}}, f)  # was: loaded with input_size (3, -1, 32)
    with pytest.raises(ValueError, match=r"hfkd.json: student.preprocess.input_size must be"):
        hfkd.from_pretrained(folder)


def test_pruned_widths_are_checked(timm_folder, tmp_path):
    folder = str(tmp_path / "pruned")
    shutil.copytree(timm_folder, folder)
    with open(os.path.join(folder, "pruning.json"), "w", encoding="utf-8") as f:
        json.dump({"format_version": 1, "widths": {"fc": {"out_features": -3}}}, f)  # was: loaded, fc.out_features -3
    with pytest.raises(ValueError, match=r"pruning.json: widths.fc.out_features must be a width"):
        hfkd.from_pretrained(folder)


def test_a_good_config_still_loads(timm_folder, vit_folder):
    assert hfkd.from_pretrained(timm_folder).num_classes == 10
    assert hfkd.from_pretrained(vit_folder).num_classes == 4


def test_a_bad_size_in_a_preprocessor_config_is_named(vit_folder, tmp_path):
    folder = _edited(vit_folder, tmp_path, lambda c: c.update(size={"height": -5, "width": 32},
                                                              crop_size={"height": -5, "width": 32}),
                     name="preprocessor_config.json")  # was: loaded with input_size (3, -5, 32)
    with pytest.raises(ValueError, match=r"preprocessor_config.json of .*edited: size / crop_size must be"):
        hfkd.from_pretrained(folder)
