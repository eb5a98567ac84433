"""Extracurricular learning (Pouransari, Javaheripi, Sharma & Tuzel, CVPRW 2021).

The student matches the teachers' *output distributions* on the training images and on extra
images drawn near the data distribution, where the teachers are uncertain.  Here the extra images
are MixUp / CutMix mixtures of pairs of images of the batch (docs/extracurricular.md says which
details are the paper's and which are assumed).  They never get a ground-truth label: only the
teachers supervise them.  Classification matches softmax distributions at temperature ``T``;
regression (:class:`hfkd.tasks.RegressionTask`) matches Gaussians with the closed-form KL.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from ..data.transforms import sample_seed
from ..losses import ensemble_probs, gaussian_kl, soft_kl_rows
from .base import DistillationMethod, LossOutput
from .configs import ExtracurricularConfig
from .registry import register_method

# Keeps the mixing draws apart from the augmentation's, which are seeded from the same (seed, epoch, index).
_MIX_STREAM = 0x6D6978


def mix_pair(anchor: torch.Tensor, partner: torch.Tensor, lam: float, cutmix: bool, box_center) -> torch.Tensor:
    """MixUp ``lam * anchor + (1 - lam) * partner``, or CutMix: ``partner`` pasted into ``anchor`` in a box
    of area ``1 - lam`` (clipped at the border) centred at ``box_center`` (fractions of height and width)."""
    if not cutmix:
        return lam * anchor + (1.0 - lam) * partner
    h, w = anchor.shape[-2:]
    cut = float(np.sqrt(1.0 - lam))
    ch, cw = int(round(h * cut)), int(round(w * cut))
    cy, cx = int(box_center[0] * h), int(box_center[1] * w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
    out = anchor.clone()
    out[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    return out


@register_method
class Extracurricular(DistillationMethod):
    """``alpha * mean_{real + extra} D(teachers || student) + (1 - alpha) * supervised(real)``.

    ``D`` is ``T^2 * KL`` of the (weighted) mean of the teachers' softened probabilities for
    classification, and the Gaussian KL (teacher first) for regression, where the teachers'
    Gaussians are combined into the moment-matched one.
    """

    name = "extracurricular"
    citation = (
        "@inproceedings{pouransari2021extracurricular,\n  title={Extracurricular Learning: Knowledge Transfer Beyond "
        "Empirical Distribution},\n  author={Pouransari, Hadi and Javaheripi, Mojan and Sharma, Vinay and Tuzel, Oncel},"
        "\n  booktitle={CVPR Workshops},\n  year={2021},\n  note={arXiv:2007.00051}\n}"
    )
    min_teachers = 1
    supported_tasks = ("classification", "regression")
    config_class = ExtracurricularConfig

    def __init__(self, config: Optional[ExtracurricularConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        self.uses_labels = self.config.alpha < 1.0

    # -- extra samples ------------------------------------------------------------------------------
    def num_extra(self, batch_size: int) -> int:
        return int(round(self.config.extra_ratio * batch_size))

    def _draw(self, index: int, repeat: int, batch_size: int, anchor: int):
        """(partner position, lambda, CutMix?, box centre) of one extra sample, from (seed, epoch, index, repeat)."""
        seed = self.context.seed if self.context is not None else 0
        rng = np.random.default_rng([sample_seed(seed, self.epoch, index), repeat, _MIX_STREAM])
        cfg = self.config
        other = int(rng.integers(max(batch_size - 1, 1)))
        partner = other + (other >= anchor) if batch_size > 1 else anchor
        lam = float(rng.beta(cfg.mix_alpha, cfg.mix_alpha))
        cutmix = cfg.mix == "cutmix" or (cfg.mix == "both" and rng.random() < cfg.cutmix_prob)
        center = rng.random(2)
        return partner, lam, bool(cutmix), center

    def prepare_batch(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Append the extra samples to ``pixel_values``; ``labels`` keep one row per *real* sample.

        Extra sample ``j`` mixes real sample ``j mod B`` (its anchor) with a partner of the batch.
        ``extra_pairs`` ([M, 2]) and ``extra_lambda`` ([M]) record each mixture.
        """
        x = batch["pixel_values"]
        n_real = x.shape[0]
        m = self.num_extra(n_real)
        if m == 0:
            return batch
        indices = batch["index"].tolist() if "index" in batch else list(range(n_real))
        extra, pairs, lams = [], [], []
        for j in range(m):
            anchor, repeat = j % n_real, j // n_real
            partner, lam, cutmix, center = self._draw(int(indices[anchor]), repeat, n_real, anchor)
            extra.append(mix_pair(x[anchor], x[partner], lam, cutmix, center))
            pairs.append((anchor, partner))
            lams.append(lam)
        out = dict(batch)
        out["pixel_values"] = torch.cat([x, torch.stack(extra).to(x.dtype)])
        out["extra_pairs"] = torch.tensor(pairs, device=x.device)
        out["extra_lambda"] = torch.tensor(lams, device=x.device)
        return out

    # -- the loss -----------------------------------------------------------------------------------
    def _match_rows(self, student_out: torch.Tensor, teacher_outs):
        """Per-row teacher-to-student divergence and per-row teacher uncertainty."""
        weights = self.teacher_weights()
        if self.task.name == "regression":
            mean_t, log_var_t = self.task.gaussian(self.task.ensemble(teacher_outs, weights).detach())
            mean_s, log_var_s = self.task.gaussian(student_out)
            if self.config.regression_match == "mean":
                rows = (mean_s - mean_t).pow(2).sum(-1)
            else:
                rows = gaussian_kl(mean_t, log_var_t, mean_s, log_var_s).sum(-1)
            return rows, log_var_t.mean(-1)  # uncertainty: the teachers' (log-)variance
        probs = ensemble_probs(teacher_outs, weights, self.config.temperature)
        rows = soft_kl_rows(student_out, probs, self.config.temperature)
        plain = ensemble_probs(teacher_outs, weights)
        entropy = -(plain * plain.clamp_min(1e-12).log()).sum(-1)
        return rows, entropy

    def _row_weights(self, uncertainty: torch.Tensor, n_real: int) -> torch.Tensor:
        """1 for real samples; for extra ones, by the ``uncertainty`` option (docs/extracurricular.md)."""
        w = torch.ones_like(uncertainty)
        extra = uncertainty[n_real:]
        mode = self.config.uncertainty
        if extra.numel() == 0 or mode == "none":
            return w
        if mode == "weight":
            u = extra - extra.min() if self.task.name == "regression" else extra  # log-variances may be negative
            w[n_real:] = u / u.mean().clamp_min(1e-12)
        else:
            keep = max(1, int(round(self.config.uncertain_fraction * extra.numel())))
            chosen = extra.topk(keep).indices
            w[n_real:] = 0.0
            w[n_real + chosen] = 1.0
        return w.detach()

    def labels_reason(self) -> str:
        return (f"alpha={self.config.alpha:g} weighs a loss on the labels of the real samples by 1 - alpha; alpha=1 "
                "(--alpha 1) matches the teachers alone")

    def compute_loss(self, batch, student, teachers):
        n_real = batch["labels"].shape[0]  # rows after these are extra samples: they have no label
        teacher_outs = [t.logits for t in teachers]
        rows, uncertainty = self._match_rows(student.logits, teacher_outs)
        w = self._row_weights(uncertainty.detach(), n_real)
        match = (w * rows).sum() / w.sum()
        logs = {"match": match.detach(), "match_real": rows[:n_real].mean().detach()}
        if rows.shape[0] > n_real:
            logs["match_extra"] = rows[n_real:].mean().detach()
        loss = self.config.alpha * match
        if self.uses_labels:
            hard = self.task.supervised_loss(student.logits[:n_real], batch["labels"])
            loss = loss + (1.0 - self.config.alpha) * hard
            logs["hard"] = hard.detach()
        return LossOutput(loss, logs)
