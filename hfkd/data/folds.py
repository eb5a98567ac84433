"""Stratified k-fold splits and per-class subsets, for benchmarks over every image (numpy only, no torch).

A fold split is a function of the labels, ``k`` and a seed: the same seed gives the same folds on any machine
(numpy's ``default_rng``, PCG64, is stable across versions), so a benchmark records its seed and any run can be
redone on exactly its images.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ..settings import shorten


def _by_class(labels: Sequence[int]) -> Dict[int, np.ndarray]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one class index per image, got an array of shape {labels.shape}")
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def stratified_kfold(labels: Sequence[int], k: int, seed: int) -> List[np.ndarray]:
    """``k`` disjoint folds covering every index of ``labels`` once, each class spread as evenly as it can be.

    Returns each fold's (sorted) indices.  Each class's images are shuffled with ``seed`` and dealt out in turn;
    the dealing continues from class to class, so fold sizes differ by at most one image.  A class with fewer
    than ``k`` images would leave some folds without it, and is refused.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2 folds, got {k}")
    classes = _by_class(labels)
    small = {c: len(i) for c, i in classes.items() if len(i) < k}
    if small:
        raise ValueError(f"{k}-fold needs at least {k} images of every class; these have fewer (class: images): "
                         f"{shorten(small)}; use fewer folds or more images of those classes")
    rng = np.random.default_rng(seed)
    folds: List[List[int]] = [[] for _ in range(k)]
    start = 0
    for c in sorted(classes):
        for position, index in enumerate(rng.permutation(classes[c])):
            folds[(start + position) % k].append(int(index))
        start = (start + len(classes[c])) % k
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fold_train_indices(folds: Sequence[np.ndarray], fold: int) -> np.ndarray:
    """Every index outside fold ``fold``: what a model evaluated on that fold may train on."""
    return np.sort(np.concatenate([f for i, f in enumerate(folds) if i != fold]))


def per_class_subset(labels: Sequence[int], indices: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """``per_class`` of ``indices`` for every class (all of a class's when it has fewer), drawn with ``seed``.

    Returns the chosen indices, sorted.  The same arguments give the same subset, so every arm of a comparison
    trains on the same images.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    labels = np.asarray(labels)
    indices = np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, where in _by_class(labels[indices]).items():
        chosen.append(indices[rng.permutation(where)[:per_class]])
    return np.sort(np.concatenate(chosen))


__all__ = ["fold_train_indices", "per_class_subset", "stratified_kfold"]
