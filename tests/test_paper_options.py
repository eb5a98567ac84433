"""The papers' training details: CIFAR crops, PCA lighting, weight decay on all parameters, pycls warm-up, SyncBN."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hfkd.data.transforms import (IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, AugmentConfig, ImageClassificationDataset,
                                  PCALighting, create_image_transform, seeded_rng)
from hfkd.models.preprocess import PreprocessConfig
from hfkd.training.args import DistillationArguments
from hfkd.training.optim import create_optimizer, create_scheduler
from hfkd.training.syncbn import apply_sync_batchnorm

IDENTITY_NORM = PreprocessConfig(input_size=(3, 32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0)


def _numbered_image(size=32) -> Image.Image:
    """Every pixel distinct and non-zero in channel 0, so a crop's position can be read off its values."""
    v = np.arange(1, size * size + 1, dtype=np.int64).reshape(size, size)
    rgb = np.stack([v % 251 + 1, v // 251 + 1, np.full_like(v, 7)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def _locate(out: torch.Tensor, image: Image.Image, pad: int = 4):
    """(dy, dx, flipped) such that ``out`` is the zero-padded image's window at (dy, dx), maybe mirrored."""
    padded = torch.nn.functional.pad(torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255, (pad,) * 4)
    for flipped in (False, True):
        target = out.flip(-1) if flipped else out
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if torch.allclose(padded[:, dy:dy + 32, dx:dx + 32], target, atol=1e-6):
                    return dy, dx, flipped
    return None


def test_cifar_preset_is_a_padded_crop_and_a_flip():
    image = _numbered_image()
    transform = create_image_transform(IDENTITY_NORM, True, AugmentConfig(preset="cifar", color_jitter=None))
    seen = []
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(image)
        assert out.shape == (3, 32, 32)
        where = _locate(out, image)
        assert where is not None, f"seed {seed}: the output is not a window of the 4-pixel zero-padded image"
        seen.append(where)
    assert {f for _, _, f in seen} == {False, True}  # both flipped and unflipped draws
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10  # the offset varies over the 9 x 9 positions


def test_cifar_preset_without_flip_and_with_reflect_padding():
    image = _numbered_image()
    transform = create_image_transform(IDENTITY_NORM, True, AugmentConfig(
        preset="cifar", hflip=0.0, color_jitter=None, padding_mode="reflect"))
    for seed in range(10):
        torch.manual_seed(seed)
        out = transform(image)
        assert out.min() > 0  # reflection, no zero padding
        assert _locate(out, image) is None or _locate(out, image)[2] is False


def test_cifar_preset_normalises_with_the_model_statistics():
    pre = PreprocessConfig(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0)
    image = _numbered_image()
    a = AugmentConfig(preset="cifar", color_jitter=None)
    torch.manual_seed(3)
    raw = create_image_transform(IDENTITY_NORM, True, a)(image)
    torch.manual_seed(3)
    assert torch.allclose(create_image_transform(pre, True, a)(image), (raw - 0.5) / 0.25, atol=1e-6)


def test_cifar_preset_is_seeded_per_sample():
    from datasets import Dataset

    images = [_numbered_image() for _ in range(4)]
    ds = Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]})
    transform = create_image_transform(IDENTITY_NORM, True, AugmentConfig(preset="cifar", color_jitter=None))
    a = ImageClassificationDataset(ds, transform, "image", "label", seed=5)
    b = ImageClassificationDataset(ds, transform, "image", "label", seed=5)
    torch.manual_seed(123)  # the global generator must not matter
    first = [a[i]["pixel_values"] for i in range(4)]
    assert all(torch.equal(x, b[i]["pixel_values"]) for i, x in enumerate(first))
    b.set_epoch(1)
    assert any(not torch.equal(x, b[i]["pixel_values"]) for i, x in enumerate(first))


def test_pca_lighting_by_hand():
    img = torch.rand(3, 4, 5)
    torch.manual_seed(0)
    out = PCALighting(0.1)(img)
    torch.manual_seed(0)
    alpha = (torch.randn(3) * 0.1).tolist()
    for c in range(3):
        shift = sum(IMAGENET_PCA_EIGVEC[c][j] * alpha[j] * IMAGENET_PCA_EIGVAL[j] for j in range(3))
        assert torch.allclose(out[c], img[c] + shift, atol=1e-6)
    assert torch.equal(PCALighting(0.0)(img), img)


