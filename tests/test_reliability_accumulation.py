"""Gradient accumulation: every update is the mean over the batches actually accumulated.

Accelerate divides each loss by ``gradient_accumulation_steps`` and steps at the end of each epoch, so a
window cut short by the epoch's end (or an accumulation longer than the epoch) used to shrink the update
without a word.  The tests recompute each update by hand (plain SGD) from the batches the trainer saw.
"""
import copy
import logging

import torch
import torch.nn.functional as F

from conftest import run_args
from hfkd import DistillationTrainer
from helpers.models import tiny_student

LR = 0.1


def _trained(tmp_path, data, samples, gas, max_steps):
    """Train ``supervised`` with plain SGD; return (initial student, trained student, the batches seen, in order)."""
    student = tiny_student()
    initial = copy.deepcopy(student)
    args = run_args(tmp_path / "run", max_steps=max_steps, gradient_accumulation_steps=gas, optim="momentum",
                    momentum=0.0, learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=0.0)
    trainer = DistillationTrainer(student, method="supervised", args=args,
                                  train_dataset=data.train.select(range(samples)))
    seen = []
    step = trainer._train_step

    def recording(batch):
        seen.append((batch["pixel_values"].detach().clone(), batch["labels"].detach().clone(),
                     trainer.state.epoch))
        return step(batch)

    trainer._train_step = recording
    trainer.train()
    return initial, trainer.unwrapped_student(), seen


def _by_hand(initial, windows):
    """SGD over ``windows`` (lists of (x, y)): each update is lr times the mean gradient of its batches' losses."""
    model = copy.deepcopy(initial).train()
    params = [p for p in model.parameters() if p.requires_grad]
    for window in windows:
        grads = [torch.zeros_like(p) for p in params]
        for x, y in window:
            loss = F.cross_entropy(model(x).logits, y)
            for g, d in zip(grads, torch.autograd.grad(loss, params)):
                g += d / len(window)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= LR * g
    return model


def _assert_same_weights(trained, expected):
    for (name, a), b in zip(trained.named_parameters(), expected.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_accumulation_longer_than_an_epoch_averages_the_epochs_batches(tmp_path, small_digits, caplog):
    # 96 samples, batch 32: 3 batches per epoch, accumulation 10, so one step per epoch over 3 batches.
    with caplog.at_level(logging.WARNING):
        initial, trained, seen = _trained(tmp_path, small_digits, 96, gas=10, max_steps=2)
    assert [epoch for _, _, epoch in seen] == [0, 0, 0, 1, 1, 1]
    expected = _by_hand(initial, [[(x, y) for x, y, _ in seen[:3]], [(x, y) for x, y, _ in seen[3:]]])
    _assert_same_weights(trained, expected)
    warnings = [r.getMessage() for r in caplog.records if "gradient_accumulation_steps=10" in r.getMessage()]
    assert len(warnings) == 1 and "3 batches" in warnings[0]


def test_the_short_last_window_of_an_epoch_is_averaged_over_its_own_batches(tmp_path, small_digits):
    # 3 batches per epoch, accumulation 2: windows [2 batches, 1 batch] in every epoch.
    initial, trained, seen = _trained(tmp_path, small_digits, 96, gas=2, max_steps=3)
    assert [epoch for _, _, epoch in seen] == [0, 0, 0, 1, 1]
    batches = [(x, y) for x, y, _ in seen]
    expected = _by_hand(initial, [batches[0:2], batches[2:3], batches[3:5]])
    _assert_same_weights(trained, expected)


def test_full_windows_are_unchanged(tmp_path, small_digits):
    initial, trained, seen = _trained(tmp_path, small_digits, 128, gas=2, max_steps=2)
    batches = [(x, y) for x, y, _ in seen]
    _assert_same_weights(trained, _by_hand(initial, [batches[0:2], batches[2:4]]))
