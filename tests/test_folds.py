"""hfkd.data.folds: stratified k-fold over every image, and the per-class labelled subsets of a fold."""
import numpy as np
import pytest

from hfkd.data.default import _digits_arrays
from hfkd.data.folds import fold_train_indices, per_class_subset, stratified_kfold


def test_digits_five_folds_cover_every_image_once_and_are_stratified():
    _, labels = _digits_arrays()
    folds = stratified_kfold(labels, 5, seed=0)
    together = np.concatenate(folds)
    assert len(labels) == 1797 and sorted(together.tolist()) == list(range(1797))  # each image in one fold
    assert sorted(len(f) for f in folds) == [359, 359, 359, 360, 360]
    for c in range(10):
        per_fold = [int((labels[f] == c).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    for i, f in enumerate(folds):
        train = fold_train_indices(folds, i)
        assert len(train) + len(f) == 1797 and not set(train.tolist()) & set(f.tolist())


def test_folds_are_a_function_of_the_seed():
    _, labels = _digits_arrays()
    a, b = stratified_kfold(labels, 5, seed=3), stratified_kfold(labels, 5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = stratified_kfold(labels, 5, seed=4)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_a_class_smaller_than_k_is_refused_by_name():
    labels = [0] * 10 + [1] * 2
    with pytest.raises(ValueError, match=r"at least 5 images of every class.*\{1: 2\}"):
        stratified_kfold(labels, 5, seed=0)
    with pytest.raises(ValueError, match="k >= 2"):
        stratified_kfold(labels, 1, seed=0)


def test_per_class_subset_draws_from_the_given_indices_only():
    _, labels = _digits_arrays()
    folds = stratified_kfold(labels, 5, seed=1)
    train = fold_train_indices(folds, 2)
    subset = per_class_subset(labels, train, 20, seed=1)
    assert set(subset.tolist()) <= set(train.tolist())
    assert np.bincount(labels[subset], minlength=10).tolist() == [20] * 10
    assert np.array_equal(subset, per_class_subset(labels, train, 20, seed=1))
    assert not np.array_equal(subset, per_class_subset(labels, train, 20, seed=2))
    # a class with fewer images than asked gives all of them
    assert len(per_class_subset([0, 0, 0, 1], [0, 1, 2, 3], 2, seed=0)) == 3
