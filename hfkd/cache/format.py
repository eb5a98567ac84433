"""What a teacher cache stores: its metadata, its columns, and top-k storage with FKD's recovery.

A cache is a folder of Arrow IPC stream files (``data/``, memory-mapped on load, no pickle; the format
``datasets`` writes) plus ``hfkd_cache.json`` (:class:`CacheMetadata`), whose manifest lists every data file.
Format 3 writes size-capped shards straight into ``data/`` (in subfolders when there are more than
``MAX_FILES_PER_FOLDER``; :func:`shard_path`); format 2 was one ``Dataset.save_to_disk`` folder, still read.
One row per
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

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence

import logging

import numpy as np
import torch

from ..data.augment import AugmentConfig
from ..files import manifest_problems
from ..models.config_check import MAX_NUM_CLASSES
from ..models.preprocess import PreprocessConfig
from ..settings import shorten

logger = logging.getLogger(__name__)

CACHE_METADATA_FILE = "hfkd_cache.json"
# 1: the first format.  2: ``files``, the manifest of the cache's data files (size and sha256, any number of
# shards), and the split's identity beyond the sampled fingerprint (``dataset_fingerprint``, ``images_sha256``).
# 3: the data files are size-capped Arrow streams under data/ (subfolders past MAX_FILES_PER_FOLDER), read by
# the manifest, not datasets' save_to_disk folder (state.json, dataset_info.json), which hfkd 2 cannot read.
# 4: a cache of a stream, keyed by sample key (``sample_key_columns``; the ``index`` column holds each sample's
# 63-bit key id, hfkd.data.stream.key_id).  Caches of a map-style split are still written as format 3, so that
# an older hfkd keeps reading them; an older hfkd refuses a format 4 cache ("written by a newer hfkd") instead
# of misreading its key ids as row numbers.
FORMAT_VERSION = 4
#: the first format whose data files are size-capped shards under ``data/``, read through the manifest
SHARDED_FORMAT = 3
#: the format of a cache keyed by sample key (a streamed split's)
KEYED_FORMAT = 4
DATA_FOLDER = "data"
# The Hub takes fewer than 10,000 entries per folder: past that, shards go into numbered subfolders.
MAX_FILES_PER_FOLDER = 9_999
# Caches up to this size are also hashed on every open (sha256 reads them at several hundred MB/s: well under a
# second); larger ones get the size check on open and the full one after a download or with hfkd cache --verify.
HASH_ON_OPEN_BYTES = 256 * 2 ** 20
# Not in the manifest: the metadata file that holds it, and the card, which is re-rendered when pushed.
UNLISTED_FILES = (CACHE_METADATA_FILE, "README.md")
_REFETCH = ("generate it again (hfkd cache), or for a Hub cache download it again "
            "(huggingface_hub.snapshot_download(ID, repo_type='dataset', force_download=True))")
STORAGE_DTYPES = ("float32", "float16")
# Rows hashed for the train split's fingerprint: spread over the split, bounded so that
# checking a cache never reads a whole ImageNet.
_FINGERPRINT_ROWS = 64


class TeacherCacheError(ValueError):
    """A teacher cache that cannot be used as it is: the message names the cache, the file and the fix."""


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
    format_version: int = SHARDED_FORMAT  # KEYED_FORMAT for a cache of a stream
    # The data files ({relative path: {"size", "sha256"}}, hfkd.files.file_manifest); None in format 1 caches.
    files: Optional[Dict[str, Dict[str, Any]]] = None
    # ``datasets``' own fingerprint of the split (covers every data file and transform), and on request
    # (hash_images=True) a hash of every label and image's stored bytes.
    dataset_fingerprint: Optional[str] = None
    images_sha256: Optional[str] = None
    # A cache of a stream (format 4): the columns its sample keys are made of (rows carry key ids, not row
    # numbers), and the stream's data files by name with their sizes (``hfkd.data.stream.shard_files``).
    sample_key_columns: Optional[List[str]] = None
    stream_files: Optional[Dict[str, int]] = None

    @property
    def keyed(self) -> bool:
        """Rows are stored by sample key (a streamed split's cache), not by row of a map-style split."""
        return self.sample_key_columns is not None

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
    def load(cls, folder: str, source: Optional[str] = None) -> "CacheMetadata":
        """Read and check ``hfkd_cache.json``; ``source`` (a Hub id) names the cache in messages."""
        path = os.path.join(folder, CACHE_METADATA_FILE)
        where = f"the teacher cache {source or folder}"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} is not an hfkd teacher cache: it has no {CACHE_METADATA_FILE}; "
                                    "make one with hfkd.cache_teacher_outputs or recipes/cache_teachers.py")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except ValueError as e:  # JSONDecodeError, bad UTF-8: a truncated or edited file
            raise TeacherCacheError(f"{where}: {path} is damaged (not valid JSON: {e}); {_REFETCH}") from e
        if not isinstance(raw, dict):
            raise TeacherCacheError(f"{where}: {path} must hold a JSON object, got {shorten(raw)}; {_REFETCH}")
        version = raw.get("format_version", 1)
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise TeacherCacheError(f"{where} was written by a newer hfkd (cache format {version}, this hfkd reads "
                                    f"up to {FORMAT_VERSION}); upgrade hfkd to read it")
        problems = metadata_problems(raw)
        if problems:
            raise TeacherCacheError(f"{where}: {path} is damaged or was edited: " + "; ".join(problems[:5])
                                    + f". {_REFETCH[0].upper()}{_REFETCH[1:]}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def metadata_problems(raw: Dict[str, Any]) -> List[str]:
    """What is wrong with the fields of an ``hfkd_cache.json`` (missing, wrong type, out of range), by name.

    Why: every size here shapes the stored columns (``[rows, teachers, classes]``) and the views; a wrong one
    otherwise surfaces as ``TypeError`` or ``shape '[200, 2, 10]' is invalid`` in the middle of training.
    """
    required = [f.name for f in fields(CacheMetadata) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in raw]
    if missing:
        return [f"it lacks {', '.join(missing)}"]
    problems = []

    def want(name, ok, what):
        if not ok:
            problems.append(f"{name} must be {what}, got {shorten(raw.get(name), 80)}")

    for name, low, high in (("num_classes", 1, MAX_NUM_CLASSES), ("num_samples", 1, 10 ** 12),
                            ("num_views", 1, 10 ** 6), ("format_version", 1, FORMAT_VERSION)):
        value = raw.get(name, 1)
        want(name, _is_int(value) and low <= value <= high, f"an integer from {low} to {high:,}")
    want("seed", _is_int(raw["seed"]), "an integer")
    classes = raw["num_classes"] if _is_int(raw["num_classes"]) else None
    top_k = raw.get("top_k")
    want("top_k", top_k is None or _is_int(top_k) and 1 <= top_k <= (classes or MAX_NUM_CLASSES),
         "null (full logits) or an integer from 1 to num_classes")
    want("dtype", raw.get("dtype", "float32") in STORAGE_DTYPES, f"one of {STORAGE_DTYPES}")
    want("ensembled", isinstance(raw.get("ensembled", False), bool), "true or false")
    teachers = raw["teachers"]
    want("teachers", isinstance(teachers, list) and teachers and
         all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in teachers),
         "a non-empty list of teachers, each with a name")
    names = raw.get("label_names")
    want("label_names", names is None or isinstance(names, list) and (classes is None or len(names) == classes),
         "null or one name per class")
    for name in ("train_fingerprint",):
        want(name, isinstance(raw[name], str), "a string")
    for name in ("dataset_fingerprint", "images_sha256"):
        want(name, raw.get(name) is None or isinstance(raw.get(name), str), "null or a string")
    files = raw.get("files")
    want("files", files is None or isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and _is_int(v.get("size")) and v["size"] >= 0
        and isinstance(v.get("sha256"), str) for k, v in files.items()),
        "null or {path: {size, sha256}}")
    if _is_int(raw.get("format_version")) and raw["format_version"] >= SHARDED_FORMAT:
        want("files", isinstance(files, dict) and files and all(_safe_shard_path(k) for k in files),
             f"the cache's Arrow shards, relative paths under {DATA_FOLDER}/ ending in .arrow")
    keys = raw.get("sample_key_columns")
    want("sample_key_columns", keys is None or isinstance(keys, list) and keys and
         all(isinstance(k, str) for k in keys), "null (a map-style split's cache) or a list of column names")
    if keys is not None:
        want("format_version", raw.get("format_version") == KEYED_FORMAT,
             f"{KEYED_FORMAT} for a cache keyed by sample key")
    stream_files = raw.get("stream_files")
    want("stream_files", stream_files is None or isinstance(stream_files, dict) and all(
        isinstance(k, str) and _is_int(v) and v >= 0 for k, v in stream_files.items()), "null or {file name: size}")
    for name, build in (("student_preprocess", PreprocessConfig.from_dict),
                        ("augmentation", lambda a: a is None or AugmentConfig(**a))):
        try:
            build(raw[name])
        except (TypeError, ValueError, AttributeError) as e:
            problems.append(f"{name} is not a valid setting ({shorten(str(e), 120)})")
    return problems