def test_pca_lighting_goes_before_normalisation_in_both_presets():
    from torchvision import transforms

    for preset in ("timm", "cifar"):
        kw = {} if preset == "timm" else {"color_jitter": None}
        t = create_image_transform(IDENTITY_NORM, True, AugmentConfig(preset=preset, pca_lighting=0.1, **kw))
        kinds = [type(s) for s in t.transforms]
        assert kinds.index(PCALighting) + 1 == kinds.index(transforms.Normalize)
    eval_t = create_image_transform(IDENTITY_NORM, False, AugmentConfig(pca_lighting=0.1))
    assert PCALighting not in [type(s) for s in eval_t.transforms]


def test_default_augmentation_is_timms_unchanged():
    from timm.data import create_transform

    ours = create_image_transform(IDENTITY_NORM, True, AugmentConfig())
    theirs = create_transform(input_size=(3, 32, 32), is_training=True, interpolation="bicubic", mean=(0.0,) * 3,
                              std=(1.0,) * 3, crop_pct=1.0, crop_mode="center", scale=(0.08, 1.0),
                              ratio=(3 / 4, 4 / 3), hflip=0.5, color_jitter=0.4, auto_augment=None, re_prob=0.0)
    image = _numbered_image()
    for seed in range(3):
        with seeded_rng(seed):  # timm's crop draws from Python's random, the jitter from torch
            a = ours(image)
        with seeded_rng(seed):
            assert torch.equal(a, theirs(image))


def test_bad_augmentation_is_a_clear_error():
    with pytest.raises(ValueError, match="preset must be one of"):
        AugmentConfig(preset="imagenet")
    with pytest.raises(ValueError, match="no auto_augment"):
        AugmentConfig(preset="cifar", auto_augment="rand-m9-mstd0.5")
    with pytest.raises(ValueError, match="padding_mode"):
        AugmentConfig(preset="cifar", padding_mode="wrap")


# -- weight decay ------------------------------------------------------------------------------------------
def _decays(optimizer):
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("all_params", [False, True])
def test_weight_decay_reaches_exactly_the_parameters_the_option_says(tmp_path, all_params):
    import timm

    model = timm.create_model("cifar_resnet20", num_classes=10)
    extra = torch.nn.Parameter(torch.ones(3))
    args = DistillationArguments(output_dir=str(tmp_path), optim="momentum", learning_rate=0.1, weight_decay=5e-4,
                                 weight_decay_norm_and_bias=all_params)
    decays = _decays(create_optimizer(args, model, [{"params": [extra]}]))
    for name, p in model.named_parameters():
        vector = p.ndim <= 1  # biases and BatchNorm weights
        assert decays[id(p)] == (5e-4 if all_params or not vector else 0.0), name
    assert decays[id(extra)] == 5e-4  # the method's own groups take the optimiser's decay
    assert len(decays) == sum(1 for _ in model.parameters()) + 1


def test_weight_decay_on_norms_moves_them_in_a_step(tmp_path):
    import timm

    model = timm.create_model("cifar_resnet20", num_classes=10)
    bn = model.stem[1].weight
    for all_params in (False, True):
        args = DistillationArguments(output_dir=str(tmp_path), optim="momentum", learning_rate=0.1,
                                     weight_decay=0.5, weight_decay_norm_and_bias=all_params)
        opt = create_optimizer(args, model, [])
        before = bn.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        expected = before * (1 - 0.1 * 0.5) if all_params else before
        assert torch.allclose(bn.detach(), expected)


