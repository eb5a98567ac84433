"""Dealing the K views of each decoded image over K consecutive batches (``crops_per_image`` with ``spread_crops``).

With K views per decode, a loaded batch of ``B`` rows holds ``B / K`` images, their views side by side (FKD's
layout).  On the KD demo that layout cost twenty points of accuracy at equal steps (docs/performance.md): a step
then sees a quarter of the distinct images, and an image's views, nearly the same sample, move the gradient
(and BatchNorm's batch statistics) together.  :func:`spread_views` keeps one decode per K views but regroups K
consecutive loaded batches: the i-th batch it yields holds the i-th view of every image of the group, so each step
sees as many distinct images as it has rows, as with one view per decode.  Sizes and the number of batches are
unchanged, so every count of the trainer (steps per epoch, samples into the epoch, accumulation windows) holds.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List

import torch


def deal_views(group: List[Dict[str, torch.Tensor]], k: int) -> Iterator[Dict[str, torch.Tensor]]:
    """Batches of ``group``'s sizes, in view-major order: view 0 of every image of the group, then view 1, ...

    Each loaded batch holds whole images, their ``k`` rows next to each other; a full group of ``k`` batches
    yields ``k`` batches each holding one view of every image of the group.
    """
    if len(group) == 1:
        yield group[0]
        return
    sizes = [len(b["labels"]) for b in group]
    if len(group) == k and all(size == sizes[0] and size % k == 0 for size in sizes):
        # A full group of equal batches: dealt batch v is view v of each loaded batch's images, one strided copy
        # (the same rows, in the same order, as the general path's concatenation and gather below).
        for v in range(k):
            yield {key: torch.cat([b[key][v::k] for b in group]) if isinstance(group[0][key], torch.Tensor)
                   else [value for b in group for value in b[key][v::k]] for key in group[0]}
        return
    # Tensors are concatenated; lists (gpu_decode's image bytes, which default_collate leaves as a list) are joined.
    merged = {key: torch.cat([b[key] for b in group]) if isinstance(group[0][key], torch.Tensor)
              else [value for b in group for value in b[key]] for key in group[0]}
    rows = sum(sizes)
    if rows % k:
        raise ValueError(f"a loaded batch holds {rows} rows, not whole images of {k} views each")
    # Row i * k + v is view v of image i: transposed, all images' view 0 come first.
    order = torch.arange(rows).view(rows // k, k).t().reshape(-1)
    start = 0
    for size in sizes:
        take = order[start:start + size]
        yield {key: value[take.to(value.device)] if isinstance(value, torch.Tensor)
               else [value[i] for i in take.tolist()] for key, value in merged.items()}
        start += size


def spread_views(batches: Iterable[Dict[str, torch.Tensor]], k: int, skip: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
    """``batches`` regrouped K at a time by :func:`deal_views`; the first ``skip`` dealt batches left out.

    ``batches`` must start at a group boundary: a run resumed ``s`` batches into a group reloads the group and
    skips ``s`` (the trainer's ``_epoch_batches``).  The last group of an epoch may hold fewer than ``k`` batches.
    """
    group: List[Dict[str, torch.Tensor]] = []
    dealt = 0
    for batch in batches:
        group.append(batch)
        if len(group) < k:
            continue
        for out in deal_views(group, k):
            dealt += 1
            if dealt > skip:
                yield out
        group = []
    if group:
        for out in deal_views(group, k):
            dealt += 1
            if dealt > skip:
                yield out
