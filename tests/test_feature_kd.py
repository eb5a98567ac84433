"""feature_kd: pooled student features, projected, matched to a headless teacher's embedding."""
import pytest
import torch
import torch.nn.functional as F

from conftest import run_args
from hfkd import DistillationTrainer, create_backbone, create_method
from hfkd.methods import MethodContext
from hfkd.models import create_teacher


def _models():
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    # a backbone without a classifier (timm's num_classes=0): only its pooled features are read
    import timm

    teacher = create_backbone(timm.create_model("test_vit", num_classes=0, img_size=32))
    assert teacher.num_classes == 0
    return student, teacher


def test_feature_kd_loss_by_hand():
    student, backbone = _models()
    teacher = create_teacher(backbone, student.preprocess)
    method = create_method("feature_kd", projector="linear", feature_weight=2.0)
    method.setup(MethodContext(num_classes=10, num_train_samples=8, num_epochs=1, steps_per_epoch=1,
                               student=student, teachers=[teacher]))
    (projector,) = method.projectors
    assert (projector.in_features, projector.out_features) == (student.model.num_features, backbone.model.num_features)
    x = torch.randn(4, 3, 32, 32)
    s = student(x, method.student_request)
    t = teacher(x, method.teacher_request)
    out = method.compute_loss({}, s, [t])
    expected = 2.0 * (1 - F.cosine_similarity(projector(s.pooled), t.pooled, dim=-1)).mean()
    torch.testing.assert_close(out.loss, expected)
    assert not method.uses_labels and "ce" not in out.logs
    out.loss.backward()  # the projector is trained with the student
    assert projector.weight.grad is not None
    assert not student.model.fc.weight.grad.any()  # the head is in the graph (for DDP) with a zero gradient


def test_mlp_projector_and_mse():
    student, backbone = _models()
    method = create_method("feature_kd", distance="mse")
    method.setup(MethodContext(num_classes=10, num_train_samples=8, num_epochs=1, steps_per_epoch=1,
                               student=student, teachers=[create_teacher(backbone, student.preprocess)]))
    (projector,) = method.projectors
    assert isinstance(projector, torch.nn.Sequential) and projector[-1].out_features == backbone.model.num_features
    with pytest.raises(ValueError, match="distance must be one of"):
        create_method("feature_kd", distance="l3")


def test_feature_kd_without_labels_loss_falls_and_keeps_the_projector_out_of_the_student(small_digits, tmp_path):
    student, teacher = _models()
    method = create_method("feature_kd")
    trainer = DistillationTrainer(student, [teacher], method,
                                  run_args(tmp_path, max_steps=24, use_cpu=True, per_device_train_batch_size=16,
                                           lr_scheduler_type="constant", eval_teachers=True),
                                  train_dataset=small_digits.train, eval_dataset=small_digits.eval)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, losses
    assert trainer.teacher_metrics == {}  # a headless teacher has no accuracy on the student's classes
    assert all(not k.startswith("projectors") for k in trainer.student.state_dict())
    assert any(k.startswith("projectors") for k in method.state_dict())


@pytest.mark.parametrize("method, accepted", [("feature_kd", True), ("kd", False)])
def test_the_command_takes_a_teacher_of_other_classes_for_feature_kd_only(tmp_path, capsys, method, accepted):
    from helpers.models import saved_model
    from hfkd.cli import main as hfkd_main

    teacher = saved_model(tmp_path / "five_classes", num_classes=5)  # not the digits' 10 classes
    argv = ["distill", "--method", method, "--student", "test_resnet", "--max_train_samples", "64",
            "--eval_strategy", "no", "--eval_teachers", "false", "--save_strategy", "no", "--teachers", teacher,
            "--output_dir", str(tmp_path / "never"), "--dry_run"]
    if accepted:
        assert hfkd_main(argv)["problems"] == []
    else:
        with pytest.raises(SystemExit, match="predicts 5 classes but the student predicts 10"):
            hfkd_main(argv)


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    folder = str(tmp_path_factory.mktemp("dinov2"))
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(folder)
    return folder


def test_a_dinov2_folder_is_a_headless_feature_teacher(dinov2_folder, small_digits, tmp_path):
    from transformers import Dinov2Model

    backbone = create_backbone(dinov2_folder)
    assert backbone.num_classes == 0 and backbone.preprocess.image_size == (32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = backbone(x, method_request()).pooled
        expected = Dinov2Model.from_pretrained(dinov2_folder).eval()(pixel_values=x).pooler_output
    torch.testing.assert_close(pooled, expected)  # the class token after DINOv2's final norm, no random head
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    trainer = DistillationTrainer(student, [dinov2_folder], create_method("feature_kd"),
                                  run_args(tmp_path, max_steps=2, use_cpu=True, per_device_train_batch_size=16),
                                  train_dataset=small_digits.train)
    trainer.train()
    assert trainer.method.projectors[0][-1].out_features == 32
    with pytest.raises(ValueError, match="predicts 0 classes"):  # a logit method refuses it
        DistillationTrainer(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32),
                            [dinov2_folder], create_method("kd"), run_args(tmp_path / "kd"),
                            train_dataset=small_digits.train)


def method_request():
    from hfkd.models import OutputRequest

    return OutputRequest(pooled=True)
