"""MEAL V2: loss values by hand, the discriminator as in the official code, and real (DDP) training."""
import math
import os

import pytest
import torch
from torch import nn

from hfkd import create_method
from hfkd.methods import MEALv2Discriminator
from hfkd.methods.meal_v2 import discriminator_targets
from hfkd.models.backbone import BackboneOutput

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "meal_v2_ddp.py")

# Logits chosen so that softmax gives these probabilities exactly.
P1 = [0.5, 0.25, 0.25]      # teacher 1
P2 = [0.1, 0.2, 0.7]        # teacher 2
Q = [0.2, 0.3, 0.5]         # student


def _logits(*rows):
    return torch.tensor([[math.log(p) for p in row] for row in rows], dtype=torch.float32)


def _outs(*logits):
    return [BackboneOutput(logits=z) for z in logits]


def _batch(n, labels=None):
    return {"pixel_values": torch.zeros(n, 3, 8, 8), "labels": labels if labels is not None else torch.zeros(n).long()}


def _soft_ce(target, q):
    return -sum(t * math.log(qc) for t, qc in zip(target, q))


# -- the similarity loss -----------------------------------------------------------------------------

def test_loss_is_soft_cross_entropy_to_the_mean_of_the_teachers_probabilities():
    method = create_method("meal_v2", use_discriminator=False)
    out = method.compute_loss(_batch(1), _outs(_logits(Q))[0], _outs(_logits(P1), _logits(P2)))
    # mean of the probabilities: [0.3, 0.225, 0.475]
    expected = -(0.3 * math.log(0.2) + 0.225 * math.log(0.3) + 0.475 * math.log(0.5))
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(1.08302, abs=1e-4)
    assert set(out.logs) == {"meal_v2_ce"}


def test_average_of_softmaxes_is_not_softmax_of_averaged_logits():
    method = create_method("meal_v2", use_discriminator=False)
    loss = method.compute_loss(_batch(1), _outs(_logits(Q))[0], _outs(_logits(P1), _logits(P2))).loss.item()
    # softmax of the mean log-probabilities is the normalised geometric mean of P1 and P2
    geo = [math.sqrt(a * b) for a, b in zip(P1, P2)]
    geo = [g / sum(geo) for g in geo]
    wrong = _soft_ce(geo, Q)
    assert wrong == pytest.approx(1.0620, abs=1e-3)
    assert abs(loss - wrong) > 0.015


def test_batch_mean_and_weighted_teachers():
    method = create_method("meal_v2", use_discriminator=False)
    student = _logits(Q, P1)
    out = method.compute_loss(_batch(2), _outs(student)[0], _outs(_logits(P1, P1), _logits(P2, Q)))
    row2 = _soft_ce([(a + b) / 2 for a, b in zip(P1, Q)], P1)
    assert out.loss.item() == pytest.approx((1.08302 + row2) / 2, abs=1e-4)


def test_hard_labels_unused_by_default_and_added_when_asked():
    torch.manual_seed(0)
    student, t1, t2 = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    method = create_method("meal_v2", num_classes=5)
    assert method.uses_labels is False
    a = method.compute_loss(_batch(4, torch.tensor([0, 1, 2, 3])), _outs(student)[0], _outs(t1, t2)).loss
    garbage = method.compute_loss(_batch(4, torch.tensor([4, 4, 0, 0])), _outs(student)[0], _outs(t1, t2)).loss
    assert torch.equal(a, garbage)
    labels = torch.tensor([0, 1, 2, 3])
    with_ce = create_method("meal_v2", num_classes=5, hard_label_weight=0.5)
    with_ce.discriminator.load_state_dict(method.discriminator.state_dict())
    assert with_ce.uses_labels is True
    b = with_ce.compute_loss(_batch(4, labels), _outs(student)[0], _outs(t1, t2)).loss
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert b.item() == pytest.approx(a.item() + 0.5 * ce.item(), abs=1e-5)


# -- the discriminator -------------------------------------------------------------------------------

def test_discriminator_shapes_and_parameter_count_for_imagenet():
    d = MEALv2Discriminator(1000)
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(125, 1000), (15, 125), (2, 15)]
    assert sum(p.numel() for p in d.parameters()) == 1000 * 125 + 125 + 125 * 15 + 15 + 15 * 2 + 2 == 127047


