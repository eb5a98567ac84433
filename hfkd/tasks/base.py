"""The task protocol, and classification: integer labels, cross-entropy, top-1 / top-5."""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from datasets import ClassLabel

from ..data import checks
from ..data.transforms import ImageClassificationDataset
from ..losses import ensemble_probs
from .evaluation import evaluate_logits


class Task:
    """How targets are read, supervised and evaluated.  Subclasses set ``name`` and override the hooks."""

    name: ClassVar[str] = ""
    #: the metric that sums a run up (``eval_<main_metric>``)
    main_metric: ClassVar[str] = "accuracy"
    #: whether every run needs targets in the train split (else a method that reads none trains on images alone)
    requires_labels: ClassVar[bool] = True
    dataset_class = ImageClassificationDataset

    def check_targets(self, student, dataset, eval_dataset, image_column: str, label_column: Optional[str],
                      eval_label_column: Optional[str] = None) -> Optional[List[str]]:
        """Check the datasets' images and targets against ``student`` before training; return label names (or None).

        ``label_column`` / ``eval_label_column`` are ``None`` for a split without labels.
        """
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
    requires_labels = False  # distillation from teachers' soft labels needs no ground truth

    def check_targets(self, student, dataset, eval_dataset, image_column, label_column, eval_label_column=None):
        """Images readable, labels in ``[0, num_classes)``, the student's classes and names the dataset's.

        A student without label names takes the dataset's.  A split without labels (``None`` column) has only its
        images checked; the student's classes are then its own (from ``label_names``, ``--label_names``).
        """
        checks.check_image_column(dataset, image_column, "train")
        names = None
        if label_column is not None:
            feature = dataset.features[label_column]
            names = list(feature.names) if isinstance(feature, ClassLabel) else None
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
            checks.check_image_column(eval_dataset, image_column, "eval")
            if eval_label_column is not None:
                checks.check_labels(eval_dataset, eval_label_column, "eval", student.num_classes)
                known = names if label_column is not None else student.label_names
                checks.check_eval_label_names(known, eval_dataset, eval_label_column)
        return names if label_column is not None else student.label_names

    def supervised_loss(self, outputs, labels, label_smoothing: float = 0.0):
        return F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)

    def evaluate(self, accelerator, dataloader, predict, prefix: str = "eval"):
        return evaluate_logits(accelerator, dataloader, predict, prefix)

    def ensemble(self, outputs, weights=None):
        return ensemble_probs(list(outputs), weights).log()
