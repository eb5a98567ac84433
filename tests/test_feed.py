"""FEED: the loss by hand, its invariances, one transform per teacher, layouts, training, DDP."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hfkd import create_backbone, create_method
from hfkd.losses import feed_loss
from hfkd.methods.base import MethodContext
from hfkd.methods.feed import FeatureLayout, NonLinearTransform, infer_layout, match_spatial, to_channels_first
from hfkd.models import Teacher

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "feed_ddp.py")
RECIPES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes")


def _setup(method, student_name="test_efficientnet", teacher_names=("test_resnet", "test_convnext"), size=32,
           teacher_size=None):
    torch.manual_seed(0)
    student = create_backbone(student_name, num_classes=10, pretrained=False, image_size=size)
    teachers = [Teacher(create_backbone(t, num_classes=10, pretrained=False, image_size=teacher_size or size),
                        student.preprocess) for t in teacher_names]
    method.setup(MethodContext(num_classes=10, num_train_samples=8, num_epochs=1, steps_per_epoch=1,
                               student=student, teachers=teachers))
    return student, teachers


def _forward(method, student, teachers, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *student.preprocess.input_size, generator=g)
    batch = {"pixel_values": x, "labels": torch.arange(n) % 10}
    s_out = student(x, method.student_request)
    t_outs = [t(x, method.teacher_request) for t in teachers]
    return batch, s_out, t_outs


# -- the loss ---------------------------------------------------------------------------------------
def test_feed_loss_by_hand():
    # Sample 0: s = (3, 4) -> (0.6, 0.8), t = (1, 0) -> (1, 0): |diff| = (0.4, 0.8).
    # Sample 1: s = (0, 2) -> (0, 1),     t = (5, 0) -> (1, 0): |diff| = (1, 1).
    s = torch.tensor([[3.0, 4.0], [0.0, 2.0]]).view(2, 2, 1, 1)
    t = torch.tensor([[1.0, 0.0], [5.0, 0.0]]).view(2, 2, 1, 1)
    assert feed_loss([s], [t]).item() == pytest.approx((0.4 + 0.8 + 1 + 1) / 4)
    # Two teachers: the terms add, teacher maps are never averaged first.
    same = torch.tensor([[3.0, 4.0], [0.0, 2.0]]).view(2, 2, 1, 1)
    assert feed_loss([s, s], [t, same]).item() == pytest.approx(0.8 + 0.0)
    # Normalisation is over the whole C*H*W of a sample, not per channel: (1, 1 | 1, 1) / 2.
    s4 = torch.ones(1, 2, 1, 2)
    t4 = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 2, 1, 2)
    assert feed_loss([s4], [t4]).item() == pytest.approx((0.5 + 0.5 + 0.5 + 0.5) / 4)


def test_feed_loss_is_invariant_to_positive_per_sample_scaling_but_not_to_shifts():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    a = torch.tensor([0.1, 3.0, 70.0]).view(3, 1, 1, 1)
    b = torch.tensor([5.0, 0.02, 1.0]).view(3, 1, 1, 1)
    ref = feed_loss([s], [t])
    assert torch.allclose(feed_loss([a * s], [t]), ref, atol=1e-6)
    assert torch.allclose(feed_loss([s], [b * t]), ref, atol=1e-6)
    assert not torch.allclose(feed_loss([s + 1.0], [t]), ref, atol=1e-3)
    assert not torch.allclose(feed_loss([-s], [t]), ref, atol=1e-3)  # a negative scale is not allowed for


def test_teacher_maps_get_no_gradient():
    s = torch.randn(2, 3, 2, 2, requires_grad=True)
    t = torch.randn(2, 3, 2, 2, requires_grad=True)
    feed_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_method_loss_is_ce_plus_beta_times_the_sum_over_teachers_by_formula():
    method = create_method("feed", beta=7.0)
    student, teachers = _setup(method)
    batch, s_out, t_outs = _forward(method, student, teachers)
    out = method.compute_loss(batch, s_out, t_outs)
    s_map = s_out.feature_maps["last"]
    expected_feature = 0.0
    for ntl, t in zip(method.transforms, t_outs):
        phi_s = F.normalize(ntl(s_map).flatten(1), dim=1)
        phi_t = F.normalize(t.feature_maps["last"].flatten(1), dim=1)
        expected_feature = expected_feature + (phi_s - phi_t).abs().mean()
    expected = F.cross_entropy(s_out.logits, batch["labels"]) + 7.0 * expected_feature
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["feed"].item() == pytest.approx(expected_feature.item(), rel=1e-5)
    assert set(out.logs) == {"feed", "feed_0", "feed_1", "ce"}


# -- the transforms ---------------------------------------------------------------------------------
def test_one_transform_per_teacher_with_the_teachers_channels():
    method = create_method("feed")
    student, teachers = _setup(method)  # test_efficientnet (256) <- test_resnet (96), test_convnext (64)
    assert len(method.transforms) == 2
    assert [(m.in_channels, m.out_channels) for m in method.transforms] == [(256, 96), (256, 64)]
    first, second = (list(m.parameters()) for m in method.transforms)
    assert not {id(p) for p in first} & {id(p) for p in second}
    assert not {p.data_ptr() for p in first} & {p.data_ptr() for p in second}
    # Factor Transfer's translator: in -> in -> out -> out, each conv followed by LeakyReLU(0.1).
    convs = [m for m in method.transforms[0] if isinstance(m, nn.Conv2d)]
    acts = [m for m in method.transforms[0] if isinstance(m, nn.LeakyReLU)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (256, 256, (3, 3), (1, 1)), (256, 96, (3, 3), (1, 1)), (96, 96, (3, 3), (1, 1))]
    assert len(acts) == 3 and all(a.negative_slope == 0.1 for a in acts)


def test_transforms_are_deterministic_given_the_seed():
    a, b = create_method("feed"), create_method("feed")
    _setup(a), _setup(b)
    for pa, pb in zip(a.transforms.parameters(), b.transforms.parameters()):
        assert torch.equal(pa, pb)


def test_setup_does_not_touch_the_students_batchnorm_statistics():
    method = create_method("feed")
    torch.manual_seed(0)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher = Teacher(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32))
    method.setup(MethodContext(10, 8, 1, 1, student=student, teachers=[teacher]))
    assert student.training
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_transforms_receive_gradients():
    method = create_method("feed")
    student, teachers = _setup(method)
    batch, s_out, t_outs = _forward(method, student, teachers)
    method.compute_loss(batch, s_out, t_outs).loss.backward()
    for name, p in method.transforms.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for t in teachers:
        assert all(p.grad is None for p in t.parameters())


def test_spatial_mismatch_is_resized_to_the_teachers_map():
    # Student at 64 px (2x2 last map), teacher at 128 px (its own preprocessing: 4x4 last map).
    method = create_method("feed")
    student, teachers = _setup(method, teacher_names=("test_resnet",), size=64, teacher_size=128)
    batch, s_out, t_outs = _forward(method, student, teachers, n=2)
    assert s_out.feature_maps["last"].shape[-2:] == (2, 2) and t_outs[0].feature_maps["last"].shape[-2:] == (4, 4)
    out = method.compute_loss(batch, s_out, t_outs)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    resized = method.transformed_student_maps(s_out.feature_maps["last"], [t_outs[0].feature_maps["last"]])
    assert resized[0].shape == t_outs[0].feature_maps["last"].shape
    # Shrinking averages areas: a 4x4 map halves to the means of its 2x2 blocks.
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.allclose(match_spatial(x, (2, 2)), F.avg_pool2d(x, 2))
    assert match_spatial(x, (4, 4)) is x


# -- layouts: tokens, channels-last -----------------------------------------------------------------
def test_layouts_of_tokens_channels_last_and_vectors():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # [CLS] + 2x2 patches, D = 3
    layout = infer_layout(nn.Identity(), tokens, (32, 32))
    assert layout == FeatureLayout("tokens", 3, 1, (2, 2))
    grid = to_channels_first(tokens, layout)
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2])  # patch (row 0, col 1) is token 1 + 1
    declared = nn.Identity()
    declared.num_prefix_tokens = 0  # timm declares its prefix tokens: 4 patch tokens on a 2x2 grid
    assert infer_layout(declared, tokens[:, 1:], (32, 32)).grid == (2, 2)
    nhwc = nn.Identity()
    nhwc.output_fmt = "NHWC"
    m = torch.randn(2, 3, 3, 8)
    assert infer_layout(nhwc, m, (96, 96)) == FeatureLayout("nhwc", 8)
    assert torch.equal(to_channels_first(m, FeatureLayout("nhwc", 8)), m.permute(0, 3, 1, 2))
    assert to_channels_first(torch.ones(2, 7), FeatureLayout("vector", 7)).shape == (2, 7, 1, 1)
    declared.num_prefix_tokens = 1
    with pytest.raises(ValueError, match="patch grid"):  # 23 - 1 tokens are no square grid
        infer_layout(declared, torch.zeros(1, 23, 4), (32, 32))


def _tiny_vit():
    from transformers import ViTConfig

    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=10)


def test_transformers_vit_student_and_teacher_with_cnn_and_timm_vit():
    # ViT student (17 tokens: [CLS] + 4x4) distilled from a timm ViT (2x2 grid) and a CNN (1x1 map).
    method = create_method("feed")
    student, teachers = _setup(method, student_name=_tiny_vit(), teacher_names=("test_vit", "test_resnet"))
    assert method.student_layout == FeatureLayout("tokens", 32, 1, (4, 4))
    assert method.teacher_layouts[0].kind == "tokens" and method.teacher_layouts[0].grid == (2, 2)
    batch, s_out, t_outs = _forward(method, student, teachers)
    out = method.compute_loss(batch, s_out, t_outs)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    # And the other way round: a CNN student, a transformers ViT teacher.
    method = create_method("feed")
    student, teachers = _setup(method, student_name="test_resnet", teacher_names=(_tiny_vit(),))
    assert [(m.in_channels, m.out_channels) for m in method.transforms] == [(96, 32)]
    batch, s_out, t_outs = _forward(method, student, teachers)
    assert torch.isfinite(method.compute_loss(batch, s_out, t_outs).loss)


def test_options_and_errors():
    m = create_method("feed", stage="2", teacher_stage="last", kernel_size=1)
    assert m.stage == 2 and m.teacher_stage == "last"
    assert m.student_request.feature_stages == (2,) and m.teacher_request.feature_stages == ("last",)
    assert m.hparams()["kernel_size"] == 1
    with pytest.raises(ValueError, match="beta"):
        create_method("feed", beta=0)
    with pytest.raises(ValueError, match="kernel_size"):
        create_method("feed", kernel_size=2)
    with pytest.raises(ValueError, match="stage"):
        create_method("feed", stage="penultimate")
    with pytest.raises(ValueError, match="at least 1 teacher"):
        create_method("feed").check_teachers(0)
    with pytest.raises(RuntimeError, match="setup"):
        create_method("feed").transformed_student_maps(torch.zeros(1, 2, 1, 1), [torch.zeros(1, 2, 1, 1)])
    assert NonLinearTransform(4, 6, kernel_size=1)(torch.zeros(1, 4, 3, 3)).shape == (1, 6, 3, 3)
    without_ce = create_method("feed", ce_weight=0.0)
    assert not without_ce.uses_labels


# -- training ---------------------------------------------------------------------------------------
def test_training_updates_transforms_and_saves_only_the_student(small_digits, tmp_path):
    from safetensors import safe_open

    from hfkd import DistillationArguments, DistillationTrainer

    torch.manual_seed(0)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    teachers = [create_backbone(n, num_classes=10, pretrained=False, image_size=32) for n in
                ("test_resnet", "test_convnext")]
    method = create_method("feed", beta=50.0)
    args = DistillationArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=16,
                                 learning_rate=0.01, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                                 eval_teachers=False, logging_steps=1, seed=0)
    trainer = DistillationTrainer(student, teachers=teachers, method=method, args=args,
                                  train_dataset=small_digits.train, eval_dataset=small_digits.eval,
                                  image_column=small_digits.image_column, label_column=small_digits.label_column)
    built = {}
    setup = method.setup
    method.setup = lambda ctx: (setup(ctx), built.update({k: v.clone() for k, v in
                                                          method.transforms.state_dict().items()}))
    trainer.train()
    after = method.transforms.state_dict()
    assert built and all(not torch.equal(built[k], after[k]) for k in built if k.endswith("weight"))
    assert {"feed", "feed_0", "feed_1", "ce"} <= set(trainer.state.log_history[-1])
    out = trainer.save_model(str(tmp_path / "student"))
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    fresh = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32).model
    assert saved == set(fresh.state_dict().keys())
    reloaded = create_backbone(out)
    assert reloaded.num_parameters() == fresh_count(fresh) == student.num_parameters()


def fresh_count(model):
    return sum(p.numel() for p in model.parameters())


def test_sequential_recipe_chains_generations(tmp_path):
    import json

    sys.path.insert(0, RECIPES)
    try:
        import feed as recipe
    finally:
        sys.path.remove(RECIPES)
    out = tmp_path / "run"
    rows = recipe.main(["--student", "test_efficientnet", "--parallel", "false", "--generations", "2",
                        "--max_train_samples", "64", "--max_steps", "2", "--per_device_train_batch_size", "16",
                        "--eval_strategy", "no", "--eval_teachers", "false", "--disable_tqdm", "true",
                        "--output_dir", str(out), "--beta", "50"])
    assert [r["role"] for r in rows] == ["student, no KD (baseline)", "student, sequential FEED gen 1",
                                         "student, sequential FEED gen 2"]
    for g in (1, 2):
        assert os.path.isfile(out / f"generation_{g}" / "student" / "model.safetensors")
    with open(out / "generation_2" / "student" / "hfkd.json") as f:
        lineage = json.dumps(json.load(f))
    assert "generation_1" in lineage and "baseline" not in lineage
    assert (out / "results.md").is_file()


def test_two_processes_keep_student_and_transforms_identical(tmp_path):
    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    run_two_processes(SCRIPT, str(tmp_path))
    r0, r1 = (load_file(str(tmp_path / f"rank{i}.safetensors")) for i in (0, 1))
    assert r0["num_processes"].item() == 2 and r0["steps"].item() == r1["steps"].item() == 6
    keys = [k for k in r0 if k.startswith(("student.", "transforms."))]
    assert any(k.startswith("transforms.") for k in keys)
    for k in keys:
        assert torch.equal(r0[k], r1[k]), k
    # ... and they trained: the transforms and the student moved away from their initial values.
    for prefix in ("student.", "transforms."):
        moved = [k for k in keys if k.startswith(prefix) and k.endswith("weight")
                 and not torch.equal(r0[k], r0["initial." + k])]
        assert moved, prefix