# -- schedules ---------------------------------------------------------------------------------------------
def _lrs(args, steps, steps_per_epoch):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=args.learning_rate)
    sched = create_scheduler(args, opt, steps, steps_per_epoch)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_bake_imagenet_warmup_per_epoch_by_hand(tmp_path):
    # BAKE-R-50: lr 0.4, cosine over 100 epochs, 5 warm-up epochs from 0.1 x lr, the lr set once per epoch.
    args = DistillationArguments(output_dir=str(tmp_path), learning_rate=0.4, lr_scheduler_type="cosine",
                                 warmup_epochs=5, warmup_start_factor=0.1, lr_step_per_epoch=True)
    lrs = _lrs(args, 100 * 3, 3)
    by_hand = {0: 0.4 * 1.0 * 0.1,
               1: 0.4 * 0.5 * (1 + math.cos(math.pi * 1 / 100)) * (0.1 * 0.8 + 0.2),
               4: 0.4 * 0.5 * (1 + math.cos(math.pi * 4 / 100)) * (0.1 * 0.2 + 0.8),
               5: 0.4 * 0.5 * (1 + math.cos(math.pi * 5 / 100)),
               99: 0.4 * 0.5 * (1 + math.cos(math.pi * 99 / 100))}
    for epoch, lr in by_hand.items():
        assert lrs[3 * epoch:3 * epoch + 3] == pytest.approx([lr] * 3, rel=1e-9), epoch


def test_per_step_warmup_from_a_factor(tmp_path):
    args = DistillationArguments(output_dir=str(tmp_path), learning_rate=1.0, lr_scheduler_type="constant",
                                 warmup_epochs=1, warmup_start_factor=0.1)
    assert _lrs(args, 8, 4) == pytest.approx([0.1, 0.1 * 0.75 + 0.25, 0.1 * 0.5 + 0.5, 0.1 * 0.25 + 0.75, 1, 1, 1, 1])


def test_bake_cifar_multistep_one_epoch_late(tmp_path):
    args = DistillationArguments(output_dir=str(tmp_path), learning_rate=0.1, lr_scheduler_type="multistep",
                                 lr_milestones=[101, 151], lr_step_per_epoch=True)
    lrs = _lrs(args, 200 * 2, 2)
    assert lrs[2 * 100] == pytest.approx(0.1) and lrs[2 * 101] == pytest.approx(0.01)
    assert lrs[2 * 150] == pytest.approx(0.01) and lrs[2 * 151] == pytest.approx(0.001)


def test_default_schedules_are_transformers_unchanged(tmp_path):
    from transformers import get_scheduler

    args = DistillationArguments(output_dir=str(tmp_path), learning_rate=0.1, lr_scheduler_type="cosine",
                                 warmup_steps=3)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    ref = get_scheduler("cosine", opt, num_warmup_steps=3, num_training_steps=20)
    expected = []
    for _ in range(20):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert _lrs(args, 20, 5) == expected


def test_epoch_schedule_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="warmup_start_factor needs warmup_epochs"):
        DistillationArguments(output_dir=str(tmp_path), warmup_start_factor=0.1)
    with pytest.raises(ValueError, match="give the warm-up as warmup_epochs"):
        DistillationArguments(output_dir=str(tmp_path), warmup_epochs=5, warmup_ratio=0.05)
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        DistillationArguments(output_dir=str(tmp_path), lr_step_per_epoch=True, lr_scheduler_type="polynomial")


# -- SyncBatchNorm -----------------------------------------------------------------------------------------
def _bn_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())


def test_sync_batchnorm_converts_for_several_gpu_processes():
    model = _bn_model()
    params = list(model.parameters())
    out = apply_sync_batchnorm(model, SimpleNamespace(num_processes=2, device=torch.device("cuda")), True)
    assert isinstance(out[1], torch.nn.SyncBatchNorm)
    assert list(out.parameters()) == params and set(out.state_dict()) == set(_bn_model().state_dict())


def test_sync_batchnorm_is_refused_on_cpu_processes_and_skipped_alone():
    with pytest.raises(ValueError, match="sync_batchnorm needs GPU processes"):
        apply_sync_batchnorm(_bn_model(), SimpleNamespace(num_processes=2, device=torch.device("cpu")), True)
    alone = apply_sync_batchnorm(_bn_model(), SimpleNamespace(num_processes=1, device=torch.device("cpu")), True)
    assert type(alone[1]) is torch.nn.BatchNorm2d
    off = apply_sync_batchnorm(_bn_model(), SimpleNamespace(num_processes=2, device=torch.device("cpu")), False)
    assert type(off[1]) is torch.nn.BatchNorm2d
