"""PS-KD: Progressive Self-Knowledge Distillation (Kim et al., ICCV 2021).

The student is its own teacher: the target of a training image is
``(1 - a_t) onehot(y) + a_t p_prev``, with ``p_prev`` the softmax the model gave
*the same image* in the previous epoch and ``a_t = alpha_T (t + 1) / E``.  What the
official code does and this module reproduces (docs/methods.md, "PS-KD"):

* ``p_prev`` comes from the **training forward pass** of the previous epoch (its random
  augmentation, BatchNorm in train mode, weights before that step's update): the logits
  given to :meth:`PSKD.compute_loss` are stored after the loss is computed.  There is no
  extra evaluation pass.
* Epoch 0 is plain cross-entropy: the targets are one-hot whatever ``a_0 = alpha_T / E``.
  Images never seen before (a resumed run on a larger split) also get one-hot targets.
* No gradient flows through the target; softmax at temperature 1; loss
  ``-(target * log_softmax(z)).sum(1).mean()``.

The prediction bank holds one row per training image, keyed by the dataset index
(``batch["index"]``).  It lives on the CPU as a plain tensor attribute, not a registered
buffer: DDP would broadcast buffers from rank 0 at every forward.  Under DDP every step
all-gathers ``(index, prediction)`` so each process keeps the whole bank (as the official
code does), which makes it independent of the number of processes: a checkpoint written
by 2 processes resumes in 1 or 4.  Memory: ``N x C x 4`` bytes in float32 (ImageNet:
1.28M x 1000 x 4 = 5.1 GB per process), half with ``bank_dtype="float16"`` (2.6 GB), at
the cost of ~3 significant digits per stored probability (values below 6e-8 flush to 0).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from ..losses import pskd_alpha, pskd_targets, soft_cross_entropy
from .base import DistillationMethod, LossOutput, MethodContext, gather_rows
from .configs import BANK_DTYPES, PSKDConfig
from .registry import register_method

__all__ = ["PSKD", "PSKDConfig"]

_BANK_DTYPES = {name: getattr(torch, name) for name in BANK_DTYPES}


@register_method
class PSKD(DistillationMethod):
    """Progressive self-knowledge distillation; settings in :class:`PSKDConfig`."""

    name = "pskd"
    needs_random_access = ("it keeps the student's last prediction of every training image in a bank indexed by "
                           "the image's row, sized by the number of rows, which a stream does not have")
    citation = (
        "@inproceedings{kim2021selfknowledge,\n  title={Self-Knowledge Distillation With Progressive Refinement of "
        "Targets},\n  author={Kim, Kyungyul and Ji, ByeongMoon and Yoon, Doyoung and Hwang, Sangheum},\n"
        "  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},\n"
        "  pages={6567--6576},\n  year={2021}\n}"
    )
    max_teachers = 0
    config_class = PSKDConfig

    def __init__(self, config: Optional[PSKDConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        # Plain attributes (not buffers): CPU-resident, never broadcast by DDP, never moved by .to().
        self.bank: Optional[torch.Tensor] = None  # [N, C] softmax of the last training pass of each image
        self.seen: Optional[torch.Tensor] = None  # [N] bool: has the image a stored prediction?

    # -- state ------------------------------------------------------------------------------------
    def setup(self, context: MethodContext) -> None:
        super().setup(context)
        shape = (context.num_train_samples, context.num_classes)
        if self.bank is not None and tuple(self.bank.shape) == shape:
            return  # already restored by load_extra_state
        if self.bank is not None:
            raise ValueError(f"pskd: the restored prediction bank has shape {tuple(self.bank.shape)} but this run "
                             f"has {shape[0]} training images and {shape[1]} classes; resume on the same data")
        self.bank = torch.zeros(shape, dtype=_BANK_DTYPES[self.config.bank_dtype])
        self.seen = torch.zeros(shape[0], dtype=torch.bool)

    def extra_state(self) -> Dict[str, torch.Tensor]:
        if self.bank is None:
            return {}
        return {"bank": self.bank, "seen": self.seen}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if not state:
            return
        if "bank" not in state or "seen" not in state:
            raise ValueError(f"pskd: the checkpoint's method state has keys {sorted(state)}, expected 'bank' and "
                             "'seen'; was it written by another method?")
        bank, seen = state["bank"].cpu(), state["seen"].cpu().bool()
        if self.bank is not None and bank.shape != self.bank.shape:
            raise ValueError(f"pskd: the checkpoint's prediction bank has shape {tuple(bank.shape)} but this run "
                             f"needs {tuple(self.bank.shape)}; resume on the same training data")
        self.bank = bank.to(_BANK_DTYPES[self.config.bank_dtype]).clone()
        self.seen = seen.clone()

    # -- the loss ---------------------------------------------------------------------------------
    def alpha(self) -> float:
        return pskd_alpha(self.epoch, self.context.num_epochs, self.config.alpha_T)

    def previous_predictions(self, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Each image's stored softmax; one-hot in epoch 0 and for images not seen yet."""
        num_classes = self.bank.shape[1]
        onehot = F.one_hot(labels.long().cpu(), num_classes).float()
        if self.epoch == 0:
            return onehot.to(labels.device)
        index = index.long().cpu()
        prev = torch.where(self.seen[index, None], self.bank[index].float(), onehot)
        return prev.to(labels.device)

    def labels_reason(self) -> str:
        return "its targets mix the labels with the student's own past predictions"

    def compute_loss(self, batch, student, teachers):
        if self.bank is None:
            raise RuntimeError("pskd: setup() was not called; train through DistillationTrainer")
        if "index" not in batch:
            raise KeyError("pskd needs batch['index'] (the dataset row of each image) to key its prediction bank")
        labels, index, logits = batch["labels"], batch["index"], student.logits
        alpha = self.alpha()
        target = pskd_targets(labels, self.previous_predictions(labels, index), alpha, logits.shape[1])
        loss = soft_cross_entropy(logits, target)
        self.store(index, logits)
        return LossOutput(loss, {"ce_soft": loss.detach(), "alpha": torch.tensor(alpha, device=logits.device)})

    @torch.no_grad()
    def store(self, index: torch.Tensor, logits: torch.Tensor) -> None:
        """Write this step's softmax into the bank, gathered from every process."""
        probs = F.softmax(logits.detach().float(), dim=-1)
        all_index, all_probs, _ = gather_rows(self.context, index.long(), probs)
        all_index, all_probs = all_index.cpu(), all_probs.cpu()
        # Even-batches padding can put an image twice in one step (on two ranks).  index_put with
        # repeated indices has no defined winner, so keep the last occurrence in gather (rank) order:
        # the same choice on every process.
        unique, inverse = torch.unique(all_index, return_inverse=True)
        positions = torch.arange(len(all_index))
        last = torch.zeros(len(unique), dtype=torch.long).scatter_reduce_(0, inverse, positions, "amax")
        self.bank[unique] = all_probs[last].to(self.bank.dtype)
        self.seen[unique] = True
