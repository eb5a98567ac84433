"""BAKE: the propagated targets by hand, the loss, the sampler in training, 2-process ensembling."""
import math
import os
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method
from hfkd.data.samplers import ClassAwareBatchSampler
from hfkd.losses import bake_targets
from hfkd.methods.bake import BAKE
from tests.helpers.launch import run_two_processes

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "bake_ddp.py")


def _batch(n=6, d=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, c, generator=g) * 3


def test_affinity_by_hand_zero_diagonal_no_temperature():
    # unit features e1, e2, (e1+e2)/sqrt2 (scaled: normalisation must remove the scale): cosines 0, 1/sqrt2, 1/sqrt2
    f = torch.tensor([[3.0, 0.0], [0.0, 0.5], [2.0, 2.0]])
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    e = lambda x: math.exp(x)  # noqa: E731
    a = torch.tensor([[0, e(0) / (e(0) + e(s)), e(s) / (e(0) + e(s))],
                      [e(0) / (e(0) + e(s)), 0, e(s) / (e(0) + e(s))],
                      [0.5, 0.5, 0]])  # softmax of the raw cosines, self excluded: no temperature
    p = F.softmax(z / 4.0, 1)
    q = 0.5 * torch.linalg.inv(torch.eye(3) - 0.5 * a) @ p
    assert torch.allclose(bake_targets(f, z, omega=0.5, temperature=4.0), q, atol=1e-6)


def test_closed_form_is_the_fixed_point_of_propagation():
    f, z = _batch()
    omega, t = 0.7, 4.0
    fn = F.normalize(f, dim=1)
    a = F.softmax(fn @ fn.t() - 1e9 * torch.eye(6), 1)
    assert torch.equal(a.diagonal(), torch.zeros(6))
    p = F.softmax(z / t, 1)
    q = p.clone()
    for _ in range(200):
        q = omega * a @ q + (1 - omega) * p
    closed = bake_targets(f, z, omega, t)
    assert torch.allclose(closed, q, atol=1e-6)
    assert torch.allclose(closed.sum(1), torch.ones(6), atol=1e-6) and (closed >= 0).all()
    assert torch.allclose(bake_targets(f, z, 1e-7, t), p, atol=1e-6)  # omega -> 0: each sample's own prediction


def test_loss_is_ce_plus_t2_kl_with_constant_targets_in_float32():
    f, z = _batch()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    method = BAKE(omega=0.5, temperature=4.0, kd_weight=0.3)
    features, logits = f.clone().requires_grad_(), z.clone().requires_grad_()
    out = method.compute_loss({"labels": labels}, types.SimpleNamespace(logits=logits, pooled=features), [])
    q = bake_targets(f, z, 0.5, 4.0)
    log_s = F.log_softmax(z / 4.0, 1)
    kl = (q * (q.log() - log_s)).sum(1).mean() * 16
    assert out.loss.item() == pytest.approx((F.cross_entropy(z, labels) + 0.3 * kl).item(), rel=1e-5)
    out.loss.backward()
    assert features.grad is None  # Q is built from detached features: no gradient through the target
    expected = (F.softmax(z, 1) - F.one_hot(labels, 4) + 0.3 * 4.0 * (F.softmax(z / 4.0, 1) - q)) / 6
    assert torch.allclose(logits.grad, expected, atol=1e-6)
    # bf16 logits and features: Q still float32 and close to the float32 one
    q16 = method.targets(f.bfloat16(), z.bfloat16())
    assert q16.dtype == torch.float32 and torch.allclose(q16, q, atol=2e-2)


def test_bad_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="omega must be in"):
        BAKE(omega=1.0)
    with pytest.raises(ValueError, match="teacher"):
        create_method("bake").check_teachers(1)
    assert BAKE(intra_class_images=0).train_batch_sampler([0, 1], 4, 0) is None


def test_trainer_runs_class_aware_batches_and_changes_them_each_epoch(small_digits, tmp_path):
    seen = []

    class Recording(BAKE):
        def compute_loss(self, batch, student, teachers):
            seen.append((self.epoch, batch["index"].tolist()))
            return super().compute_loss(batch, student, teachers)

    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=8,
                                 learning_rate=0.01, save_strategy="no", eval_strategy="no", disable_tqdm=True,
                                 eval_teachers=False, seed=3, logging_steps=1)
    train = small_digits.train.select(range(24))
    trainer = DistillationTrainer(student, method=Recording(intra_class_images=1), args=args, train_dataset=train)
    trainer.train()
    reference = ClassAwareBatchSampler(train["label"], 8, 1, seed=3)
    for epoch in (0, 1):
        reference.set_epoch(epoch)
        assert [b for e, b in seen if e == epoch] == list(reference)  # 6 batches: 24 anchors, 4 per batch
    assert [b for e, b in seen if e == 0] != [b for e, b in seen if e == 1]
    assert trainer.state.global_step == 12 and math.isfinite(trainer.state.log_history[-1]["loss"])


def test_two_processes_ensemble_over_the_global_batch(tmp_path):
    run_two_processes(SCRIPT, str(tmp_path))
    r = [load_file(str(tmp_path / f"rank{k}.safetensors")) for k in (0, 1)]
    steps = len([k for k in r[0] if k.startswith("q.")])
    # 32 anchors, 4 per batch: 8 batches an epoch, 4 per rank, 2 epochs
    assert steps == 8 and len([k for k in r[1] if k.startswith("q.")]) == 8
    anchors = {0: [], 1: []}
    for s in range(steps):
        f = torch.cat([r[0][f"features.{s}"], r[1][f"features.{s}"]])
        z = torch.cat([r[0][f"logits.{s}"], r[1][f"logits.{s}"]])
        q = bake_targets(f, z, 0.5, 4.0)
        assert torch.allclose(r[0][f"q.{s}"], q[:8], atol=1e-5) and torch.allclose(r[1][f"q.{s}"], q[8:], atol=1e-5)
        assert not torch.allclose(r[0][f"q.{s}"], bake_targets(r[0][f"features.{s}"], r[0][f"logits.{s}"]), atol=1e-4)
        i0, i1 = r[0][f"index.{s}"].long(), r[1][f"index.{s}"].long()
        assert not set(i0[0::2].tolist()) & set(i1[0::2].tolist())  # the ranks' anchors never overlap
        for rank in (0, 1):
            labels = r[rank][f"labels.{s}"]
            assert torch.equal(labels[0::2], labels[1::2])  # each anchor is followed by an image of its class
            anchors[int(r[rank][f"epoch.{s}"])] += r[rank][f"index.{s}"].long()[0::2].tolist()
    assert sorted(anchors[0]) == sorted(anchors[1]) == list(range(32))  # every image anchors once per epoch
    e0 = [r[0][f"index.{s}"].tolist() for s in range(steps) if r[0][f"epoch.{s}"] == 0]
    e1 = [r[0][f"index.{s}"].tolist() for s in range(steps) if r[0][f"epoch.{s}"] == 1]
    assert e0 != e1  # set_epoch reached the sampler inside accelerate's BatchSamplerShard
