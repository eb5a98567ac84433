"""Extracurricular learning: unlabelled extra samples, seeded mixing and exact resume, the loss, 2 processes."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method
from hfkd.data.transforms import AugmentConfig
from hfkd.methods.base import MethodContext
from hfkd.methods.extracurricular import Extracurricular, ExtracurricularConfig, mix_pair
from hfkd.models.backbone import BackboneOutput
from hfkd.tasks import RegressionTask

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "extracurricular_ddp.py")


def _method(seed=0, epoch=0, task=None, **kwargs):
    method = create_method("extracurricular", **kwargs)
    method.context = MethodContext(num_classes=3, num_train_samples=100, num_epochs=2, steps_per_epoch=10,
                                   student=None, task=task, seed=seed)
    method.on_epoch_start(epoch)
    return method


def _batch(n=4, index=None):
    g = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.rand(n, 3, 8, 8, generator=g), "labels": torch.arange(n) % 3,
            "index": torch.as_tensor(index if index is not None else [10 * i + 7 for i in range(n)])}


# -- extra samples ---------------------------------------------------------------------------------

def test_extra_samples_are_appended_without_labels():
    batch = _batch(4)
    out = _method(extra_ratio=1.5).prepare_batch(batch)
    assert out["pixel_values"].shape[0] == 4 + 6  # round(1.5 * 4) extra rows after the real ones
    assert torch.equal(out["pixel_values"][:4], batch["pixel_values"])
    assert torch.equal(out["labels"], batch["labels"])  # one label per REAL sample, none for the extra ones
    assert out["extra_pairs"][:, 0].tolist() == [0, 1, 2, 3, 0, 1]  # anchors: j mod B
    assert all(a != p for a, p in out["extra_pairs"].tolist())  # mixed with another image of the batch
    assert "labels" in batch and batch["pixel_values"].shape[0] == 4  # the loader's batch is not modified


def test_mixup_rows_are_convex_combinations_of_the_recorded_pairs():
    batch = _batch(5)
    out = _method(mix="mixup", extra_ratio=1).prepare_batch(batch)
    x = batch["pixel_values"]
    for j, ((a, p), lam) in enumerate(zip(out["extra_pairs"].tolist(), out["extra_lambda"].tolist())):
        assert 0.0 <= lam <= 1.0
        assert torch.allclose(out["pixel_values"][5 + j], lam * x[a] + (1 - lam) * x[p], atol=1e-6)


def test_cutmix_pastes_a_box_of_area_one_minus_lambda():
    a, b = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    mixed = mix_pair(a, b, lam=0.75, cutmix=True, box_center=(0.5, 0.5))
    assert mixed.mean().item() == pytest.approx(0.25)  # a 4x4 box of the partner in an 8x8 image
    assert torch.equal(mix_pair(a, b, 0.75, False, (0.5, 0.5)), torch.full((3, 8, 8), 0.25))


def test_zero_ratio_leaves_the_batch_alone():
    batch = _batch(4)
    assert _method(extra_ratio=0).prepare_batch(batch) is batch


def test_mixing_is_reproducible_from_seed_epoch_and_index():
    batch = _batch(6)
    first = _method(seed=3, epoch=1).prepare_batch(batch)["pixel_values"]
    again = _method(seed=3, epoch=1).prepare_batch(batch)["pixel_values"]
    assert torch.equal(first, again)
    for other in (_method(seed=4, epoch=1), _method(seed=3, epoch=2)):
        assert not torch.equal(other.prepare_batch(batch)["pixel_values"][6:], first[6:])
    moved = _batch(6, index=[10 * i + 8 for i in range(6)])  # same images, other dataset indices
    assert not torch.equal(_method(seed=3, epoch=1).prepare_batch(moved)["pixel_values"][6:], first[6:])


def test_mixing_leaves_the_global_generators_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _method().prepare_batch(_batch(4))
    assert torch.equal(torch.rand(3), expected)


# -- the loss --------------------------------------------------------------------------------------

def _outputs(n_rows, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_rows, n_classes, generator=g)


def test_hard_label_loss_reads_real_rows_only():
    method = _method(alpha=0.0)  # the hard-label term alone
    student = _outputs(8).requires_grad_()
    batch = {"labels": torch.tensor([0, 1, 2, 0])}  # 4 real rows; rows 4..7 are extra samples
    out = method.compute_loss(batch, BackboneOutput(logits=student), [BackboneOutput(logits=_outputs(8, seed=1))])
    assert out.loss.item() == pytest.approx(F.cross_entropy(student[:4], batch["labels"]).item(), rel=1e-6)
    out.loss.backward()
    assert student.grad[4:].abs().max().item() == 0.0  # no label reaches an extra sample
    assert student.grad[:4].abs().max().item() > 0.0


def test_loss_by_hand_on_real_and_extra_rows():
    method = _method(temperature=2.0, alpha=0.7)
    student, teacher = _outputs(6), _outputs(6, seed=1)
    labels = torch.tensor([2, 0, 1])
    out = method.compute_loss({"labels": labels}, BackboneOutput(logits=student), [BackboneOutput(logits=teacher)])
    p, log_q = F.softmax(teacher / 2, -1), F.log_softmax(student / 2, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean() * 4  # T^2 KL over all 6 rows
    expected = 0.7 * kl + 0.3 * F.cross_entropy(student[:3], labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_extra_samples_it_is_classic_kd():
    student, teacher = _outputs(4), _outputs(4, seed=1)
    batch = {"labels": torch.tensor([0, 1, 2, 0])}
    el = _method(extra_ratio=0, temperature=3.0, alpha=0.6).compute_loss(
        batch, BackboneOutput(logits=student), [BackboneOutput(logits=teacher)])
    kd = create_method("kd", temperature=3.0, alpha=0.6).compute_loss(
        batch, BackboneOutput(logits=student), [BackboneOutput(logits=teacher)])
    assert el.loss.item() == pytest.approx(kd.loss.item(), rel=1e-6)


def test_uncertainty_select_keeps_the_most_uncertain_extra_samples():
    method = _method(uncertainty="select", uncertain_fraction=0.5, alpha=1.0)
    teacher = torch.tensor([[9.0, 0, 0], [0, 9, 0], [5.0, 0, 0], [0.1, 0, 0], [3.0, 0, 0], [0.0, 0, 0]])
    student = _outputs(6).requires_grad_()
    method.compute_loss({"labels": torch.tensor([0, 1])}, BackboneOutput(logits=student),
                        [BackboneOutput(logits=teacher)]).loss.backward()
    zero = [bool(student.grad[i].abs().max() == 0) for i in range(6)]
    # extra rows 2..5 have teacher entropies in the order 2 < 4 < 3 < 5: rows 3 and 5 are kept
    assert zero == [False, False, True, False, True, False]


def test_uncertainty_weight_has_mean_one_on_extra_rows():
    method = _method(uncertainty="weight")
    w = method._row_weights(torch.tensor([5.0, 5.0, 1.0, 2.0, 3.0]), n_real=2)
    assert w[:2].tolist() == [1.0, 1.0]
    assert w[2:].tolist() == pytest.approx([0.5, 1.0, 1.5])


@pytest.mark.parametrize("bad", [dict(extra_ratio=-1), dict(mix="blend"), dict(uncertainty="max"), dict(alpha=1.5),
                                 dict(mix_alpha=0), dict(uncertain_fraction=0), dict(regression_match="l1")])
def test_bad_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ExtracurricularConfig(**bad)


def test_config_object_and_keyword_overrides():
    method = create_method("extracurricular", config=ExtracurricularConfig(temperature=2.0), alpha=1.0)
    assert isinstance(method, Extracurricular)
    assert method.hparams()["temperature"] == 2.0 and method.hparams()["alpha"] == 1.0
    assert not method.uses_labels


def test_regression_gaussian_matching_by_hand():
    task = RegressionTask(num_targets=1)
    method = _method(task=task, alpha=1.0)
    student = torch.tensor([[0.0, 0.0], [1.0, math.log(4.0)]])  # (mean, log-variance) rows
    teacher = torch.tensor([[1.0, 0.0], [1.0, math.log(4.0)]])
    out = method.compute_loss({"labels": torch.zeros(1, 1)}, BackboneOutput(logits=student),
                              [BackboneOutput(logits=teacher)])
    assert out.loss.item() == pytest.approx((0.5 + 0.0) / 2)  # KL(N(1,1)||N(0,1)) = 1/2; identical rows: 0
    point = _method(task=task, alpha=1.0, regression_match="mean").compute_loss(
        {"labels": torch.zeros(1, 1)}, BackboneOutput(logits=student), [BackboneOutput(logits=teacher)])
    assert point.loss.item() == pytest.approx(0.5)  # squared error of the means, (1 + 0) / 2


def test_other_methods_refuse_a_regression_run():
    method = create_method("kd")
    context = MethodContext(num_classes=2, num_train_samples=1, num_epochs=1, steps_per_epoch=1, student=None,
                            teachers=[object()], task=RegressionTask())
    with pytest.raises(ValueError, match="regression"):
        method.setup(context)


# -- training -------------------------------------------------------------------------------------

class RecordingEL(Extracurricular):
    """Keeps every prepared batch's pixels, to compare runs."""

    def prepare_batch(self, batch):
        out = super().prepare_batch(batch)
        self.__dict__.setdefault("seen", []).append(out["pixel_values"].detach().clone())
        return out