@pytest.mark.parametrize("num_classes, widths, count", [
    (64, [(8, 64), (1, 8), (2, 1)], 64 * 8 + 8 + 8 + 1 + 2 + 2),
    (10, [(1, 10), (1, 1), (2, 1)], 10 + 1 + 1 + 1 + 2 + 2),   # official widths would reach 0: guarded to 1
])
def test_discriminator_small_num_classes(num_classes, widths, count):
    d = MEALv2Discriminator(num_classes)
    assert [tuple(m.weight.shape) for m in d.modules() if isinstance(m, nn.Linear)] == widths
    assert sum(p.numel() for p in d.parameters()) == count


def test_discriminator_ends_with_relu_so_outputs_are_non_negative():
    torch.manual_seed(0)
    d = MEALv2Discriminator(40, reduction=2)
    assert isinstance(d.layers[-1], nn.ReLU)
    out = d(10 * torch.randn(512, 40))
    assert out.shape == (512, 2)
    assert out.min().item() == 0.0  # clipped, not merely positive
    with pytest.raises(ValueError, match=r"\[N, 40\]"):
        d(torch.randn(3, 41))


def test_discriminator_targets_student_rows_then_teacher_rows():
    assert discriminator_targets(3).tolist() == [[1, 0]] * 3 + [[0, 1]] * 3


