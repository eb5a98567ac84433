"""PS-KD: targets and loss by hand, the prediction bank in training, resume, 2 processes."""
import math
import os
import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method
from hfkd.losses import pskd_alpha, pskd_targets, soft_cross_entropy
from hfkd.methods.base import MethodContext
from hfkd.methods.pskd import PSKD
from tests.helpers.launch import run_two_processes

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "pskd_ddp.py")


def _context(n=5, c=3, epochs=4):
    return MethodContext(num_classes=c, num_train_samples=n, num_epochs=epochs, steps_per_epoch=1, student=None)


class _Out:
    def __init__(self, logits):
        self.logits, self.pooled = logits, None


def test_alpha_and_targets_by_hand():
    assert pskd_alpha(0, 10, 0.8) == pytest.approx(0.08)  # never 0 in the code ...
    assert pskd_alpha(9, 10, 0.8) == pytest.approx(0.8)   # ... and alpha_T in the last epoch
    target = pskd_targets(torch.tensor([1]), torch.tensor([[0.2, 0.5, 0.3]]), alpha=0.4, num_classes=3)
    assert torch.allclose(target, torch.tensor([[0.08, 0.8, 0.12]]))
    # -(0.08 log p0 + 0.8 log p1 + 0.12 log p2) with p = softmax([0, ln 2, 0]) = [1/4, 1/2, 1/4]
    loss = soft_cross_entropy(torch.tensor([[0.0, math.log(2.0), 0.0]]), target)
    assert loss.item() == pytest.approx(-(0.08 * math.log(0.25) + 0.8 * math.log(0.5) + 0.12 * math.log(0.25)))


def test_epoch0_is_cross_entropy_then_targets_use_the_stored_softmax():
    method = PSKD(alpha_T=0.8)
    method.setup(_context(epochs=4))
    labels, index = torch.tensor([0, 2]), torch.tensor([3, 1])
    z0 = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    method.on_epoch_start(0)
    out = method.compute_loss({"labels": labels, "index": index}, _Out(z0), [])
    assert out.loss.item() == pytest.approx(F.cross_entropy(z0, labels).item())  # one-hot targets at epoch 0
    assert torch.equal(method.bank[index], F.softmax(z0.detach(), 1)) and method.seen.tolist() == [0, 1, 0, 1, 0]

    method.on_epoch_start(1)  # alpha_1 = 0.8 * 2 / 4 = 0.4
    z1 = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    out = method.compute_loss({"labels": labels, "index": index}, _Out(z1), [])
    p_prev = F.softmax(z0.detach(), 1)
    expected = -(((0.6 * F.one_hot(labels, 3) + 0.4 * p_prev) * math.log(1 / 3)).sum(1)).mean()
    assert out.loss.item() == pytest.approx(expected.item())
    out.loss.backward()  # the gradient is p - target: nothing flows into the stored predictions
    assert torch.allclose(z1.grad, (F.softmax(z1.detach(), 1) - (0.6 * F.one_hot(labels, 3) + 0.4 * p_prev)) / 2)
    # an image never seen before still gets a one-hot target after epoch 0
    assert torch.equal(method.previous_predictions(torch.tensor([1]), torch.tensor([4])), torch.tensor([[0., 1, 0]]))


def test_repeated_index_in_one_step_keeps_the_last_row_and_float16_bank():
    method = PSKD(bank_dtype="float16")
    method.setup(_context())
    method.store(torch.tensor([2, 0, 2]), torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]))
    assert method.bank.dtype == torch.float16 and method.bank.element_size() * method.bank.numel() == 5 * 3 * 2
    assert method.bank[2].argmax().item() == 2 and method.bank[0].argmax().item() == 1
    with pytest.raises(ValueError, match="bank_dtype"):
        PSKD(bank_dtype="int8")


