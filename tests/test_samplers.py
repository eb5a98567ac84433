"""ClassAwareBatchSampler: BAKE's batches of anchors with same-class partners."""
import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard

from hfkd.data.samplers import ClassAwareBatchSampler

LABELS = [i % 5 for i in range(40)]  # 5 classes of 8 images


def _groups(batch, m):
    return [batch[i:i + m + 1] for i in range(0, len(batch), m + 1)]


@pytest.mark.parametrize("m", [1, 3])
def test_batches_are_anchors_followed_by_same_class_partners(m):
    sampler = ClassAwareBatchSampler(LABELS, batch_size=4 * (m + 1), intra_class_images=m, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10  # 40 anchors, 4 per batch
    anchors = []
    for batch in batches:
        assert len(batch) == 4 * (m + 1)
        for anchor, *partners in _groups(batch, m):
            anchors.append(anchor)
            assert all(LABELS[p] == LABELS[anchor] for p in partners)
            assert anchor not in partners and len(set(partners)) == m  # 7 others >= m: no replacement
    assert sorted(anchors) == list(range(40))  # every image is an anchor exactly once per epoch


def test_last_batch_is_filled_by_wrapping_around():
    sampler = ClassAwareBatchSampler(LABELS, batch_size=6, intra_class_images=1, seed=0)  # 3 anchors a batch
    batches = list(sampler)
    assert len(batches) == 14 and all(len(b) == 6 for b in batches)
    anchors = [g[0] for b in batches for g in _groups(b, 1)]
    assert set(anchors) == set(range(40)) and len(anchors) == 42


def test_small_classes_sample_with_replacement_and_singletons_pair_with_themselves():
    labels = [0, 0, 1]  # class 0 has one other image, class 1 none
    batch = next(iter(ClassAwareBatchSampler(labels, batch_size=9, intra_class_images=2, seed=3)))
    for anchor, *partners in _groups(batch, 2):
        expected = {0: [1, 1], 1: [0, 0], 2: [2, 2]}[anchor]
        assert partners == expected


def test_deterministic_per_epoch_and_different_across_epochs():
    a = ClassAwareBatchSampler(LABELS, 8, 1, seed=7)
    b = ClassAwareBatchSampler(LABELS, 8, 1, seed=7)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and list(a) == list(a)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(ClassAwareBatchSampler(LABELS, 8, 1, seed=8)) != list(ClassAwareBatchSampler(LABELS, 8, 1, seed=7))


def test_accelerate_shards_whole_batches_without_overlap():
    sampler = ClassAwareBatchSampler(LABELS, batch_size=8, intra_class_images=1, seed=0)
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert shards[0] + shards[1] != [] and sorted(shards[0] + shards[1]) == sorted(sampler)
    # whole class-aware batches go to one rank each: no batch is shared
    assert not {tuple(b) for b in shards[0]} & {tuple(b) for b in shards[1]}
    anchors = [g[0] for shard in shards for b in shard for g in _groups(b, 1)]
    assert sorted(anchors) == list(range(40))


def test_bad_batch_size_names_the_fix():
    with pytest.raises(ValueError, match="multiple of intra_class_images"):
        ClassAwareBatchSampler(LABELS, batch_size=10, intra_class_images=3)
    with pytest.raises(ValueError, match="intra_class_images must be >= 0"):
        ClassAwareBatchSampler(LABELS, batch_size=10, intra_class_images=-1)


def test_zero_partners_is_a_plain_shuffle():
    batches = list(ClassAwareBatchSampler(LABELS, batch_size=8, intra_class_images=0, seed=1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(40))
