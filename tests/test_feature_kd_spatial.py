"""feature_kd with match='tokens' / 'both': the student's last feature map, per position, to a teacher's patch grid."""
import pytest
import torch
import torch.nn.functional as F

from conftest import run_args
from hfkd import DistillationTrainer, create_backbone, create_method
from hfkd.methods import MethodContext
from hfkd.models import PreprocessConfig, adapt_batch, create_teacher
from hfkd.models.backbone import HeadlessTransformersBackbone, prefix_tokens


def _setup(method, student, teacher):
    method.setup(MethodContext(num_classes=10, num_train_samples=8, num_epochs=1, steps_per_epoch=1,
                               student=student, teachers=[teacher]))
    return method


def _dinov2_with_registers():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(2)
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=8, num_register_tokens=4)).eval()
    return HeadlessTransformersBackbone(model, PreprocessConfig(input_size=(3, 32, 32)), 0)


def test_tokens_loss_by_hand_cnn_student_to_a_dinov2_grid_with_registers():
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=64)  # a 2x2 map
    backbone = _dinov2_with_registers()  # 1 class + 4 register tokens, then a 4x4 grid of patches
    assert prefix_tokens(backbone) == 5
    teacher = create_teacher(backbone, student.preprocess)
    method = _setup(create_method("feature_kd", match="tokens", projector="linear"), student, teacher)
    assert len(method.projectors) == 0 and len(method.spatial_projectors) == 1
    projector = method.spatial_projectors[0]
    assert (projector.in_features, projector.out_features) == (96, 32)

    x = torch.randn(3, 3, 64, 64)
    s = student(x, method.student_request)
    with torch.no_grad():
        t = teacher(x, method.teacher_request)
    out = method.compute_loss({"pixel_values": x}, s, [t])

    student_map = student.model.forward_features(x)  # [3, 96, 2, 2]
    with torch.no_grad():
        # the teacher's own input: resized to 32 px and renormalised to its mean and std
        tokens = backbone.model(pixel_values=adapt_batch(x, student.preprocess, backbone.preprocess)).last_hidden_state
    patches = tokens[:, 5:]  # the class and register tokens are not on the grid
    assert patches.shape == (3, 16, 32)
    resized = F.interpolate(student_map, size=(4, 4), mode="bilinear", align_corners=False)  # to the teacher's grid
    projected = projector(resized.flatten(2).transpose(1, 2))  # [3, 16, 32]: per position
    expected = (1 - F.cosine_similarity(projected, patches, dim=-1)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-4, atol=1e-5)
    assert set(out.logs) == {"feature", "spatial_0"}


def test_both_adds_the_pooled_and_the_spatial_terms_vit_student_to_a_cnn_teacher():
    import timm

    torch.manual_seed(0)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)  # 1 class token, 2x2
    backbone = create_backbone(timm.create_model("test_resnet", num_classes=0))  # 160 px: a 5x5 map of 96
    teacher = create_teacher(backbone, student.preprocess)
    method = _setup(create_method("feature_kd", match="both", distance="mse", feature_weight=0.5), student, teacher)
    x = torch.randn(2, 3, 32, 32)
    s = student(x, method.student_request)
    with torch.no_grad():
        t = teacher(x, method.teacher_request)
    out = method.compute_loss({"pixel_values": x}, s, [t])

    tokens = student.model.forward_features(x)[:, 1:]  # without the class token: [2, 4, 64]
    grid = tokens.transpose(1, 2).reshape(2, 64, 2, 2)
    with torch.no_grad():
        teacher_map = backbone.model.forward_features(adapt_batch(x, student.preprocess, backbone.preprocess))
    resized = F.interpolate(grid, size=teacher_map.shape[-2:], mode="bilinear", align_corners=False)
    spatial = F.mse_loss(method.spatial_projectors[0](resized.flatten(2).transpose(1, 2)),
                         teacher_map.flatten(2).transpose(1, 2))
    pooled = F.mse_loss(method.projectors[0](s.pooled), t.pooled)
    torch.testing.assert_close(out.loss, 0.5 * (pooled + spatial), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logs["spatial_0"], spatial, rtol=1e-4, atol=1e-5)


def test_tokens_that_form_no_grid_are_refused_at_setup():
    from hfkd.methods.feature_kd import token_grid

    with pytest.raises(ValueError, match="7 tokens .*1 class/register tokens.*do not form a grid of a 32x32 image"):
        token_grid(torch.zeros(1, 8, 4), 1, (32, 32))
    assert token_grid(torch.zeros(1, 1 + 2 * 4, 4), 1, (16, 32)).shape == (1, 4, 2, 4)  # the image's aspect


@pytest.mark.slow
def test_a_tokens_run_trains_and_checkpoints_the_spatial_projector(small_digits, tmp_path):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=64)
    method = create_method("feature_kd", match="tokens")
    trainer = DistillationTrainer(student, [_dinov2_with_registers()], method,
                                  run_args(tmp_path, max_steps=2, use_cpu=True, per_device_train_batch_size=8),
                                  train_dataset=small_digits.train.select(range(16)))
    before = {k: v.clone() for k, v in method.state_dict().items()} if len(method.spatial_projectors) else None
    trainer.train()
    assert before is None  # the projectors are made at setup, when training starts
    state = method.state_dict()
    assert any(k.startswith("spatial_projectors") for k in state)  # checkpointed with the method
    assert "spatial_0" in trainer.state.log_history[0]
    assert all("projector" not in k for k in trainer.student.state_dict())


@pytest.mark.slow
def test_two_processes_match_pooled_features_and_the_patch_grid(tmp_path):
    import os

    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    script = os.path.join(os.path.dirname(__file__), "scripts", "feature_kd_tokens_ddp.py")
    run_two_processes(script, str(tmp_path))
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0["num_processes"].item() == 2 and r0["steps"].item() == 6  # 96 images / (2 x 16) x 2 epochs
    trained = [k for k in r0 if k.startswith(("student.", "method."))]
    assert any(k.startswith("method.spatial_projectors") for k in trained)
    assert any(k.startswith("method.projectors") for k in trained)
    for k in trained:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
    assert any(not torch.equal(r0[k], r0[f"initial.{k}"]) for k in trained if k.startswith("student."))