# -- the files -------------------------------------------------------------------------------------
def _safe_shard_path(rel: Any) -> bool:
    """A manifest entry of a sharded cache: ``data/.../NAME.arrow``, never leaving the cache's folder."""
    if not isinstance(rel, str) or "\\" in rel or rel.startswith("/"):
        return False
    parts = rel.split("/")
    return parts[0] == DATA_FOLDER and len(parts) > 1 and rel.endswith(".arrow") and \
        all(p not in ("", ".", "..") for p in parts)


def shard_path(number: int, count: int, per_folder: Optional[int] = None) -> str:
    """The relative path of shard ``number`` of ``count``: ``data/data-00012-of-00040.arrow`` (``datasets``' naming),
    in nested numbered subfolders when ``count`` exceeds ``per_folder`` (``MAX_FILES_PER_FOLDER``), so that no
    folder holds more than ``per_folder`` entries (the Hub's limit)."""
    per_folder = per_folder or MAX_FILES_PER_FOLDER
    width = max(5, len(str(count)))
    levels = 0
    while per_folder ** (levels + 1) < count:
        levels += 1
    folders = [f"{number // per_folder ** level % per_folder:05d}" for level in range(levels, 0, -1)]
    return "/".join([DATA_FOLDER, *folders, f"data-{number:0{width}d}-of-{count:0{width}d}.arrow"])


