"""A feature_kd student trained without labels is saved as a backbone (no head); `hfkd train` gives it a new one."""
import json
import os

import pytest
import torch
from safetensors import safe_open

import hfkd
from conftest import run_args
from hfkd import DistillationTrainer, create_backbone, create_method
from hfkd.models import OutputRequest

POOLED = OutputRequest(pooled=True)


def _feature_teacher():
    import timm

    torch.manual_seed(1)
    return create_backbone(timm.create_model("test_vit", num_classes=0, img_size=32))


def _distil(student, small_digits, out, evaluate=False, **method_settings):
    trainer = DistillationTrainer(student, [_feature_teacher()], create_method("feature_kd", **method_settings),
                                  run_args(out, max_steps=2, use_cpu=True, per_device_train_batch_size=16),
                                  train_dataset=small_digits.train,
                                  eval_dataset=small_digits.eval.select(range(32)) if evaluate else None)
    trainer.train()
    if evaluate:
        trainer.evaluate()
    return trainer, trainer.save_model()


def _features(backbone, x):
    backbone.eval()
    with torch.no_grad():
        return backbone(x, POOLED).pooled


def _weight_names(folder):
    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def test_a_timm_student_distilled_without_labels_is_saved_as_a_backbone(small_digits, tmp_path):
    import timm

    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    trainer, folder = _distil(student, small_digits, tmp_path, evaluate=True)
    assert "eval_accuracy" in trainer.state.log_history[-1]  # measured through the untrained head...
    x = torch.randn(3, 3, 32, 32)
    trained = _features(trainer.student, x)

    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["num_classes"] == 0 and config["pretrained_cfg"]["num_classes"] == 0
    assert "label_names" not in config
    assert not any(k.startswith("fc.") for k in _weight_names(folder))  # no head weights
    by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert by_timm.num_classes == 0
    overlay = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                                pretrained_cfg_overlay=dict(file=os.path.join(folder, "model.safetensors"))).eval()
    by_hfkd = hfkd.from_pretrained(folder)
    assert by_hfkd.num_classes == 0 and by_hfkd.label_names is None
    with torch.no_grad():
        torch.testing.assert_close(by_timm(x), trained)
        torch.testing.assert_close(overlay(x), trained)
    torch.testing.assert_close(_features(by_hfkd, x), trained)

    lineage = by_hfkd.lineage
    assert lineage["student"]["headless"] and lineage["student"]["num_features"] == 96
    assert lineage["label_names"] is None
    assert "eval_accuracy" not in lineage["metrics"]  # the untrained head's accuracy is not the backbone's
    card = open(os.path.join(folder, "README.md")).read()
    assert "image backbone: a feature extractor without a classification head" in card
    assert "pipeline_tag: image-feature-extraction" in card and "## Fine-tuning" in card
    assert "hfkd train --student hf-hub:" in card and "num_classes=N" in card
    results = card.split("## Results")[1].split("## Usage")[0]
    assert "has no accuracy to report" in results and "top-1" not in results
    assert trainer.student.num_classes == 10  # the live student keeps its head: only the save is headless


def test_with_labels_the_head_is_trained_and_kept(small_digits, tmp_path):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    _, folder = _distil(student, small_digits, tmp_path, ce_weight=1.0)
    assert json.load(open(os.path.join(folder, "config.json")))["num_classes"] == 10
    assert hfkd.from_pretrained(folder).num_classes == 10
    assert "image classifier" in open(os.path.join(folder, "README.md")).read()


def _vit_classifier_folder(folder, cls="ViTForImageClassification"):
    import transformers

    config_class = transformers.Dinov2Config if cls.startswith("Dinov2") else transformers.ViTConfig
    torch.manual_seed(0)
    config = config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                          image_size=32, patch_size=8, num_labels=10)
    getattr(transformers, cls)(config).save_pretrained(str(folder))
    return str(folder)


