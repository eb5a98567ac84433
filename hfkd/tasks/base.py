"""The task protocol, and classification: integer labels, cross-entropy, top-1 / top-5."""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from datasets import ClassLabel

from ..data import checks
from ..data.loading import find_columns
from ..data.transforms import ImageClassificationDataset
from ..losses import ensemble_probs
from .evaluation import evaluate_logits


class Task:
    """How targets are read, supervised and evaluated.  Subclasses set ``name`` and override the hooks."""

    name: ClassVar[str] = ""
    #: the metric that sums a run up (``eval_<main_metric>``)
    main_metric: ClassVar[str] = "accuracy"
    dataset_class = ImageClassificationDataset

    def check_targets(self, student, dataset, eval_dataset, image_column: str,
                      label_column: str) -> Optional[List[str]]:
        """Check the datasets' images and targets against ``student`` before training; return label names (or None)."""
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

    def check_targets(self, student, dataset, eval_dataset, image_column, label_column):
        """Images readable, labels in ``[0, num_classes)``, the student's classes and names the dataset's.

        A student without label names takes the dataset's.
        """
        feature = dataset.features[label_column]
        names = list(feature.names) if isinstance(feature, ClassLabel) else None
        checks.check_image_column(dataset, image_column, "train")
        checks.check_labels(dataset, label_column, "train", len(names) if names is not None else None)
        num = len(names) if names is not None else int(max(dataset[label_column])) + 1
        if num != student.num_classes:
            raise ValueError(
                f"the dataset has {num} classes but the student {student.name} predicts "
                f"{student.num_classes}; create it with num_classes={num}"
            )
        if names is not None:
            if student.label_names is None:
                student.set_label_names(names)
            elif list(student.label_names) != names:
                raise ValueError(
                    f"the student's label names {student.label_names[:5]}... differ from the dataset's "
                    f"{names[:5]}...; relabel the student with label_names=dataset label names"
                )
        if eval_dataset is not None:
            find_columns(eval_dataset, image_column, label_column)
            checks.check_image_column(eval_dataset, image_column, "eval")
            checks.check_labels(eval_dataset, label_column, "eval", student.num_classes)
            checks.check_eval_label_names(names, eval_dataset, label_column)
        return names

    def supervised_loss(self, outputs, labels, label_smoothing: float = 0.0):
        return F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)

    def evaluate(self, accelerator, dataloader, predict, prefix: str = "eval"):
        return evaluate_logits(accelerator, dataloader, predict, prefix)

    def ensemble(self, outputs, weights=None):
        return ensemble_probs(list(outputs), weights).log()