def read_rows_table(folder: str, metadata: CacheMetadata):
    """Every stored row as one memory-mapped ``pyarrow.Table`` (one chunk per shard, rows in any order).

    Format 3: the manifest's Arrow streams, each mapped and its descriptor closed (the mapping stays: a cache of
    thousands of shards opens no more files than one).  Formats 1 and 2: ``datasets``' ``save_to_disk`` folder.
    """
    import pyarrow as pa

    if metadata.format_version < SHARDED_FORMAT:
        from datasets import load_from_disk

        return load_from_disk(folder).data.table
    tables = []
    for rel in sorted(metadata.files):
        with pa.memory_map(os.path.join(folder, rel)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables)


def manifest_bytes(metadata: CacheMetadata) -> int:
    return sum(int(f["size"]) for f in (metadata.files or {}).values())


def check_files(folder: str, metadata: CacheMetadata, where: str, content: bool = False,
                only: Optional[Sequence[str]] = None) -> None:
    """Compare the cache's files with its manifest: sizes (cheap, every open), or sizes and sha256 (``content``).

    ``only`` limits the check to these relative paths (the files a download has just fetched).
    A cache without a manifest (format 1) is refused when ``content`` is asked, else warned about.
    """
    if metadata.files is None:
        if content:
            raise TeacherCacheError(f"{where} has no manifest of its files (cache format {metadata.format_version}, "
                                    "written by an older hfkd): it cannot be verified. Generate it again to get one")
        logger.warning("%s has no manifest of its files (cache format %s, written by an older hfkd): its files "
                       "cannot be checked; generate it again to get one", where, metadata.format_version)
        return
    manifest = metadata.files if only is None else {k: v for k, v in metadata.files.items() if k in set(only)}
    problems = manifest_problems(folder, manifest, content=content)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        located = where if folder in where else f"{where} ({folder})"
        raise TeacherCacheError(f"{located} is damaged: " + "; ".join(problems[:5]) + more +
                                f". Do not train from it: {_REFETCH}")


