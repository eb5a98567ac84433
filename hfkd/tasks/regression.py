"""Regression with Gaussian outputs: a head gives a mean and a log-variance per target.

A model for ``K`` targets is created with ``num_classes = 2 * K``: outputs ``[:K]`` are the means and
``[K:]`` the raw log-variances (:func:`hfkd.losses.split_gaussian`), in units of ``target / target_scale``
so that a head initialised near zero starts at a sensible scale.  :meth:`RegressionTask.gaussian` bounds
the log-variance smoothly to ``[-b, b]`` (``b tanh(raw / b)``): unbounded, a fresh head can shrink a
variance until ``(y - mean)^2 / var`` explodes (the demo student's NLL reached 1e19 by step 20).
Metrics are in the target's own units.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from datasets import ClassLabel, Sequence as SequenceFeature, Value

from ..data import checks
from ..data.loading import find_columns
from ..data.transforms import ImageClassificationDataset
from ..losses import gaussian_nll, split_gaussian
from ..settings import shorten
from .base import Task


class RegressionImageDataset(ImageClassificationDataset):
    """Rows ``{"pixel_values", "labels", "index"}`` whose ``labels`` are float32 vectors of the targets."""

    def _target(self, value):
        return torch.as_tensor(value, dtype=torch.float32).reshape(-1)


class RegressionTask(Task):
    """Float targets, Gaussian NLL supervision, MAE / RMSE / NLL evaluation.

    Args:
        num_targets: ``K``, the number of regressed values per image.
        target_scale: targets are divided by it for the losses (predictions are multiplied back for the metrics).
    """

    name = "regression"
    main_metric = "mae"
    dataset_class = RegressionImageDataset

    def __init__(self, num_targets: int = 1, target_scale: float = 1.0, log_var_bound: Optional[float] = 6.0):
        if int(num_targets) < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        if not float(target_scale) > 0:
            raise ValueError(f"target_scale must be > 0, got {target_scale}")
        if log_var_bound is not None and not float(log_var_bound) > 0:
            raise ValueError(f"log_var_bound must be > 0 or None (unbounded), got {log_var_bound}")
        self.num_targets = int(num_targets)
        self.target_scale = float(target_scale)
        self.log_var_bound = float(log_var_bound) if log_var_bound is not None else None

    def options(self):
        return {"num_targets": self.num_targets, "target_scale": self.target_scale,
                "log_var_bound": self.log_var_bound}

    def gaussian(self, outputs: torch.Tensor):
        """``(mean, log_var)`` of a head's outputs, the log-variance bounded to ``[-b, b]``."""
        mean, raw = split_gaussian(outputs)
        b = self.log_var_bound
        return mean, raw if b is None else b * torch.tanh(raw / b)

    def _raw_log_var(self, log_var: torch.Tensor) -> torch.Tensor:
        """The head output whose :meth:`gaussian` log-variance is ``log_var`` (clipped into the bound)."""
        b = self.log_var_bound
        return log_var if b is None else b * torch.atanh((log_var / b).clamp(-1 + 1e-6, 1 - 1e-6))

    def check_targets(self, student, dataset, eval_dataset, image_column, label_column, eval_label_column=None):
        # The images are checked as for classification; the targets are floats, so the class-label checks
        # (integer labels in [0, num_classes)) do not apply: the column must be numeric instead.
        checks.check_image_column(dataset, image_column, "train")
        if label_column is None:
            raise ValueError(f"a regression run needs a numeric target column; the train split has none (its "
                             f"columns: {shorten(list(dataset.features))}). Name it with label_column=... (--label_column)")
        self._check_numeric(dataset, label_column)
        if eval_dataset is not None:
            find_columns(eval_dataset, image_column, label_column)
            checks.check_image_column(eval_dataset, image_column, "eval")
            self._check_numeric(eval_dataset, label_column)
        if student.num_classes != 2 * self.num_targets:
            raise ValueError(
                f"a Gaussian regression head for {self.num_targets} target(s) has {2 * self.num_targets} outputs "
                f"(means, then log-variances) but the student {student.name} has "
                f"{student.num_classes}; create it with num_classes={2 * self.num_targets}")
        return None

    @staticmethod
    def _check_numeric(dataset, column: str) -> None:
        feature = dataset.features[column]
        numeric = isinstance(feature, Value) and (feature.dtype.startswith("float") or feature.dtype.startswith("int"))
        if isinstance(feature, SequenceFeature):
            numeric = isinstance(feature.feature, Value) and feature.feature.dtype.startswith("float")
        if isinstance(feature, ClassLabel) or not numeric:
            raise ValueError(f"a regression run needs a numeric target column; {column!r} is {feature}. "
                             "Pick the column with label_column=... or train with task='classification'")

    def scaled(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.float().reshape(labels.shape[0], -1) / self.target_scale

    def supervised_loss(self, outputs, labels, label_smoothing: float = 0.0):
        if label_smoothing:
            raise ValueError("label_smoothing has no meaning for regression; leave it at 0")
        mean, log_var = self.gaussian(outputs)
        return gaussian_nll(mean, log_var, self.scaled(labels)).mean()

    @torch.no_grad()
    def evaluate(self, accelerator, dataloader, predict, prefix: str = "eval") -> Dict[str, float]:
        sums = [0.0, 0.0, 0.0, 0]
        for batch in dataloader:
            with accelerator.autocast():
                outputs = predict(batch["pixel_values"])
            outputs, labels = accelerator.gather_for_metrics((outputs.float(), batch["labels"].float()))
            sums = [a + b for a, b in zip(sums, self.error_sums(outputs, labels))]
        return self.metrics_from_sums(*sums, prefix=prefix)

    def error_sums(self, outputs: torch.Tensor, labels: torch.Tensor):
        """Sums over a batch of the absolute error, the squared error (in target units) and the Gaussian NLL (in
        scaled units), and the number of values: what :meth:`metrics_from_sums` reduces."""
        mean, log_var = self.gaussian(outputs.float())
        target = self.scaled(labels)
        error = (mean - target) * self.target_scale
        return (error.abs().sum().item(), error.pow(2).sum().item(),
                gaussian_nll(mean, log_var, target).sum().item(), error.numel())

    def metrics_from_sums(self, abs_sum: float, sq_sum: float, nll_sum: float, total: int,
                          prefix: str = "eval") -> Dict[str, float]:
        if total == 0:
            raise ValueError("the eval set is empty")
        return {f"{prefix}_mae": abs_sum / total, f"{prefix}_rmse": math.sqrt(sq_sum / total),
                f"{prefix}_loss": nll_sum / total, f"{prefix}_samples": total // self.num_targets}

    def ensemble(self, outputs: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
        """Head outputs of the Gaussian with the mean and variance of the teachers' (weighted) mixture."""
        means, log_vars = zip(*(self.gaussian(o) for o in outputs))
        w = torch.as_tensor(weights if weights is not None else [1.0] * len(outputs), dtype=torch.float32)
        w = (w / w.sum()).to(means[0].device).view(-1, 1, 1)
        m = torch.stack(means)
        mean = (w * m).sum(0)
        var = (w * (torch.stack(log_vars).exp() + (m - mean) ** 2)).sum(0)
        return torch.cat([mean, self._raw_log_var(var.log())], dim=-1)
