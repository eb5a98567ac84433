"""Pure loss and target functions of the distillation methods.

Every function here is stateless and differentiable where it should be; the
targets it builds are detached.  All of them compute in float32 whatever the
autocast dtype, because softmax/log-softmax of bf16 logits loses the small
probabilities that distillation is about.

Notation (docs/methods.md): ``z`` are logits of shape
``[N, C]``, ``p = softmax(z / T)``; KL(p || q) = sum_c p_c (log p_c - log q_c).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "soft_cross_entropy",
    "kd_kl_div",
    "soft_kl_div",
    "ensemble_probs",
    "meal_v2_loss",
    "pskd_alpha",
    "pskd_targets",
    "bake_targets",
    "feed_loss",
    "feature_distillation_loss",
    "normalize_factor",
    "soft_kl_rows",
    "gaussian_kl",
    "gaussian_nll",
    "split_gaussian",
]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype != torch.float32 else x


def _float32_region(tensor: torch.Tensor):
    # Autocast would otherwise re-cast matmuls inside the losses to bf16; it is per device type,
    # so switch off the one the tensor lives on (cpu, cuda, mps, ...).
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c p_c log softmax(z)_c``.

    ``target_probs`` is treated as a constant (no gradient flows into it).
    """
    if logits.shape != target_probs.shape:
        raise ValueError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and target_probs "
            f"{tuple(target_probs.shape)} must have the same [N, C] shape"
        )
    with _float32_region(logits):
        log_p = F.log_softmax(_f32(logits), dim=-1)
        return -(_f32(target_probs).detach() * log_p).sum(dim=-1).mean()


def soft_kl_div(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(p || softmax(s/T))`` averaged over the batch, ``p`` a constant target distribution."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != target_probs.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and targets {tuple(target_probs.shape)} differ; "
            "do the teacher and student predict the same classes?"
        )
    with _float32_region(student_logits):
        log_q = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
        # kl_div(input=student log-probs, target=teacher probs) = KL(teacher || student)
        return F.kl_div(log_q, _f32(target_probs).detach(), reduction="batchmean") * temperature**2


