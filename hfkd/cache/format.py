"""What a teacher cache stores: its metadata, its columns, and top-k storage with FKD's recovery.

A cache is a folder written by ``datasets.Dataset.save_to_disk`` (Arrow shards, memory-mapped
on load, no pickle) plus ``hfkd_cache.json`` (:class:`CacheMetadata`).  One row per
``(index, view)``: ``index`` is the sample's position in the training split, ``view`` its view
id in ``[0, R)`` and ``seed`` the seed that re-creates the view through the student's seeded
training transform (``sample_seed(cache_seed, view, index)``, i.e. view ``v`` is exactly the
view an online run with the same seed sees at epoch ``v``).  The seed is the source of truth.

Teacher outputs are stored as logits so that any temperature can be applied later:

* ``full``: ``logits`` with the ``K x C`` logits of the ``K`` stored teachers;
* ``topk``: ``topk_values`` / ``topk_indices`` (``K x k``) and ``logsumexp`` (``K``).  Recovery
  is FKD's *marginal smoothing*: the top-k classes keep their probability
  ``p_c = exp(z_c - lse)`` and the remaining mass ``1 - sum_topk p_c`` is spread uniformly over
  the other ``C - k`` classes.  As logits: ``z~_c = z_c`` on the top-k and
  ``z~_c = lse + log((1 - sum_topk p) / (C - k))`` elsewhere, so ``logsumexp(z~) = lse`` and
  ``softmax(z~)`` is the smoothed distribution.

``ensembled`` caches hold one pseudo-teacher whose logits are ``log`` of the teachers' weighted
mean probabilities at T = 1 (MEAL V2's target; exact for methods that use T = 1).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

import numpy as np
import torch

CACHE_METADATA_FILE = "hfkd_cache.json"
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")
# Rows hashed for the train split's fingerprint: spread over the split, bounded so that
# checking a cache never reads a whole ImageNet.
_FINGERPRINT_ROWS = 64


@dataclass
class CacheMetadata:
    """Everything needed to decide whether a cache fits a training run (``hfkd_cache.json``)."""

    teachers: List[Dict[str, Any]]
    num_classes: int
    num_samples: int
    num_views: int
    seed: int
    student_preprocess: Dict[str, Any]
    augmentation: Optional[Dict[str, Any]]
    train_fingerprint: str
    top_k: Optional[int] = None
    dtype: str = "float32"
    ensembled: bool = False
    label_names: Optional[List[str]] = None
    dataset: Dict[str, Any] = field(default_factory=dict)
    hfkd_version: str = ""
    command: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def storage(self) -> str:
        return "topk" if self.top_k else "full"

    @property
    def num_stored_teachers(self) -> int:
        return 1 if self.ensembled else len(self.teachers)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, CACHE_METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, folder: str) -> "CacheMetadata":
        path = os.path.join(folder, CACHE_METADATA_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} is not an hfkd teacher cache: it has no {CACHE_METADATA_FILE}; "
                                    "make one with hfkd.cache_teacher_outputs or recipes/cache_teachers.py")
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{folder} was written by a newer hfkd (cache format {raw['format_version']}); "
                             "upgrade hfkd to read it")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def augmentation_dict(augment) -> Optional[Dict[str, Any]]:
    """An ``AugmentConfig`` as JSON-comparable data (tuples as lists); ``None`` for no augmentation."""
    if augment is None:
        return None
    return json.loads(json.dumps(asdict(augment)))


def dataset_fingerprint(dataset, image_column: str, label_column: str) -> str:
    """A fingerprint of a training split: its size, all labels and the bytes of up to 64 images spread over it.

    Computed from the data (not ``datasets``' own fingerprint, which is random for in-memory splits),
    so the same split loaded twice matches and another split or another order does not.
    """
    digest = hashlib.sha256()
    n = len(dataset)
    digest.update(f"{n}".encode())
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    digest.update(labels.tobytes())
    rows = np.unique(np.linspace(0, n - 1, num=min(n, _FINGERPRINT_ROWS)).round().astype(np.int64))
    images = dataset.select_columns([image_column]).select(rows.tolist())
    for image in images[image_column]:
        if hasattr(image, "tobytes"):
            digest.update(f"{getattr(image, 'mode', '')}{getattr(image, 'size', '')}".encode())
            digest.update(image.tobytes())
        else:
            digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()


# -- storage ----------------------------------------------------------------------------------------
def encode_logits(logits: torch.Tensor, top_k: Optional[int], dtype: str) -> Dict[str, np.ndarray]:
    """``[N, K, C]`` float logits -> the stored columns (each ``[N, ...]``, flattened per row)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    np_dtype = np.dtype(dtype)
    logits = logits.float()
    n = logits.shape[0]
    if not top_k:
        return {"logits": logits.reshape(n, -1).numpy().astype(np_dtype)}
    values, indices = logits.topk(int(top_k), dim=-1)
    return {"topk_values": values.reshape(n, -1).numpy().astype(np_dtype),
            "topk_indices": indices.reshape(n, -1).numpy().astype(np.int32),
            "logsumexp": torch.logsumexp(logits, dim=-1).numpy().astype(np_dtype)}


def recover_topk_logits(values: torch.Tensor, indices: torch.Tensor, lse: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """FKD's marginal smoothing as logits: top-k kept, the rest of the mass spread uniformly.

    ``values``/``indices``: ``[..., k]``; ``lse``: ``[...]``; returns ``[..., num_classes]`` float32.
    """
    values, lse = values.float(), lse.float()
    k = values.shape[-1]
    if k > num_classes:
        raise ValueError(f"top-k of {k} values for {num_classes} classes")
    kept = torch.exp(values - lse.unsqueeze(-1)).sum(-1)
    if k == num_classes:
        fill = torch.full_like(lse, float("-inf"))
    else:
        # float16 storage can round the kept mass to >= 1: keep the rest strictly positive.
        rest = (1.0 - kept).clamp_min(torch.finfo(torch.float32).tiny)
        fill = lse + torch.log(rest / (num_classes - k))
    out = fill.unsqueeze(-1).expand(*lse.shape, num_classes).clone()
    return out.scatter(-1, indices.long(), values)


def decode_logits(columns: Dict[str, torch.Tensor], num_teachers: int, num_classes: int) -> torch.Tensor:
    """The stored columns of a batch (``[B, ...]``) -> ``[B, K, C]`` float32 logits."""
    if "logits" in columns:
        logits = columns["logits"]
        return logits.float().reshape(logits.shape[0], num_teachers, num_classes)
    values = columns["topk_values"]
    b = values.shape[0]
    return recover_topk_logits(values.reshape(b, num_teachers, -1), columns["topk_indices"].reshape(b, num_teachers, -1),
                               columns["logsumexp"].reshape(b, num_teachers), num_classes)


def bytes_per_view(metadata: CacheMetadata) -> int:
    """Bytes of teacher outputs per stored view (the three integer key columns excluded)."""
    width = np.dtype(metadata.dtype).itemsize
    k = metadata.num_stored_teachers
    if metadata.top_k:
        return k * (metadata.top_k * (width + 4) + width)
    return k * metadata.num_classes * width
