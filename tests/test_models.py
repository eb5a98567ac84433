"""Backbones, preprocessing and teachers."""
import pytest
import torch

from hfkd.models import OutputRequest, PreprocessConfig, Teacher, adapt_batch, create_backbone, create_teacher


def test_timm_backbone_outputs():
    b = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    assert b.library == "timm" and b.preprocess.image_size == (32, 32)
    out = b(torch.randn(2, 3, 32, 32), OutputRequest(pooled=True, feature_stages=("last", 1)))
    assert out.logits.shape == (2, 10)
    assert out.pooled.shape == (2, b.model.num_features)
    # the pooled features are exactly what the classifier sees
    assert torch.allclose(b.model.get_classifier()(out.pooled), out.logits, atol=1e-5)
    assert out.feature_maps["last"].dim() == 4 and 1 in out.feature_maps


def test_transformers_backbone_outputs():
    from transformers import ResNetConfig

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4,
                       id2label={i: c for i, c in enumerate("abcd")}, label2id={c: i for i, c in enumerate("abcd")})
    b = create_backbone(cfg)
    assert b.library == "transformers" and b.label_names == list("abcd")
    out = b(torch.randn(3, 3, 64, 64), OutputRequest(pooled=True, feature_stages=("last",)))
    assert out.logits.shape == (3, 4) and out.pooled.shape == (3, 16)
    assert torch.allclose(b.model.classifier[1](out.pooled), out.logits, atol=1e-5)
    assert out.feature_maps["last"].shape[1] == 16


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        create_backbone("not_a_model_anywhere", pretrained=False)


def test_adapt_batch_renormalises_and_resizes():
    src = PreprocessConfig(input_size=(3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    dst = PreprocessConfig(input_size=(3, 8, 8), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    raw = torch.rand(2, 3, 8, 8)
    x = (raw - 0.5) / 0.5
    expected = (raw - torch.tensor(dst.mean).view(1, 3, 1, 1)) / torch.tensor(dst.std).view(1, 3, 1, 1)
    assert torch.allclose(adapt_batch(x, src, dst), expected, atol=1e-5)
    assert adapt_batch(x, src, src) is x  # same preprocessing: untouched
    big = dst.with_image_size(16)
    assert adapt_batch(x, src, big).shape == (2, 3, 16, 16)
    # a constant image stays constant (in the target's normalisation) through the resize
    flat = torch.full((1, 3, 8, 8), 0.25)
    out = adapt_batch((flat - 0.5) / 0.5, src, big)
    assert torch.allclose(out, ((0.25 - torch.tensor(dst.mean)) / torch.tensor(dst.std)).view(1, 3, 1, 1).expand_as(out),
                          atol=1e-4)


def test_teacher_gets_its_own_input():
    """A teacher with other mean/std and input size receives exactly its preprocessing of the image."""
    student_pre = PreprocessConfig(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    backbone = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=48)
    backbone.preprocess = PreprocessConfig(input_size=(3, 48, 48), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1),
                                           interpolation="bilinear")
    seen = []
    backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    teacher = Teacher(backbone, student_pre)
    raw = torch.rand(2, 3, 32, 32)
    teacher((raw - 0.5) / 0.5)
    resized = torch.nn.functional.interpolate(raw, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    expected = (resized - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.3, 0.2, 0.1]).view(1, 3, 1, 1)
    assert seen[0].shape == (2, 3, 48, 48)
    assert torch.allclose(seen[0], expected, atol=1e-4)


def test_teacher_frozen_and_always_eval():
    t = create_teacher(create_backbone("test_resnet", num_classes=10, pretrained=False))
    assert not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training and not t.backbone.model.training
    out = t(torch.randn(2, 3, 160, 160))
    assert not out.logits.is_inference()  # usable in losses that save tensors for backward
    (out.logits * torch.ones_like(out.logits, requires_grad=True)).sum().backward()


def test_teacher_class_mismatch_is_rejected():
    with pytest.raises(ValueError, match="predicts 5 classes but the student predicts 10"):
        create_teacher(create_backbone("test_resnet", num_classes=5, pretrained=False), num_classes=10)


def test_teacher_label_names_checked_and_aligned():
    names = [str(i) for i in range(4)]
    b = create_backbone("test_resnet", num_classes=4, pretrained=False, label_names=["3", "2", "1", "0"])
    with pytest.raises(ValueError, match="align_labels_by_name"):
        create_teacher(b, num_classes=4, label_names=names)
    t = create_teacher(b, num_classes=4, label_names=names, align_labels_by_name=True)
    x = torch.randn(1, 3, 160, 160)
    raw = b(x).logits
    assert torch.allclose(t(x).logits, raw.flip(-1))
    # an explicit mapping by names
    other = create_backbone("test_resnet", num_classes=2, pretrained=False, label_names=["cat", "dog"])
    t2 = create_teacher(other, num_classes=2, label_names=["dog", "cat"], label_mapping={"cat": "cat", "dog": "dog"})
    assert t2.permutation.tolist() == [1, 0]