def soft_kl_rows(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row ``T^2 * KL(p_i || softmax(s_i/T))``, shape ``[N]``; its mean is :func:`soft_kl_div`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != target_probs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and targets {tuple(target_probs.shape)} differ")
    with _float32_region(student_logits):
        log_q = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
        return F.kl_div(log_q, _f32(target_probs).detach(), reduction="none").sum(dim=-1) * temperature**2


def kd_kl_div(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton's soft term: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""
    if temperature <= 0:
        raise ValueError(f"kd_kl_div: temperature must be > 0, got {temperature}")
    with _float32_region(student_logits):
        target = F.softmax(_f32(teacher_logits).detach() / temperature, dim=-1)
    return soft_kl_div(student_logits, target, temperature)


def ensemble_probs(
    teacher_logits: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None, temperature: float = 1.0
) -> torch.Tensor:
    """(Weighted) mean of the teachers' softmax probabilities -- not the softmax of mean logits."""
    if len(teacher_logits) == 0:
        raise ValueError("ensemble_probs needs at least one teacher's logits")
    shapes = {tuple(t.shape) for t in teacher_logits}
    if len(shapes) != 1:
        raise ValueError(f"ensemble_probs: teachers' logits have different shapes {sorted(shapes)}")
    if weights is None:
        w = torch.full((len(teacher_logits),), 1.0 / len(teacher_logits))
    else:
        if len(weights) != len(teacher_logits):
            raise ValueError(f"ensemble_probs: {len(weights)} weights for {len(teacher_logits)} teachers")
        w = torch.as_tensor(weights, dtype=torch.float32)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"ensemble_probs: weights must be non-negative with a positive sum, got {list(weights)}")
        w = w / w.sum()
    with _float32_region(teacher_logits[0]):
        probs = torch.stack([F.softmax(_f32(t).detach() / temperature, dim=-1) for t in teacher_logits])
        return torch.einsum("k,knc->nc", w.to(probs.device), probs)


def meal_v2_loss(student_logits: torch.Tensor, teacher_logits: Sequence[torch.Tensor],
                 weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """MEAL V2 similarity loss: soft cross-entropy to the (weighted) mean of the teachers' probabilities (T = 1)."""
    if isinstance(teacher_logits, torch.Tensor):
        teacher_logits = [teacher_logits]
    return soft_cross_entropy(student_logits, ensemble_probs(teacher_logits, weights))


def pskd_alpha(epoch: int, num_epochs: int, alpha_T: float = 0.8) -> float:
    """PS-KD's linear schedule ``alpha_T * (epoch + 1) / num_epochs`` for 0-based ``epoch``."""
    if num_epochs <= 0:
        raise ValueError(f"pskd_alpha: num_epochs must be positive, got {num_epochs}")
    if not 0 <= epoch < num_epochs:
        raise ValueError(f"pskd_alpha: epoch {epoch} is outside [0, {num_epochs})")
    if not 0.0 <= alpha_T <= 1.0:
        raise ValueError(f"pskd_alpha: alpha_T must be in [0, 1], got {alpha_T}")
    return alpha_T * (epoch + 1) / num_epochs


def pskd_targets(labels: torch.Tensor, prev_probs: torch.Tensor, alpha: float, num_classes: int) -> torch.Tensor:
    """``(1 - alpha) * onehot(labels) + alpha * prev_probs``, detached."""
    if prev_probs.shape != (labels.shape[0], num_classes):
        raise ValueError(
            f"pskd_targets: prev_probs has shape {tuple(prev_probs.shape)}, expected ({labels.shape[0]}, {num_classes})"
        )
    onehot = F.one_hot(labels.long(), num_classes).float()
    return ((1.0 - alpha) * onehot + alpha * _f32(prev_probs)).detach()


def bake_targets(
    features: torch.Tensor, logits: torch.Tensor, omega: float = 0.5, temperature: float = 4.0
) -> torch.Tensor:
    """BAKE's propagated soft targets ``Q = (1 - w) (I - w A)^-1 softmax(z / T)``.

    ``A`` is the row softmax of the cosine affinities of the batch's pooled
    features with the diagonal masked out (no temperature on the affinity).
    Computed in float32 and detached.
    """
    if not 0.0 <= omega < 1.0:
        raise ValueError(f"bake_targets: omega must be in [0, 1), got {omega}")
    if features.shape[0] != logits.shape[0]:
        raise ValueError(f"bake_targets: {features.shape[0]} feature rows but {logits.shape[0]} logit rows")
    n = logits.shape[0]
    with torch.no_grad(), _float32_region(logits):
        p = F.softmax(_f32(logits) / temperature, dim=-1)
        if n < 2 or omega == 0.0:
            return p
        f = F.normalize(_f32(features).flatten(1), dim=1)
        eye = torch.eye(n, device=f.device, dtype=f.dtype)
        affinity = F.softmax(f @ f.t() - 1e9 * eye, dim=1)
        return (1.0 - omega) * torch.linalg.solve(eye - omega * affinity, p)


def normalize_factor(x: torch.Tensor) -> torch.Tensor:
    """Flatten each sample (C*H*W) and scale it to unit L2 norm (Factor Transfer's phi)."""
    return F.normalize(_f32(x).flatten(1), dim=1)


def feed_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """FEED: ``sum_n mean |phi(s_n) - phi(t_n)|`` over teachers, teacher maps detached.

    ``student_maps[n]`` is the student's map already transformed for teacher ``n``
    and with the teacher map's shape.
    """
    if len(student_maps) != len(teacher_maps) or len(student_maps) == 0:
        raise ValueError(
            f"feed_loss: need one transformed student map per teacher, got {len(student_maps)} and {len(teacher_maps)}"
        )
    total = None
    with _float32_region(student_maps[0]):
        for n, (s, t) in enumerate(zip(student_maps, teacher_maps)):
            if s.shape != t.shape:
                raise ValueError(
                    f"feed_loss: teacher {n} map {tuple(t.shape)} and transformed student map {tuple(s.shape)} differ"
                )
            term = (normalize_factor(s) - normalize_factor(t.detach())).abs().mean()
            total = term if total is None else total + term
    return total


FEATURE_DISTANCES = ("cosine", "mse", "smooth_l1")


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, distance: str = "cosine",
                              beta: float = 1.0) -> torch.Tensor:
    """A distance between projected student features and a teacher's, averaged over every feature vector.

    ``student`` and ``teacher`` have the same shape, ``[N, D]`` (pooled) or ``[N, L, D]`` (a spatial map as
    tokens); the last axis is the feature.  ``cosine``: mean of ``1 - cos(s, t)`` per vector (scale-free, so a
    teacher's large embedding norms do not dominate); ``mse``: mean squared error per element; ``smooth_l1``:
    Huber with threshold ``beta`` per element.  The teacher is a constant.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"feature_distillation_loss: student features {tuple(student.shape)} and teacher features "
                         f"{tuple(teacher.shape)} differ; project the student's to the teacher's size first")
    if distance not in FEATURE_DISTANCES:
        raise ValueError(f"feature_distillation_loss: distance must be one of {FEATURE_DISTANCES}, got {distance!r}")
    with _float32_region(student):
        s, t = _f32(student), _f32(teacher).detach()
        if distance == "cosine":
            return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
        if distance == "mse":
            return F.mse_loss(s, t)
        return F.smooth_l1_loss(s, t, beta=beta)


def split_gaussian(outputs: torch.Tensor):
    """``(mean, log_var)`` from a head with ``2 * K`` outputs: the first ``K`` are means, the last ``K`` log-variances."""
    if outputs.dim() != 2 or outputs.shape[-1] % 2:
        raise ValueError(
            f"a Gaussian head outputs [N, 2K] (K means then K log-variances), got shape {tuple(outputs.shape)}; "
            "create the model with num_classes = 2 * number of targets"
        )
    mean, log_var = _f32(outputs).chunk(2, dim=-1)
    return mean, log_var


def gaussian_kl(mean_p: torch.Tensor, log_var_p: torch.Tensor, mean_q: torch.Tensor,
                log_var_q: torch.Tensor) -> torch.Tensor:
    """Closed-form ``KL(N(mean_p, var_p) || N(mean_q, var_q))`` per element, in float32 (no reduction).

    ``0.5 * (log var_q - log var_p + (var_p + (mean_p - mean_q)^2) / var_q - 1)``.  Not symmetric:
    distillation puts the teacher in ``p`` and the student in ``q``, as with the categorical KL.
    """
    shapes = {tuple(t.shape) for t in (mean_p, log_var_p, mean_q, log_var_q)}
    if len(shapes) != 1:
        raise ValueError(f"gaussian_kl: means and log-variances must share one shape, got {sorted(shapes)}")
    with _float32_region(mean_q):
        mp, lp, mq, lq = (_f32(t) for t in (mean_p, log_var_p, mean_q, log_var_q))
        # var_p / var_q as exp(lp - lq): exactly 1, so the KL exactly 0, for identical Gaussians
        return 0.5 * (lq - lp + torch.exp(lp - lq) + (mp - mq) ** 2 * torch.exp(-lq) - 1.0)


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-element negative log-likelihood of ``target`` under ``N(mean, exp(log_var))``, in float32."""
    if mean.shape != log_var.shape or mean.shape != target.shape:
        raise ValueError(f"gaussian_nll: mean {tuple(mean.shape)}, log_var {tuple(log_var.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape")
    with _float32_region(mean):
        m, lv, y = _f32(mean), _f32(log_var), _f32(target)
        return 0.5 * (lv + (y - m) ** 2 * torch.exp(-lv) + math.log(2 * math.pi))
