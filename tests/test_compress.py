"""hfkd.compress: structured pruning, pruned save/load, ONNX export, int8 quantization, the end-to-end pipeline."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning", reason="the compress extra is part of the test extra")

from hfkd import create_backbone  # noqa: E402
from hfkd.compress import CompressionError, PruningConfig, count_macs_params, prune_backbone  # noqa: E402
from hfkd.compress.export import EXPORT_ATOL, check_export, export_onnx, onnx_predict, quantize_onnx  # noqa: E402
from hfkd.models.preprocess import PreprocessConfig  # noqa: E402


def _timm(name, size=32):
    torch.manual_seed(0)
    return create_backbone(name, num_classes=10, pretrained=False, image_size=size).eval()


def _vit():
    from transformers import ViTConfig

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, num_labels=10)
    student = create_backbone(config).eval()
    student.preprocess = student.preprocess.with_image_size(32)
    return student


def _state(backbone):
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def _assert_untouched(backbone, state):
    now = backbone.state_dict()
    assert now.keys() == state.keys()
    assert all(now[k].shape == state[k].shape and torch.equal(now[k], state[k]) for k in state)


@pytest.mark.parametrize("make", [lambda: _timm("test_resnet"), lambda: _timm("test_efficientnet"),
                                  lambda: _timm("test_convnext"), _vit,
                                  # the demo networks: parameter-free (zero-padded) and pre-activation shortcuts
                                  lambda: _timm("cifar_resnet8"), lambda: _timm("cifar_wrn16_2")],
                         ids=["resnet", "efficientnet", "convnext", "vit", "cifar_resnet8", "cifar_wrn16_2"])
def test_pruning_removes_channels_and_keeps_output_shape(make):
    student = make()
    state = _state(student)
    macs, params = count_macs_params(student)
    pruned, report = prune_backbone(student, target_ratio=0.5, search_steps=3)
    new_macs, new_params = count_macs_params(pruned)
    assert new_macs <= 0.5 * macs and new_params < params  # removed, not masked: the tensors are smaller
    assert (report["macs_before"], report["macs_after"]) == (macs, new_macs)
    x = torch.randn(3, *student.preprocess.input_size)
    with torch.no_grad():
        assert pruned(x).logits.shape == student(x).logits.shape == (3, 10)
    _assert_untouched(student, state)


def test_vit_loses_whole_heads_and_head_counts_follow():
    pruned, _ = prune_backbone(_vit(), target_ratio=0.5, search_steps=3)
    for layer in pruned.model.vit.layers:
        att = layer.attention
        assert att.num_attention_heads < 4 and att.q_proj.out_features == att.num_attention_heads * att.head_dim


def test_global_params_target_and_taylor_criterion():
    student = _timm("test_resnet")
    batch = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    _, params = count_macs_params(student)
    pruned, report = prune_backbone(student, PruningConfig(target="params", target_ratio=0.6, criterion="taylor",
                                                           search_steps=3), calibration_batch=batch)
    assert count_macs_params(pruned)[1] <= 0.6 * params and report["settings"]["criterion"] == "taylor"
    pruned, report = prune_backbone(student, target="params", target_ratio=0.6, criterion="l1", global_pruning=True,
                                    search_steps=3)
    assert count_macs_params(pruned)[1] <= 0.6 * params and report["settings"]["global_pruning"]
    with pytest.raises(ValueError, match="taylor criterion needs calibration_batch"):
        prune_backbone(student, criterion="taylor")


@pytest.mark.parametrize("kwargs, message", [({"target_ratio": 1.5}, "target_ratio"), ({"criterion": "l3"}, "criterion"),
                                             ({"target": "flops"}, "target")])
def test_bad_pruning_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruningConfig(**kwargs)


class _HardCodedShuffle(nn.Module):
    """Channel shuffle written for exactly 16 channels: its shapes hide a width torch-pruning cannot see."""

    def forward(self, x):
        b, _, h, w = x.shape
        return x.reshape(b, 2, 8, h, w).transpose(1, 2).reshape(b, 16, h, w)


class _Net(nn.Module):
    def __init__(self, shuffle=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.shuffle = _HardCodedShuffle() if shuffle else nn.Identity()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.num_classes = 10

    def forward(self, x):
        x = self.conv2(self.shuffle(torch.relu(self.conv(x))))
        if x.sum() > 0:  # data-dependent Python control flow: no static graph to export
            x = x * 2
        return self.fc(x.mean((2, 3)))


def _plain(net):
    torch.manual_seed(0)
    return create_backbone(net, preprocess=PreprocessConfig(input_size=(3, 16, 16))).eval()


def test_unprunable_model_names_the_layer_and_is_left_untouched():
    student = _plain(_Net())
    state = _state(student)
    with pytest.raises(CompressionError, match=r"broke layer 'shuffle' \(_HardCodedShuffle\).*ignored_layers"):
        prune_backbone(student, target_ratio=0.5, search_steps=2)
    _assert_untouched(student, state)


def test_unexportable_model_fails_clearly_writes_nothing_and_is_left_untouched(tmp_path):
    student = _plain(_Net(shuffle=False))
    state = _state(student)
    path = tmp_path / "model.onnx"
    with pytest.raises(CompressionError, match="cannot export .* to ONNX"):
        export_onnx(student, str(path))
    assert not path.exists() and not student.training
    _assert_untouched(student, state)


def test_quantizing_without_calibration_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="calibration needs training images"):
        quantize_onnx(str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), np.zeros((0, 3, 8, 8), np.float32))


@pytest.mark.parametrize("make", [lambda: _timm("test_efficientnet"), _vit], ids=["timm", "transformers"])
def test_pruned_student_round_trips_through_from_pretrained(make, tmp_path):
    import hfkd
    from hfkd.compress import save_compressed

    pruned, report = prune_backbone(make(), target_ratio=0.5, search_steps=2)
    summary = {"pruning": report, "rows": [], "pruning_file": "pruning.json", "library": pruned.library,
               "input_size": list(pruned.preprocess.input_size), "latency": {"rounds": 1, "threads": 1}}
    folder = save_compressed(pruned, str(tmp_path / "student"), summary, {"model.onnx": b"onnx"}, report=report)
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "pruning.json", "hfkd.json", "README.md", "model.onnx"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    loaded = hfkd.from_pretrained(folder)
    x = torch.randn(4, *pruned.preprocess.input_size)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, pruned(x).logits)
    assert loaded.num_parameters() == pruned.num_parameters()
    lineage = json.load(open(os.path.join(folder, "hfkd.json")))
    assert lineage["compression"]["pruning"]["macs_after"] == report["macs_after"]
    card = open(os.path.join(folder, "README.md")).read()
    assert "## Compression" in card and "pruning.json" in card and f"{report['macs_after']:,}" in card


def test_export_matches_pytorch_and_runs_with_onnxruntime_alone(tmp_path):
    student, _ = prune_backbone(_timm("test_efficientnet"), target_ratio=0.5, search_steps=2)
    path = export_onnx(student, str(tmp_path / "model.onnx"))
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    result = check_export(student, path, images)
    assert result["max_abs_diff"] <= EXPORT_ATOL and result["top1_agreement"] == 1.0
    np.save(tmp_path / "x.npy", images)
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              f"s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, s.run(['logits'], {{'pixel_values': np.load({str(tmp_path / 'x.npy')!r})}})[0])\n"
              "assert not any(m.split('.')[0] in ('torch', 'hfkd', 'timm', 'transformers') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-I", "-c", script], check=True, cwd=tmp_path)  # -I: no PYTHONPATH, no hfkd
    with torch.no_grad():
        expected = student(torch.from_numpy(images)).logits.numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - expected).max() <= EXPORT_ATOL


# int8 vs fp32 top-1 on the digits after a short training run: the margin docs/compression.md states.
INT8_TOP1_MARGIN = 0.03


@pytest.mark.slow
def test_int8_keeps_accuracy_of_a_trained_model(digits, tmp_path):
    from hfkd.compress.measure import eval_arrays, top1, torch_predict
    from hfkd.cli.demo import train_demo_model

    trainer = train_demo_model("test_resnet", digits, str(tmp_path / "run"), 1, seed=0, max_steps=60)
    student = trainer.unwrapped_student().eval()
    images, labels = eval_arrays(digits.eval, student.preprocess, digits.image_column, digits.label_column)
    calib, _ = eval_arrays(digits.train, student.preprocess, digits.image_column, digits.label_column, limit=128)
    fp32 = top1(torch_predict(student), images, labels)
    assert fp32 > 0.5  # the model learned something, so the comparison means something
    onnx_path, int8_path = str(tmp_path / "model.onnx"), str(tmp_path / "model.int8.onnx")
    export_onnx(student, onnx_path)
    quantize_onnx(onnx_path, int8_path, calib)
    assert os.path.getsize(int8_path) < 0.5 * os.path.getsize(onnx_path)
    assert top1(onnx_predict(int8_path), images, labels) >= fp32 - INT8_TOP1_MARGIN


@pytest.mark.slow
def test_compress_student_end_to_end_with_kd_recovery(small_digits, tmp_path):
    import hfkd
    from hfkd.compress import CompressionArguments

    student = _timm("test_efficientnet")
    teacher = _timm("test_resnet")
    state = _state(student)
    args = hfkd.DistillationArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=16,
                                      save_strategy="no", eval_strategy="no", logging_steps=1)
    result = hfkd.compress_student(student, small_digits, str(tmp_path / "out"), teachers=[teacher], training_args=args,
                                   pruning=PruningConfig(target_ratio=0.5, search_steps=2),
                                   compression=CompressionArguments(calibration_samples=32, latency_rounds=2))
    _assert_untouched(student, state)
    steps = [r["step"] for r in result.rows]
    assert steps == ["before pruning", "after pruning", "after kd recovery", "exported", "after int8"]
    assert all(r["latency_b1_ms"] > 0 and r["latency_b32_ms"] > 0 and 0 <= r["top1"] <= 1 for r in result.rows)
    assert result.rows[2]["macs"] <= 0.5 * result.rows[0]["macs"]
    assert result.rows[4]["size_bytes"] < result.rows[3]["size_bytes"]
    assert result.compression["recovery"]["teachers"] and result.compression["recovery"]["method"] == "kd"
    loaded = hfkd.from_pretrained(result.folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, result.recovered(x).logits)
    card = open(os.path.join(result.folder, "README.md")).read()
    assert "## Compression" in card and "model.int8.onnx" in card and "after kd recovery" in card
