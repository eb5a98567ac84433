"""The task protocol, and classification: the trainer's own behaviour, unchanged."""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..data.transforms import ImageClassificationDataset


class Task:
    """How targets are read, supervised and evaluated.  Subclasses set ``name`` and override the hooks."""

    name: ClassVar[str] = ""
    #: the metric that sums a run up (``eval_<main_metric>``) and whether higher is better (for the gap closed)
    main_metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    dataset_class = ImageClassificationDataset

    def check_targets(self, trainer, dataset, eval_dataset=None) -> Optional[List[str]]:
        """Check the datasets' images and targets against the student before training; return label names (or None)."""
        raise NotImplementedError

    def supervised_loss(self, outputs: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, accelerator, dataloader, predict, prefix: str = "eval") -> Dict[str, float]:
        raise NotImplementedError

    def ensemble(self, outputs: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
        """Several teachers' outputs as one output of the same kind (for evaluating the ensemble)."""
        raise NotImplementedError

    def options(self) -> Dict[str, Any]:
        return {}


class ClassificationTask(Task):
    name = "classification"

    def check_targets(self, trainer, dataset, eval_dataset=None):
        return trainer._check_labels(dataset, eval_dataset)

    def supervised_loss(self, outputs, labels, label_smoothing: float = 0.0):
        return F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)

    def evaluate(self, accelerator, dataloader, predict, prefix: str = "eval"):
        from ..training.evaluation import evaluate_logits  # lazy: hfkd.training imports the methods, which import tasks

        return evaluate_logits(accelerator, dataloader, predict, prefix)

    def ensemble(self, outputs, weights=None):
        from ..losses import ensemble_probs

        return ensemble_probs(list(outputs), weights).log()