def _run(tmp_path, data, name, **kw):
    torch.manual_seed(0)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=32, learning_rate=0.01,
                                 max_steps=10, save_strategy="steps", save_steps=3, save_total_limit=None,
                                 logging_steps=1, disable_tqdm=True, eval_teachers=False, seed=5, **kw)
    trainer = DistillationTrainer(student, [teacher], method=RecordingEL(extra_ratio=0.5), args=args,
                                  train_dataset=data.train,
                                  augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=0.3))
    trainer.train()
    return trainer


@pytest.mark.slow
def test_mid_epoch_resume_is_bitwise_exact_with_mixing(tmp_path, small_digits):
    # 256 samples / 32 = 8 batches per epoch: checkpoint-3 is mid epoch 0, and the run crosses into epoch 1
    full = _run(tmp_path, small_digits, "full")
    resumed = _run(tmp_path, small_digits, "resumed", resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert len(full.method.seen) == 10 and len(resumed.method.seen) == 7
    assert full.method.seen[3].shape[0] == 32 + 16
    for a, b in zip(full.method.seen[3:], resumed.method.seen):
        assert torch.equal(a, b)
    a, b = full.unwrapped_student().state_dict(), resumed.unwrapped_student().state_dict()
    assert not [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def rotated():
    from hfkd.data.rotated_digits import load_rotated_digits

    data = load_rotated_digits(max_angle=45.0)
    data.train, data.eval = data.train.select(range(192)), data.eval.select(range(64))
    return data


def test_rotated_digits_are_a_float_regression_task(rotated):
    angles = torch.tensor(rotated.train["angle"])
    assert angles.dtype == torch.float32 and angles.abs().max() <= 45.0 and angles.std() > 15.0


@pytest.mark.slow
def test_regression_run_loss_falls_and_reports_errors(tmp_path, rotated):
    torch.manual_seed(0)
    task = RegressionTask(num_targets=1, target_scale=45.0)
    student = create_backbone("test_efficientnet", num_classes=2, pretrained=False, image_size=32)
    teacher = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=str(tmp_path), num_train_epochs=4, per_device_train_batch_size=32,
                                 learning_rate=0.01, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0)
    trainer = DistillationTrainer(student, [teacher], method=create_method("extracurricular"), args=args,
                                  train_dataset=rotated.train, eval_dataset=rotated.eval, task=task,
                                  label_column="angle", augment=AugmentConfig(scale=(0.8, 1.0), hflip=0.0,
                                                                              color_jitter=None))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
    metrics = trainer.evaluate()
    assert 0 < metrics["eval_mae"] <= metrics["eval_rmse"] and metrics["eval_samples"] == 64
    assert "eval_accuracy" not in metrics and "eval_mae" in trainer.teacher_metrics["teacher_0"]
    path = trainer.save_model(str(tmp_path / "student"), card_extras={"kd_reference": {"eval_mae": 20.0}})
    card = open(os.path.join(path, "README.md"), encoding="utf-8").read()
    assert "## Regression results" in card and "Gap closed vs classic KD" in card and "top-1**" not in card


def test_regression_inputs_are_checked_before_training(tmp_path, rotated, small_digits):
    args = DistillationArguments(output_dir=str(tmp_path), disable_tqdm=True)
    wrong_head = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="num_classes=2"):
        DistillationTrainer(wrong_head, method="supervised", args=args, train_dataset=rotated.train,
                            task="regression", label_column="angle")
    head = create_backbone("test_efficientnet", num_classes=2, pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="numeric target column"):
        DistillationTrainer(head, method="supervised", args=args, train_dataset=small_digits.train, task="regression")


@pytest.mark.slow
def test_two_processes_keep_ranks_identical(tmp_path):
    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    run_two_processes(SCRIPT, str(tmp_path))
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0["num_processes"].item() == 2
    assert r0["steps"].item() == 6  # 96 images / (2 processes x 16) x 2 epochs: the data was sharded
    assert r0["rows_per_step"].tolist() == [32] * 6  # 16 real + 16 extra rows on each rank
    trained = [k for k in r0 if k.startswith("student.")]
    for k in trained:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
    assert any(not torch.equal(r0[k], r0[f"initial.{k}"]) for k in trained), "the student did not train"