class RecordingPSKD(PSKD):
    """PS-KD that remembers the softmax of the last training pass of each image, and its targets."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.last_softmax, self.first_prev, self.epoch0_ce = {}, None, []

    def compute_loss(self, batch, student, teachers):
        if self.first_prev is None:
            self.first_prev = (batch["index"].clone(), self.previous_predictions(batch["labels"], batch["index"]))
        out = super().compute_loss(batch, student, teachers)
        if self.epoch == 0:
            self.epoch0_ce.append((out.loss.item(), F.cross_entropy(student.logits.float(), batch["labels"]).item()))
        for i, p in zip(batch["index"].tolist(), F.softmax(student.logits.detach().float(), 1)):
            self.last_softmax[i] = p.clone()
        return out


def _train(data, out_dir, method, **kw):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    kw = {"save_strategy": "no", **kw}
    args = DistillationArguments(output_dir=str(out_dir), num_train_epochs=2, per_device_train_batch_size=16,
                                 learning_rate=0.01, eval_strategy="no", disable_tqdm=True, eval_teachers=False,
                                 seed=0, logging_steps=1, **kw)
    trainer = DistillationTrainer(student, method=method, args=args, train_dataset=data.train)
    trainer.train()
    return trainer


def test_bank_holds_the_training_pass_predictions_and_resume_restores_it(small_digits, tmp_path):
    data = types.SimpleNamespace(train=small_digits.train.select(range(64)))
    full = _train(data, tmp_path / "full", RecordingPSKD(), save_strategy="steps", save_steps=6)
    method = full.method
    assert all(abs(a - b) < 1e-6 for a, b in method.epoch0_ce) and len(method.epoch0_ce) == 4
    assert method.seen.all() and sorted(method.last_softmax) == list(range(64))
    assert torch.allclose(method.bank, torch.stack([method.last_softmax[i] for i in range(64)]), atol=1e-6)
    # the checkpoint at step 6 (mid epoch 1) holds the bank; resuming from it ends where the full run ended
    ckpt = tmp_path / "full" / "checkpoint-6"
    saved = load_file(str(ckpt / "method_state.safetensors"))
    resumed = _train(data, tmp_path / "resumed", RecordingPSKD(), resume_from_checkpoint=str(ckpt))
    idx, prev = resumed.method.first_prev
    assert torch.allclose(prev, saved["bank"][idx].float())  # the first resumed step used the restored bank
    assert torch.allclose(resumed.method.bank, method.bank, atol=1e-6)
    final = resumed.unwrapped_student().state_dict()
    for k, a in full.unwrapped_student().state_dict().items():
        b = final[k]
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_two_processes_share_one_bank_and_resume_in_one(small_digits, tmp_path):
    run_two_processes(SCRIPT, str(tmp_path))
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0]["num_processes"].item() == 2
    assert torch.equal(ranks[0]["bank"], ranks[1]["bank"]) and ranks[0]["seen"].all()
    seen_by = [set(r["index"].tolist()) for r in ranks]
    assert seen_by[0] | seen_by[1] == set(range(44)) and seen_by[0] != seen_by[1]

    def union(before_step):
        """Each image's last prediction over both ranks; a tie (same step) goes to the higher rank."""
        last = {}
        for rank, r in enumerate(ranks):
            for s, i, p in zip(r["step"].tolist(), r["index"].tolist(), r["softmax"]):
                if s < before_step and (i not in last or (s, rank) >= last[i][0]):
                    last[i] = ((s, rank), p)
        return torch.stack([last[i][1] for i in range(44)])

    assert torch.allclose(ranks[0]["bank"], union(before_step=10**9), atol=1e-6)
    # the checkpoint after epoch 0 holds the epoch-0 predictions, and resumes in ONE process
    ckpt = tmp_path / "checkpoint-3"
    saved = load_file(str(ckpt / "method_state.safetensors"))
    assert torch.allclose(saved["bank"], union(before_step=3), atol=1e-6)
    data = types.SimpleNamespace(train=small_digits.train.select(range(44)))
    # a deliberate change of run: 2 x 8 -> 1 x 16 per step, the same rows selected another way
    resumed = _train(data, tmp_path / "one", RecordingPSKD(), resume_from_checkpoint=str(ckpt),
                     resume_allow_changes=["world_size", "per_device_train_batch_size", "dataset"])
    idx, prev = resumed.method.first_prev
    assert resumed.state.global_step > 3
    assert torch.allclose(prev, saved["bank"][idx].float())