def test_a_transformers_student_is_saved_as_its_automodel_encoder(small_digits, tmp_path):
    from transformers import AutoModel, ViTModel

    student = create_backbone(_vit_classifier_folder(tmp_path / "vit"), num_classes=10)
    trainer, folder = _distil(student, small_digits, tmp_path / "run")
    x = torch.randn(3, 3, 32, 32)
    trained = _features(trainer.student, x)  # what the classifier read: the class token after the final norm

    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["architectures"] == ["ViTModel"]
    assert len(config.get("id2label") or {}) < 10  # not the label map of the head that was left out
    assert not any(k.startswith("classifier.") for k in _weight_names(folder))
    encoder = AutoModel.from_pretrained(folder).eval()
    assert isinstance(encoder, ViTModel)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values=x).last_hidden_state[:, 0], trained)
    by_hfkd = hfkd.from_pretrained(folder)
    assert by_hfkd.num_classes == 0
    # AutoModel adds a randomly initialised pooler the checkpoint never had: hfkd drops it and reads the class token
    assert by_hfkd.model.pooler is None
    torch.testing.assert_close(_features(by_hfkd, x), trained)
    assert "AutoModel.from_pretrained" in open(os.path.join(folder, "README.md")).read()


def test_a_student_whose_classifier_reads_other_features_is_refused_before_training(small_digits, tmp_path):
    # Dinov2ForImageClassification reads the class token and the mean patch token, concatenated: its encoder's
    # pooled output is the class token alone, so a saved backbone would not give the distilled features.
    student = create_backbone(_vit_classifier_folder(tmp_path / "dino", "Dinov2ForImageClassification"),
                              num_classes=10)
    with pytest.raises(ValueError, match="reads other features .*64.*32.*ce_weight > 0"):
        DistillationTrainer(student, [_feature_teacher()], create_method("feature_kd"), run_args(tmp_path / "run"),
                            train_dataset=small_digits.train)
    # with labels the head is trained and saved: accepted
    DistillationTrainer(student, [_feature_teacher()], create_method("feature_kd", ce_weight=1.0),
                        run_args(tmp_path / "run2"), train_dataset=small_digits.train)


def test_create_backbone_takes_num_classes_0_for_a_backbone(tmp_path):
    timm_backbone = create_backbone("test_resnet", num_classes=0, pretrained=False)
    assert timm_backbone.num_classes == 0 and timm_backbone.model.num_classes == 0
    vit = create_backbone(_vit_classifier_folder(tmp_path / "vit"), num_classes=0)  # the classifier's encoder
    assert vit.num_classes == 0 and type(vit.model).__name__ == "ViTModel" and vit.model.pooler is None
    x = torch.randn(2, 3, 32, 32)
    assert _features(vit, x).shape == (2, 32)
    from transformers import ViTConfig

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)
    encoder = create_backbone(config, num_classes=0)  # a config: its AutoModel, no head
    assert encoder.num_classes == 0 and type(encoder.model).__name__ == "ViTModel"


# -- hfkd train: a new head ----------------------------------------------------------------------------------------
def _train_argv(student, out, *extra):
    return ["train", "--student", student, "--max_train_samples", "64", "--max_steps", "1",
            "--per_device_train_batch_size", "16", "--eval_strategy", "no", "--save_strategy", "no",
            "--output_dir", str(out), *extra]