def augmentation_dict(augment) -> Optional[Dict[str, Any]]:
    """An ``AugmentConfig`` as JSON-comparable data (tuples as lists); ``None`` for no augmentation."""
    if augment is None:
        return None
    return json.loads(json.dumps(asdict(augment)))


def dataset_fingerprint(dataset, image_column: str, label_column: Optional[str]) -> str:
    """A fingerprint of a training split: its size, all labels and the bytes of up to 64 images spread over it.

    Computed from the data (not ``datasets``' own fingerprint, which is random for in-memory splits),
    so the same split loaded twice matches and another split or another order does not.
    """
    digest = hashlib.sha256()
    n = len(dataset)
    digest.update(f"{n}".encode())
    if label_column is not None:  # None: images without labels
        digest.update(np.asarray(dataset[label_column], dtype=np.int64).tobytes())
    rows = np.unique(np.linspace(0, n - 1, num=min(n, _FINGERPRINT_ROWS)).round().astype(np.int64))
    images = dataset.select_columns([image_column]).select(rows.tolist())
    for image in images[image_column]:
        if hasattr(image, "tobytes"):
            digest.update(f"{getattr(image, 'mode', '')}{getattr(image, 'size', '')}".encode())
            digest.update(image.tobytes())
        else:
            digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()


def datasets_fingerprint(dataset) -> Optional[str]:
    """``datasets``' own fingerprint of a split: derived from its data files (or, in memory, its table) and
    every transform since, so the same split loaded the same way matches and a changed file does not."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else None


def images_sha256(dataset, image_column: str, label_column: Optional[str], batch_size: int = 256) -> str:
    """A sha256 of every label and every image's stored bytes, in order (images are not decoded).

    Reads the whole split once: asked for with ``hash_images=True``, for a split whose identity must be
    proven by content (the same images loaded from another place, or a split ``datasets`` fingerprints randomly).
    """
    from datasets import Image

    digest = hashlib.sha256()
    digest.update(f"{len(dataset)}".encode())
    if label_column is not None:  # None: images without labels
        digest.update(np.asarray(dataset[label_column], dtype=np.int64).tobytes())
    images = dataset.select_columns([image_column])
    raw = isinstance(images.features[image_column], Image)
    if raw:  # the stored (encoded) bytes, not the decoded pixels: no decoding cost
        images = images.cast_column(image_column, Image(decode=False))
    for batch in images.iter(batch_size=batch_size):
        for value in batch[image_column]:
            if raw:
                data = value.get("bytes")
                if data is None:  # an image stored by path only
                    with open(value["path"], "rb") as f:
                        data = f.read()
            else:
                data = np.asarray(value).tobytes()
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
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


# The three integer key columns of a row (image index, view, seed) with Arrow's per-row overhead, measured.
KEY_BYTES_PER_VIEW = 28


def estimated_bytes_per_view(num_teachers: int, num_classes: int, top_k: Optional[int], dtype: str) -> int:
    """Bytes one stored view takes on disk, key columns included (before the cache exists: the dry run's estimate)."""
    width = np.dtype(dtype).itemsize
    per_teacher = top_k * (width + 4) + width if top_k else num_classes * width
    return KEY_BYTES_PER_VIEW + num_teachers * per_teacher


def bytes_per_view(metadata: CacheMetadata) -> int:
    """Bytes of teacher outputs per stored view (the three integer key columns excluded)."""
    width = np.dtype(metadata.dtype).itemsize
    k = metadata.num_stored_teachers
    if metadata.top_k:
        return k * (metadata.top_k * (width + 4) + width)
    return k * metadata.num_classes * width
