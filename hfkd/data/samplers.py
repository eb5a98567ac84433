"""Batch samplers that shape what a batch holds (BAKE's class-aware batches), and the rest of an epoch.

Works with Accelerate: the trainer passes the sampler as ``batch_sampler=`` to
the ``DataLoader`` and ``accelerator.prepare`` wraps it in a ``BatchSamplerShard``
that hands whole batches round-robin to the processes, so every process gets
full class-aware batches of ``batch_size`` and no two processes share a batch.
All batches have exactly ``batch_size`` indices (the last one wraps around the
epoch's anchor permutation) so the shard never pads with a partial batch.

Epoch handling: ``set_epoch(epoch)`` reseeds the draw.  Accelerate's
``DataLoaderShard.set_epoch`` calls it directly in one process, but in several
processes the sampler sits inside ``BatchSamplerShard`` where accelerate 1.x
does not forward ``set_epoch`` (it only looks for ``.batch_sampler.sampler``);
``DistillationTrainer`` then calls ``set_epoch`` on the inner sampler itself, so a
method only returns the sampler.
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["ClassAwareBatchSampler", "RemainingEpochBatchSampler", "epoch_order", "seedable_sampler"]


class ClassAwareBatchSampler(Sampler[List[int]]):
    """Batches of ``batch_size // (M + 1)`` anchors, each followed by ``M`` other images of its class.

    BAKE's intra-class sampling (Ge et al. 2021; docs/methods.md, "BAKE"):

    * every training image is an anchor exactly once per epoch (a random permutation), so an epoch
      has ``ceil(N / anchors_per_batch)`` batches and shows ``(M + 1)`` times as many images as a
      plain epoch at the same batch size;
    * each anchor's ``M`` partners are drawn from the other images of its class without replacement
      when the class has at least ``M`` others, with replacement otherwise; an image alone in its
      class is its own partner;
    * a batch is ``[a_1, p_11..p_1M, a_2, p_21..p_2M, ...]``: each group is contiguous, so a slice of
      the batch at a multiple of ``M + 1`` (``split_batches``) keeps the groups whole.

    The draw depends only on ``(seed, epoch)``: the same on every process and on resume.

    Args:
        labels: the class of each training row, in dataset order.
        batch_size: images per batch (per process), a multiple of ``intra_class_images + 1``.
        intra_class_images: ``M``, partners per anchor (``M = 0`` gives plain shuffled batches).
        seed: base seed of the draw.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, intra_class_images: int = 1, seed: int = 0):
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ValueError("ClassAwareBatchSampler needs a non-empty 1-D sequence of labels")
        self.batch_size = int(batch_size)
        self.intra_class_images = int(intra_class_images)
        if self.intra_class_images < 0:
            raise ValueError(f"intra_class_images must be >= 0, got {intra_class_images}")
        group = self.intra_class_images + 1
        if self.batch_size < group or self.batch_size % group:
            raise ValueError(
                f"batch size {batch_size} must be a positive multiple of intra_class_images + 1 = {group} "
                f"(each anchor comes with {self.intra_class_images} partners); use e.g. batch size "
                f"{max(group, self.batch_size // group * group)}"
            )
        self.anchors_per_batch = self.batch_size // group
        self.seed = int(seed)
        self.epoch = 0
        self.drop_last = False  # read by accelerate's BatchSamplerShard: every batch is full anyway
        order = np.argsort(self.labels, kind="stable")
        classes, starts = np.unique(self.labels[order], return_index=True)
        bounds = list(starts) + [len(order)]
        self._members: Dict[int, np.ndarray] = {int(c): order[bounds[i]:bounds[i + 1]] for i, c in enumerate(classes)}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.anchors_per_batch)

    def _partners(self, rng: np.random.Generator, anchor: int) -> np.ndarray:
        members = self._members[int(self.labels[anchor])]
        others = members[members != anchor]
        m = self.intra_class_images
        if len(others) == 0:
            return np.full(m, anchor, dtype=np.int64)
        return rng.choice(others, size=m, replace=len(others) < m)

    def __iter__(self) -> Iterator[List[int]]:
        # A generator seeded from (seed, epoch) only: independent of the global RNG and of the process.
        rng = np.random.default_rng([self.seed, self.epoch])
        permutation = rng.permutation(len(self.labels))
        num_batches = len(self)
        # Wrap around so that the last batch is full as well.
        anchors = np.resize(permutation, num_batches * self.anchors_per_batch).reshape(num_batches, -1)
        for batch_anchors in anchors:
            batch: List[int] = []
            for a in batch_anchors:
                batch.append(int(a))
                if self.intra_class_images:
                    batch.extend(int(p) for p in self._partners(rng, int(a)))
            yield batch


def seedable_sampler(loader):
    """The sampler of a prepared loader whose order ``set_epoch`` fixes (Accelerate's seedable sampler), or ``None``.

    One process: ``DataLoaderShard -> BatchSampler -> sampler``; several: ``-> BatchSamplerShard -> BatchSampler
    -> sampler``.  A method's own batch sampler has no such sampler.
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    for holder in (batch_sampler, getattr(batch_sampler, "batch_sampler", None)):
        sampler = getattr(holder, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch") and hasattr(sampler, "initial_seed"):
            return sampler
    return None


def epoch_order(sampler, epoch: int) -> List[int]:
    """The global order of the dataset's indices in ``epoch``: the same on every process and world size.

    Accelerate's seedable sampler reseeds its generator from ``initial_seed + epoch`` at each pass and
    then moves its own epoch on; the epoch it had is put back so that the loader is left as it was.
    """
    saved = sampler.epoch
    sampler.set_epoch(epoch)
    try:
        return [int(i) for i in sampler]
    finally:
        sampler.set_epoch(saved)


class RemainingEpochBatchSampler(Sampler[List[int]]):
    """This process's batches of the rest of an epoch, from sample ``start`` of its global ``order``.

    The global order is cut into steps of ``batch_size * num_processes`` samples, each process taking
    its ``batch_size`` slice, the layout of Accelerate's ``BatchSamplerShard``; it lets a run resumed on
    another number of processes continue at the exact sample where the checkpoint stopped.  The last,
    incomplete step is split as evenly as the processes allow (none is padded with repeated samples,
    unlike Accelerate's ``even_batches``), or dropped with ``drop_last``.  Only when it holds fewer
    samples than there are processes does a process without one repeat the last sample: every process
    must take part in every step (DDP).
    """

    def __init__(self, order: Sequence[int], start: int, batch_size: int, num_processes: int = 1,
                 process_index: int = 0, drop_last: bool = False):
        if not 0 <= start <= len(order):
            raise ValueError(f"start={start} is outside the epoch's {len(order)} samples")
        self.remaining = list(order[start:])
        self.batch_size, self.num_processes, self.process_index = int(batch_size), int(num_processes), int(process_index)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        step = self.batch_size * self.num_processes
        full, rest = divmod(len(self.remaining), step)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[List[int]]:
        step, b, r = self.batch_size * self.num_processes, self.batch_size, self.process_index
        for begin in range(0, len(self.remaining), step):
            chunk = self.remaining[begin:begin + step]
            if len(chunk) == step:
                yield chunk[r * b:(r + 1) * b]
            elif not self.drop_last:
                base, extra = divmod(len(chunk), self.num_processes)
                lo = r * base + min(r, extra)
                mine = chunk[lo:lo + base + (1 if r < extra else 0)]
                yield mine or chunk[-1:]