@pytest.mark.slow
def test_distil_a_backbone_on_the_command_line_then_hfkd_train_gives_it_a_new_head(tmp_path, digits):
    from transformers import Dinov2Config, Dinov2Model

    from hfkd.cli import main as hfkd_main
    from hfkd.cli.arguments import ModelArguments
    from hfkd.cli.pipeline import build_student

    teacher = str(tmp_path / "dinov2")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(teacher)
    rows = hfkd_main(["distill", "--method", "feature_kd", "--student", "test_resnet", "--student_pretrained",
                      "false", "--teachers", teacher, "--baseline", "false", *_train_argv("x", tmp_path / "distil")[3:]])
    student_row = rows[-1]
    assert student_row["role"] == "student, feature_kd (a backbone: no head trained)"
    assert student_row["eval_accuracy"] is None  # not the untrained head's score
    folder = str(tmp_path / "distil" / "student")
    saved = hfkd.from_pretrained(folder)
    assert saved.num_classes == 0

    student = build_student(ModelArguments(student=folder), digits, seed=0)
    assert student.num_classes == 10 and student.label_names == digits.label_names
    assert student.model.fc.out_features == 10
    start = {k: v for k, v in student.model.state_dict().items() if not k.startswith("fc.")}
    assert start.keys() == saved.model.state_dict().keys()
    for k, v in saved.model.state_dict().items():  # the backbone starts from the saved weights
        torch.testing.assert_close(start[k], v, msg=k)

    hfkd_main(_train_argv(folder, tmp_path / "run"))
    trained = hfkd.from_pretrained(str(tmp_path / "run" / "student"))
    assert trained.num_classes == 10 and trained.label_names == digits.label_names


def test_a_classifier_of_other_classes_is_refused_unless_a_new_head_is_asked(tmp_path, capsys):
    from helpers.models import saved_model
    from hfkd.cli import main as hfkd_main

    five = saved_model(tmp_path / "five", arch="test_resnet", num_classes=5)
    with pytest.raises(SystemExit, match="classifier of 5 classes, but the dataset has 10.*--num_classes 10"):
        hfkd_main(_train_argv(five, tmp_path / "a", "--dry_run"))
    out = hfkd_main(_train_argv(five, tmp_path / "b", "--dry_run", "--num_classes", "10"))
    assert out["problems"] == []
    assert "classifier of 5 classes: it gets a new, randomly initialised head of 10 classes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--num_classes 7 does not match the dataset, which has 10 classes"):
        hfkd_main(_train_argv(five, tmp_path / "c", "--dry_run", "--num_classes", "7"))
    ten = saved_model(tmp_path / "ten", arch="test_resnet", num_classes=10)  # its own classes: its head is kept
    assert hfkd_main(_train_argv(ten, tmp_path / "d", "--dry_run"))["problems"] == []
    assert "new, randomly initialised head" not in capsys.readouterr().out
    backbone = saved_model(tmp_path / "backbone", arch="test_resnet", num_classes=0)  # no head: it gets one
    assert hfkd_main(_train_argv(backbone, tmp_path / "e", "--dry_run"))["problems"] == []
    assert "backbone saved without a head: it gets a new, randomly initialised head of 10 classes" in \
        capsys.readouterr().out


def test_hfkd_eval_of_a_backbone_says_to_give_it_a_head(tmp_path):
    from helpers.models import saved_model
    from hfkd.cli import main as hfkd_main

    backbone = saved_model(tmp_path / "backbone", arch="test_resnet", num_classes=0)
    with pytest.raises(SystemExit, match="is a backbone without a classification head .*hfkd train --student"):
        hfkd_main(["eval", backbone, "--dataset", "hfkd/digits"])


def test_the_dry_run_of_feature_kd_offers_no_teacher_cache(tmp_path, capsys):
    import timm

    from hfkd.cli import main as hfkd_main

    teacher = hfkd.save_student(create_backbone(timm.create_model("test_vit", num_classes=0, img_size=32)),
                                str(tmp_path / "vit"))
    report = hfkd_main(["distill", "--method", "feature_kd", "--student", "test_resnet", "--student_pretrained",
                        "false", "--teachers", teacher, *_train_argv("x", tmp_path / "out", "--dry_run")[3:]])
    out = capsys.readouterr().out
    assert "a teacher cache does not store (logits only)" in out and "a teacher cache pays" not in out
    assert "cache_bytes_per_million_views_float16" not in report["teacher_cost"]