def _probe_discriminator(method):
    """D(x) = [relu(x_0), 0]: the first logit decides the 'student' output, the 'teacher' output is 0."""
    d = method.discriminator
    first, second, last = [m for m in d.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m in (first, second, last):
            m.weight.zero_()
            m.bias.zero_()
        first.weight[0, 0] = 1.0
        second.weight[0, 0] = 1.0
        last.weight[0, 0] = 1.0


def test_discriminator_loss_by_hand():
    method = create_method("meal_v2", num_classes=8, discriminator_weight=0.5)
    _probe_discriminator(method)
    student = torch.zeros(1, 8)
    student[0, 0] = 2.0
    t1, t2 = torch.zeros(1, 8), torch.zeros(1, 8)
    t1[0, 0], t2[0, 0] = 3.0, -1.0           # mean teacher LOGIT on class 0: 1.0
    out = method.compute_loss(_batch(1), _outs(student)[0], _outs(t1, t2))
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE-with-logits: y=1 -> softplus(-r), y=0 -> softplus(r)
    # student row r = [2, 0], target [1, 0]; teacher row r = [1, 0], target [0, 1]; mean over 2x2 entries
    d_expected = (softplus(-2.0) + math.log(2) + softplus(1.0) + math.log(2)) / 4
    assert out.logs["discriminator"].item() == pytest.approx(d_expected, abs=1e-6)
    assert out.logs["discriminator_accuracy"].item() == pytest.approx(0.5)  # both rows called "student"
    assert out.loss.item() == pytest.approx(out.logs["meal_v2_ce"].item() + 0.5 * d_expected, abs=1e-6)


def test_final_relu_clips_negative_discriminator_outputs():
    method = create_method("meal_v2", num_classes=8)
    last = [m for m in method.discriminator.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for p in method.discriminator.parameters():
            p.zero_()
        last.bias.copy_(torch.tensor([1.0, -2.0]))   # without the final ReLU the outputs would be [1, -2]
    loss, _ = method.discriminator_loss(torch.randn(3, 8), torch.randn(3, 8))
    expected = (math.log1p(math.exp(-1.0)) + math.log(2) + math.log1p(math.exp(1.0)) + math.log(2)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_student_and_discriminator_both_minimise_the_discriminator_loss():
    torch.manual_seed(0)
    method = create_method("meal_v2", num_classes=64, discriminator_reduction=2)
    # A freshly initialised D often has every final pre-activation < 0: the final ReLU then outputs 0
    # everywhere and nothing gets a gradient.  Shift the last bias so the outputs are alive.
    with torch.no_grad():
        method.discriminator.layers[4].bias.fill_(1.0)
    student = torch.randn(16, 64, requires_grad=True)
    t1, t2 = torch.randn(16, 64), torch.randn(16, 64)
    out = method.compute_loss(_batch(16), _outs(student)[0], _outs(t1, t2))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.discriminator.parameters())
    # The student's gradient is that of L_sim + L_D: no gradient reversal on the discriminator term.
    s2 = student.detach().clone().requires_grad_(True)
    sim = create_method("meal_v2", use_discriminator=False).compute_loss(_batch(16), _outs(s2)[0], _outs(t1, t2)).loss
    d_loss, _ = method.discriminator_loss(s2, (t1 + t2) / 2)
    sim_grad = torch.autograd.grad(sim, s2, retain_graph=True)[0]
    (sim + d_loss).backward()
    torch.testing.assert_close(student.grad, s2.grad)
    assert (student.grad - sim_grad).abs().max() > 1e-5  # the discriminator term does reach the student


def test_param_groups_and_options():
    method = create_method("meal_v2", num_classes=10)
    (group,) = method.param_groups(0.01)
    assert "lr" not in group  # the student's lr and schedule, as the official code ran
    assert len(group["params"]) == 6
    (group,) = create_method("meal_v2", num_classes=10, discriminator_lr=1e-4).param_groups(0.01)
    assert group["lr"] == 1e-4
    assert create_method("meal_v2", use_discriminator=False, num_classes=10).param_groups(0.01) == []
    assert create_method("meal_v2").min_teachers == 1
    assert "2009.08453" in create_method("meal_v2").citation
    with pytest.raises(ValueError, match="discriminator_weight"):
        create_method("meal_v2", discriminator_weight=-1)
    with pytest.raises(ValueError, match="does not take"):
        create_method("meal_v2", temperature=4.0)


# -- training ----------------------------------------------------------------------------------------

def _tiny_teachers():
    from hfkd import create_backbone

    torch.manual_seed(0)
    return [create_backbone(n, num_classes=10, pretrained=False, image_size=32) for n in ("test_resnet", "test_convnext")]


def test_training_optimises_the_discriminator_and_never_saves_it(small_digits, tmp_path):
    from safetensors import safe_open

    from hfkd import DistillationArguments, DistillationTrainer, create_backbone

    with pytest.raises(ValueError, match="at least 1 teacher"):
        DistillationTrainer(create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32),
                            method="meal_v2", train_dataset=small_digits.train,
                            args=DistillationArguments(output_dir=str(tmp_path / "x")))
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    method = create_method("meal_v2", discriminator_lr=0.05)
    args = DistillationArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=32,
                                 learning_rate=0.01, optim="momentum", lr_scheduler_type="constant",
                                 save_strategy="no", eval_strategy="no", logging_steps=2, disable_tqdm=True)
    trainer = DistillationTrainer(student, teachers=_tiny_teachers(), method=method, args=args,
                                  train_dataset=small_digits.train, eval_dataset=small_digits.eval)
    assert method.discriminator is None  # built in setup(), from the student's number of classes
    trainer.train()
    d = method.discriminator
    assert d.num_classes == 10
    d_params = {id(p) for p in d.parameters()}
    groups = [g for g in trainer.optimizer.param_groups if {id(p) for p in g["params"]} & d_params]
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == d_params and groups[0]["lr"] == 0.05
    assert all(trainer.optimizer.state[p] for p in d.parameters())  # momentum buffers: it was stepped
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and {"meal_v2_ce", "discriminator", "discriminator_accuracy"} <= set(logged[-1])

    path = trainer.save_model(str(tmp_path / "student"))
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == set(student.model.state_dict())
    assert not any(k.startswith(("method", "discriminator", "layers")) for k in keys)


def test_two_processes_keep_student_and_discriminator_identical(tmp_path):
    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    run_two_processes(SCRIPT, str(tmp_path))
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0["num_processes"].item() == 2
    assert r0["steps"].item() == 6  # 96 images / (2 processes x 16) x 2 epochs: the data was sharded
    assert r0["discriminator_group_lr"].tolist() == [0.05]
    trained = [k for k in r0 if k.startswith(("student.", "discriminator."))]
    assert any(k.startswith("discriminator.") for k in trained) and any(k.startswith("student.") for k in trained)
    for k in trained:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
    for part in ("student.", "discriminator."):
        assert any(not torch.equal(r0[k], r0[f"initial.{k}"]) for k in trained if k.startswith(part)), \
            f"{part[:-1]} did not train"
