"""The model card is a pure function of the lineage: metadata, body and plot."""
import copy
import sys

import pytest
from huggingface_hub import ModelCard

from hfkd.hub.card import create_model_card, plot_training_curves

CITATION = "@article{hinton2015distilling,\n  journal={arXiv preprint arXiv:1503.02531},\n  year={2015}\n}"
TOKEN = "hf_AnotherSecretTokenValue0123456789abcd"

LINEAGE = {
    "format_version": 1,
    "method": {"name": "kd", "hparams": {"temperature": 4.0, "alpha": 0.9}, "citation": CITATION},
    "student": {"name": "resnet10t", "library": "timm", "pretrained": True, "hub_id": "timm/resnet10t.c3_in1k",
                "num_parameters": 4_900_000,
                "preprocess": {"input_size": [3, 176, 176], "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225], "interpolation": "bicubic", "crop_pct": 0.875,
                               "crop_mode": "center"},
                "inference": {"images_per_second": 812.4, "batch_size": 32, "device": "cpu", "torch_threads": 2}},
    "label_names": ["cat", "dog"],
    "teachers": [{"name": "hf-hub:timm/resnet50.a1_in1k", "hub_id": "timm/resnet50.a1_in1k", "revision": "abc123",
                  "library": "timm", "num_parameters": 25_600_000, "weight": 1.0,
                  "metrics": {"eval_accuracy": 0.931, "eval_top5_accuracy": 1.0}},
                 {"name": "/home/me/teachers/convnext", "hub_id": None, "library": "timm",
                  "num_parameters": 3_700_000, "weight": 1.0, "metrics": {"eval_accuracy": 0.9}}],
    "ensemble_metrics": {"eval_accuracy": 0.94, "eval_top5_accuracy": 1.0},
    "dataset": {"id": "acme/pets", "revision": "v1", "train_samples": 800, "eval_samples": 200,
                "train_split": "train", "eval_split": "validation"},
    "training_args": {"num_train_epochs": 3, "max_steps": -1, "optim": "adamw", "learning_rate": 0.001,
                      "weight_decay": 0.05, "lr_scheduler_type": "cosine", "per_device_train_batch_size": 64,
                      "gradient_accumulation_steps": 1, "seed": 7, "mixed_precision": "no", "max_grad_norm": 1.0,
                      "hub_model_id": "acme/resnet10t-kd", "hub_token": TOKEN},
    "augmentation": {"scale": [0.08, 1.0], "ratio": [0.75, 1.33], "hflip": 0.5, "color_jitter": 0.4},
    "metrics": {"eval_accuracy": 0.915, "eval_top5_accuracy": 0.999},
    "train_runtime_seconds": 123.4, "train_samples_per_second": 19.4, "global_step": 39, "num_processes": 1,
    "hardware": {"device": "cpu", "cpu_count": 2},
    "versions": {"hfkd": "0.1.0", "timm": "1.0.31"},
}


def _card(lineage=LINEAGE, **kwargs):
    text = str(create_model_card(lineage, **kwargs))
    return text, ModelCard(text)  # parses exactly as ModelCard.load would


def test_metadata():
    text, card = _card()
    data = card.data
    assert data.library_name == "timm" and data.pipeline_tag == "image-classification"
    assert data.license is None and "\n## License\n\nnot set." in text  # hfkd never picks a license for you
    for tag in ("knowledge-distillation", "kd", "hfkd", "image-classification", "timm", "transformers"):
        assert tag in data.tags
    assert data.datasets == ["acme/pets"] and data.metrics == ["accuracy"]
    assert data.base_model == "timm/resnet10t.c3_in1k"  # the initial checkpoint, never the teacher
    results = {r.metric_type: r for r in data.eval_results}
    assert results["accuracy"].metric_value == pytest.approx(0.915)
    assert results["top_5_accuracy"].metric_value == pytest.approx(0.999)
    assert results["accuracy"].dataset_type == "acme/pets" and results["accuracy"].dataset_split == "validation"
    assert results["accuracy"].dataset_revision == "v1"
    assert data.model_name == "resnet10t-kd"
    assert TOKEN not in text and "hub_token" not in text


def test_body():
    text, _ = _card(baseline={"eval_accuracy": 0.88, "eval_top5_accuracy": 0.99})
    assert "[timm/resnet50.a1_in1k](https://huggingface.co/timm/resnet50.a1_in1k) (revision `abc123`)" in text
    assert "`convnext` (local checkpoint)" in text and "/home/me" not in text
    assert "| 93.10 |" in text  # teacher accuracy in percent
    assert "| student without distillation (baseline) | 88.00 | 99.00 |" in text
    assert "| **this model** | student, kd | 91.50 | 99.90 | 4.90M | 812 |" in text
    assert "`temperature`: 4.0" in text and "`alpha`: 0.9" in text
    assert "https://arxiv.org/abs/1503.02531" in text and "@article{hinton2015distilling" in text
    assert 'timm.create_model("hf-hub:acme/resnet10t-kd"' in text  # the run's hub_model_id
    assert 'pipeline("image-classification", model="acme/resnet10t-kd")' in text
    assert 'hfkd.from_pretrained("acme/resnet10t-kd")' in text
    assert "crop_pct=0.875" in text and "Wall time:** 123.4 s" in text and "176x176" in text
    assert "![Training curves]" not in text  # no plot was given


def test_card_options():
    text, card = _card(repo_id="me/other", license="mit", plot_filename="training_curves.png",
                       extra_sections={"Intended use": "Pets only."})
    assert card.data.license == "mit" and 'hf-hub:me/other"' in text
    assert "![Training curves](training_curves.png)" in text and "## Intended use\n\nPets only." in text


def test_transformers_student_without_hub_dataset():
    lineage = copy.deepcopy(LINEAGE)
    lineage["student"].update(library="transformers", pretrained=False, hub_id=None)
    lineage["dataset"]["id"] = "hfkd/digits"  # the embedded dataset is not a Hub repository
    lineage["baseline"] = {"eval_accuracy": 0.5}
    text, card = _card(lineage)
    assert card.data.library_name == "transformers"
    assert "timm" not in card.data.tags and "transformers" in card.data.tags
    assert card.data.datasets is None and card.data.base_model is None
    assert "timm.create_model" not in text and "random (trained from scratch)" in text
    assert "| 50.00 |" in text  # the baseline stored in the lineage is used


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")  # the optional `plot` extra
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_accuracy": 0.8}]
    path = tmp_path / "curves.png"
    assert plot_training_curves(history, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_training_curves([{"step": 1, "eval_loss": 1.0}], str(tmp_path / "none.png"))
    assert not plot_training_curves([{"step": 8, "eval_accuracy": 0.5}], str(tmp_path / "one.png"))


def test_plot_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert not plot_training_curves([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_supervised_run_is_not_called_distillation():
    lineage = copy.deepcopy(LINEAGE)
    lineage.update(method={"name": "supervised", "hparams": {}, "citation": ""}, teachers=[], ensemble_metrics={})
    text, card = _card(lineage)
    assert "knowledge-distillation" not in card.data.tags
    assert "plain cross-entropy (no distillation)" in text and "## Citation" not in text
    assert "Generated by hfkd" in text  # the marker that lets a push re-render it (never a hand-written card)
