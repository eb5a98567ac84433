"""Train from a teacher cache: check it fits the run, replay its views, hand stored logits to the method.

The trainer calls three things (``hfkd/training/trainer.py``):

* :func:`open_teacher_cache` once, before anything is built: it opens the cache (a folder or a Hub
  dataset id) and refuses one that does not fit: other data, other student preprocessing or
  augmentation, other classes, or a method that needs more than logits;
* :meth:`TeacherCache.attach` on the wrapped training set: each epoch, image ``i`` gets one of its
  R stored views, drawn without replacement over each block of R epochs by a permutation seeded
  from ``(seed, epoch // R, i)`` (so a resumed run draws the same), and the row carries the
  stored outputs of that view (``cache_*`` fields);
* :meth:`TeacherCache.teacher_outputs` per step: the stored outputs as one ``BackboneOutput`` per
  stored teacher, in place of the teachers' forward pass.
"""
from __future__ import annotations

import bisect
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.stream import MissingSampleKey, StreamedImageDataset, describe, is_stream, key_columns, shard_files
from ..data.transforms import AugmentConfig, ImageClassificationDataset, create_image_transform, sample_seed
from ..hub.card import command_without_local_paths, local_checkpoint_name
from ..methods.base import DistillationMethod
from ..models.backbone import BackboneOutput, OutputRequest
from ..settings import shorten
from .format import (CACHE_METADATA_FILE, HASH_ON_OPEN_BYTES, CacheMetadata, TeacherCacheError, augmentation_dict,
                     check_files, dataset_fingerprint, datasets_fingerprint, decode_logits, images_sha256,
                     manifest_bytes, read_rows_table)
from .hub import resolve_cache

STORED_COLUMNS = ("logits", "topk_values", "topk_indices", "logsumexp")
BATCH_PREFIX = "cache_"


@dataclass
class CachedTeacher:
    """What a method may read of a teacher that is not there: its name and ensemble weight."""

    name: str
    weight: float = 1.0


def method_temperature(method) -> float:
    config = getattr(method, "config", None)
    return float(getattr(method, "temperature", None) or getattr(config, "temperature", None) or 1.0)


class _Columns:
    """The stored columns as NumPy views of the memory-mapped Arrow shards (no copy, no pickle)."""

    def __init__(self, folder: str, metadata: CacheMetadata, where: str):
        try:
            table = read_rows_table(folder, metadata)
        except Exception as e:  # noqa: BLE001 - pyarrow's OSError/ArrowInvalid, datasets' errors: name the cache
            raise TeacherCacheError(f"{where} ({folder}): its Arrow data cannot be read ({shorten(str(e), 300)}); "
                                    "a file is truncated or damaged. Run `hfkd cache --verify` on it to name the "
                                    "file, then generate or download the cache again") from e
        _check_layout(table, metadata, where)
        self.names = [n for n in STORED_COLUMNS if n in table.column_names]
        self.chunks: Dict[str, List[np.ndarray]] = {}
        for name in self.names:
            self.chunks[name] = [c.flatten().to_numpy(zero_copy_only=True).reshape(len(c), -1)
                                 for c in table.column(name).chunks]
        lengths = [len(c) for c in table.column(self.names[0]).chunks]
        self.starts = np.cumsum([0] + lengths[:-1]).tolist()
        index = table.column("index").to_numpy()
        view = table.column("view").to_numpy()
        self.seeds = table.column("seed").to_numpy()
        r, n = metadata.num_views, metadata.num_samples
        self.num_views, self.where = r, where
        if len(index) != n * r:
            raise TeacherCacheError(f"{where} holds {len(index)} rows, not {n} images x {r} views: it is incomplete; "
                                    "generate it again")
        self.keys: Optional[np.ndarray] = None
        if metadata.keyed:
            self._index_keys(index, view, n, r)
            return
        if len(index) and (index.min() < 0 or index.max() >= n or view.min() < 0 or view.max() >= r):
            raise TeacherCacheError(f"{where} has rows outside {n} images x {r} views (index {index.min()}..."
                                    f"{index.max()}, view {view.min()}...{view.max()}): it is damaged; generate it again")
        self.position = np.full(n * r, -1, dtype=np.int64)
        self.position[index * r + view] = np.arange(len(index))
        if (self.position < 0).any():
            raise TeacherCacheError(f"{where} misses some (index, view) rows: it is incomplete; generate it again")

    def _index_keys(self, index: np.ndarray, view: np.ndarray, n: int, r: int) -> None:
        """A cache keyed by sample key: rows sorted by (key id, view) once, looked up by binary search.

        ``self.position`` is the rows' order (8 bytes per row) and ``self.keys`` the sorted key ids (8 bytes per
        sample): 16 bytes per sample and view in all for the largest caches, far less than a dictionary's.
        """
        order = np.lexsort((view, index))  # by key id, then view
        by_key = index[order].reshape(n, r)
        views = view[order].reshape(n, r)
        bad = np.flatnonzero((views != np.arange(r)).any(axis=1) | (by_key != by_key[:, :1]).any(axis=1))
        if len(bad):
            key = int(by_key[bad[0], 0])
            raise TeacherCacheError(
                f"{self.where} does not hold exactly {r} view(s) per sample key (key id {key} has "
                f"{int((index == key).sum())} rows): the stream's key columns do not identify one sample each, or "
                "the cache is damaged; name a unique key with sample_key_column and generate the cache again")
        self.keys = np.ascontiguousarray(by_key[:, 0])
        if n > 1 and (self.keys[1:] == self.keys[:-1]).any():
            key = int(self.keys[1:][self.keys[1:] == self.keys[:-1]][0])
            raise TeacherCacheError(f"{self.where} holds sample key id {key} more than once: the stream's key columns "
                                    "do not identify one sample each; name a unique key with sample_key_column and "
                                    "generate the cache again")
        self.position = order

    def position_of(self, index: int, view: int) -> int:
        """The row of sample ``index`` (a row number, or a key id for a keyed cache) and stored ``view``."""
        r = self.num_views
        if self.keys is None:
            return int(self.position[index * r + view])
        slot = int(np.searchsorted(self.keys, index))
        if slot >= len(self.keys) or int(self.keys[slot]) != int(index):
            raise MissingSampleKey(f"it is not in {self.where}, which was generated from this stream's shards as "
                                   "they were then: a sample was added or its key changed. Generate the cache again "
                                   "from this stream (hfkd cache --streaming true), or train with the teachers "
                                   "themselves")
        return int(self.position[slot * r + view])

    def row(self, position: int) -> Dict[str, torch.Tensor]:
        chunk = bisect.bisect_right(self.starts, position) - 1
        offset = position - self.starts[chunk]
        return {BATCH_PREFIX + name: torch.from_numpy(np.array(self.chunks[name][chunk][offset]))
                for name in self.names}


def _check_layout(table, metadata: CacheMetadata, where: str) -> None:
    """The stored columns have the widths ``hfkd_cache.json`` declares (else decoding fails mid-training)."""
    k, m = metadata.num_stored_teachers, metadata
    widths = ({"topk_values": k * m.top_k, "topk_indices": k * m.top_k, "logsumexp": k} if m.top_k
              else {"logits": k * m.num_classes})
    for name in ("index", "view", "seed", *widths):
        if name not in table.column_names:
            raise TeacherCacheError(f"{where}: its Arrow data has no column {name!r} ({m.storage} storage needs "
                                    f"{sorted(widths)}): it does not match its {CACHE_METADATA_FILE}; generate it again")
    for name, width in widths.items():
        stored = getattr(table.schema.field(name).type, "list_size", 1)
        if stored != width:
            raise TeacherCacheError(
                f"{where}: column {name!r} stores {stored} values per row, but {CACHE_METADATA_FILE} declares "
                f"{k} teacher output(s) x {m.top_k or m.num_classes} {'top-k values' if m.top_k else 'classes'} "
                f"= {width}: the file was edited or belongs to another cache; generate it again")


class TeacherCache:
    """A teacher cache opened for training (see the module docstring).

    Opening checks ``hfkd_cache.json`` and the size of every file in its manifest (and their sha256 when the
    cache is at most ``HASH_ON_OPEN_BYTES``); :meth:`verify` compares every file's sha256 whatever the size.
    """

    def __init__(self, folder: str, source: Optional[str] = None, draw_seed: int = 0):
        self.folder = folder
        self.source = source or folder
        # A Hub download lives in huggingface_hub's snapshots/<commit>: the commit read, for the lineage.
        parent = os.path.dirname(os.path.normpath(folder))
        self.revision = os.path.basename(os.path.normpath(folder)) if os.path.basename(parent) == "snapshots" else None
        self.metadata = CacheMetadata.load(folder, self.source)
        # Sizes always; contents too when cheap (a same-size edit of a row is invisible to sizes).
        check_files(folder, self.metadata, self.where,
                    content=self.metadata.files is not None and manifest_bytes(self.metadata) <= HASH_ON_OPEN_BYTES)
        self.draw_seed = int(draw_seed)
        self._columns: Optional[_Columns] = None

    @property
    def where(self) -> str:
        return f"the teacher cache {self.source}"

    def verify(self) -> None:
        """Every file's size and sha256 against the manifest, and the Arrow columns against the metadata."""
        check_files(self.folder, self.metadata, self.where, content=True)
        _ = self.columns

    def __getstate__(self):  # DataLoader workers re-open the memory map instead of copying it
        return {**self.__dict__, "_columns": None}

    @property
    def columns(self) -> _Columns:
        if self._columns is None:
            self._columns = _Columns(self.folder, self.metadata, self.where)
        return self._columns

    @property
    def augment(self) -> Optional[AugmentConfig]:
        a = self.metadata.augmentation
        return None if a is None else AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})

    @property
    def teachers(self) -> List[CachedTeacher]:
        """Stand-ins for the method's context: one per stored output (one if pre-ensembled)."""
        if self.metadata.ensembled:
            return [CachedTeacher("ensemble of " + ", ".join(t["name"] for t in self.metadata.teachers))]
        return [CachedTeacher(t["name"], float(t.get("weight", 1.0))) for t in self.metadata.teachers]

    # -- the views ------------------------------------------------------------------------------
    def view_of(self, epoch: int, index: int) -> int:
        """The stored view image ``index`` is trained on at ``epoch``: without replacement within R epochs."""
        return self.views_of(epoch, index, 1)[0]

    def views_of(self, epoch: int, index: int, k: int = 1) -> List[int]:
        """The ``k`` stored views image ``index`` is trained on at ``epoch`` (``k`` views per decode, as FKD).

        ``k`` distinct views per epoch, and no view repeated within a block of ``R // k`` epochs: one permutation
        of the R views per image and block, seeded from ``(seed, block, index)``, dealt ``k`` at a time (``R % k``
        views of each block are left out when ``k`` does not divide R).  ``k = 1`` is the one-view draw.
        """
        r = self.metadata.num_views
        if not 1 <= k <= r:
            raise ValueError(f"{k} views per image, but the teacher cache stores {r} view(s) per image: "
                             f"use at most {r} views per image, or generate a cache with num_views >= {k}")
        if r == 1:
            return [0]
        epochs_per_block = r // k
        order = list(range(r))
        random.Random(sample_seed(self.draw_seed, epoch // epochs_per_block, index)).shuffle(order)
        start = (epoch % epochs_per_block) * k
        return order[start:start + k]

    def views(self, epoch: int, index: int, k: int = 1) -> List[Tuple[int, Dict[str, Any]]]:
        """Each of the ``k`` views' seed and stored outputs for the batch (:meth:`views_of`)."""
        out = []
        for view in self.views_of(epoch, index, k):
            position = self.columns.position_of(index, view)
            out.append((int(self.columns.seeds[position]), {BATCH_PREFIX + "view": view, **self.columns.row(position)}))
        return out

    def __call__(self, epoch: int, index: int) -> Tuple[int, Dict[str, Any]]:
        """The dataset's view provider: the view's seed, and its stored outputs for the batch."""
        return self.views(epoch, index, 1)[0]

    def attach(self, dataset: Union[ImageClassificationDataset, StreamedImageDataset], preprocess) -> None:
        """Make ``dataset`` replay the stored views; un-augmented caches (fixed labels) get the eval transform.

        A stream's reader looks each sample's view up by its key id (a keyed cache, :meth:`check`)."""
        augment = self.augment
        dataset.transform = create_image_transform(preprocess, augment is not None, augment)
        dataset.view_provider = self

    # -- the outputs ----------------------------------------------------------------------------
    def teacher_outputs(self, batch: Dict[str, torch.Tensor]) -> List[BackboneOutput]:
        columns = {k[len(BATCH_PREFIX):]: v for k, v in batch.items() if k.startswith(BATCH_PREFIX)}
        logits = decode_logits(columns, self.metadata.num_stored_teachers, self.metadata.num_classes)
        return [BackboneOutput(logits=logits[:, k]) for k in range(logits.shape[1])]

    def lineage(self) -> Dict[str, Any]:
        m = self.metadata
        # Published with the student: a local folder is named, not located (like local teachers).
        source = str(self.source)
        if os.path.isdir(source):
            source = local_checkpoint_name(os.path.abspath(source)) or source
        return {"source": source, "revision": self.revision, "teachers": m.teachers, "num_views": m.num_views,
                "top_k": m.top_k, "dtype": m.dtype, "ensembled": m.ensembled, "augmentation": m.augmentation,
                "train_fingerprint": m.train_fingerprint, "command": command_without_local_paths(m.command)}

    # -- fitness --------------------------------------------------------------------------------
    def check(self, method, train_dataset, image_column: str, label_column: str, student,
              augment: Optional[AugmentConfig], label_names: Optional[Sequence[str]],
              sample_key_column: Optional[str] = None) -> None:
        """Raise ``ValueError`` naming the first way this cache does not fit the run, and the fix."""
        m, where = self.metadata, f"the teacher cache {self.source}"
        if method.teacher_request != OutputRequest():
            raise ValueError(
                f"method {method.name!r} needs the teachers' {method.teacher_request} (feature maps or pooled "
                f"features), which {where} does not store (it has logits only); train it with the teachers")
        if type(method).prepare_batch is not DistillationMethod.prepare_batch:
            raise ValueError(
                f"method {method.name!r} builds new images every step (prepare_batch, e.g. mixed pairs), and the "
                f"teachers' outputs on them are in no cache ({where} holds stored views only); train it with the teachers")
        temperature = method_temperature(method)
        if m.ensembled and len(m.teachers) > 1 and temperature != 1.0:
            raise ValueError(
                f"{where} holds the teachers pre-ensembled at temperature 1, but {method.name!r} softens each "
                f"teacher at temperature {temperature}; use a per-teacher cache (ensemble=False) or temperature=1")
        try:
            method.check_teachers(m.num_stored_teachers)
        except ValueError as e:
            raise ValueError(f"{where} stores {m.num_stored_teachers} teacher output(s): {e}") from None
        if student.num_classes != m.num_classes or (label_names and m.label_names and list(label_names) != m.label_names):
            raise ValueError(f"{where} was made for {m.num_classes} classes {(m.label_names or [])[:5]}...; the student "
                             f"predicts {student.num_classes} {list(label_names or [])[:5]}...: other data")
        if is_stream(train_dataset) or m.keyed:
            self._check_stream(train_dataset, sample_key_column)
        else:
            if len(train_dataset) != m.num_samples or \
                    dataset_fingerprint(train_dataset, image_column, label_column) != m.train_fingerprint:
                raise ValueError(f"{where} was made from another training split ({m.num_samples} images, fingerprint "
                                 f"{m.train_fingerprint[:12]}); this one has {len(train_dataset)} images and other "
                                 "content or order. Generate a cache of this split (recipes/cache_teachers.py)")
            self._check_split_identity(train_dataset, image_column, label_column)
        if student.preprocess.to_dict() != m.student_preprocess:
            raise ValueError(f"{where} holds views in the preprocessing {m.student_preprocess}, but the student "
                             f"expects {student.preprocess.to_dict()}; generate the cache with this student")
        if augment is not None and augmentation_dict(augment) != m.augmentation:
            raise ValueError(f"{where} holds views augmented with {m.augmentation}, but the run asks for "
                             f"{augmentation_dict(augment)}; pass augment=None to train on the cache's views")

    def _check_stream(self, train_dataset, sample_key_column: Optional[str]) -> None:
        """A streamed run needs a cache keyed by sample key, of this stream (shards' names, sizes) and key."""
        m, where = self.metadata, self.where
        if not is_stream(train_dataset):
            raise ValueError(f"{where} was generated from a stream and stores outputs by sample key, and this run "
                             "trains on a loaded (map-style) split: train on the stream (--streaming true), or "
                             "generate a cache of the loaded split")
        if not m.keyed:
            raise ValueError(f"{where} stores outputs by row of a loaded (map-style) split, which a stream does not "
                             "have: generate a cache of the stream (hfkd cache --streaming true --dataset SHARDS), "
                             "which is keyed by sample key, or train on the split without streaming")
        keys = key_columns(train_dataset, sample_key_column)
        if keys != m.sample_key_columns:
            raise ValueError(f"{where} is keyed by the columns {shorten(m.sample_key_columns)}, and this run keys the "
                             f"stream's samples by {shorten(keys)}: use the cache's sample_key_column, or generate "
                             "the cache with this one")
        ours, theirs = shard_files(train_dataset) or {}, m.stream_files or {}
        if describe(train_dataset) != m.train_fingerprint or (m.stream_files and ours != theirs):
            # Name what differs: the shards whose name or size changed, else the stream's identity.
            changed = [f"{name} ({theirs.get(name, 'absent')} bytes then, {ours.get(name, 'absent')} now)"
                       for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]
            what = (f"{len(changed)} shard(s) differ: {shorten('; '.join(changed[:3]))}" if changed else
                    f"stream {m.train_fingerprint} then, {describe(train_dataset)} now: other shard names, columns or "
                    "number of shards")
            raise ValueError(f"{where} was generated from another stream ({what}). Generate a cache of this stream "
                             "(hfkd cache --streaming true --dataset SHARDS)")

    def _check_split_identity(self, train_dataset, image_column: str, label_column: str) -> None:
        """Beyond the 64 sampled images: every image, by content (hash_images) or by ``datasets``' fingerprint."""
        m, where = self.metadata, self.where
        if m.images_sha256:  # asked for when the cache was made: the split is proven by its bytes, wherever it lives
            if images_sha256(train_dataset, image_column, label_column) != m.images_sha256:
                raise ValueError(f"{where} was made from other images or labels than this training split (the hash of "
                                 "every image's bytes differs, though the 64 sampled ones match): an image was "
                                 "replaced or edited. Generate a cache of this split (recipes/cache_teachers.py)")
            return
        ours = datasets_fingerprint(train_dataset)
        if m.dataset_fingerprint and ours and ours != m.dataset_fingerprint:
            raise ValueError(
                f"{where} was made from other data files than this training split (datasets fingerprint "
                f"{m.dataset_fingerprint} then, {ours} now; the 64 sampled images match, the rest may not). Generate "
                "a cache of this split (recipes/cache_teachers.py). If it holds the very same images loaded another "
                "way (copied files, another loader), make the cache with hash_images=True (hfkd cache --hash_images): "
                "it is then matched by the images' bytes")


def open_teacher_cache(source: Optional[str], *, teachers: Sequence[Any], method, student, train_dataset,
                       image_column: str, label_column: str, label_names: Optional[Sequence[str]],
                       augment: Optional[AugmentConfig], seed: int,
                       revision: Optional[str] = None, sample_key_column: Optional[str] = None
                       ) -> Optional[TeacherCache]:
    """A run's teacher cache, checked against the run; ``None`` when there is none.

    ``seed`` (the run's) draws which stored view each image gets at each epoch; ``revision`` is the Hub
    revision of a cache given by its id (``"ORG/NAME@REV"`` works too).  A streamed ``train_dataset`` needs a
    cache of the same stream keyed by the same ``sample_key_column``.
    """
    if not source:
        return None
    if teachers:
        raise ValueError("pass either teachers or teacher_cache, not both: a cache replaces the teachers")
    folder = resolve_cache(source, revision)
    cache = TeacherCache(folder, source=str(source), draw_seed=seed)
    cache.check(method, train_dataset, image_column, label_column, student, augment, label_names, sample_key_column)
    _ = cache.columns  # the rows and column widths are checked now, before the first step
    return cache


def check_crops_per_image(k: int, cache: Optional[TeacherCache], method_name: str, own_batches: bool = False) -> None:
    """K views per decode need K stored views per image, each with its teachers' outputs: a cache of >= K; and
    batches the trainer makes (``own_batches``: the method draws its own, e.g. BAKE's class-aware ones)."""
    if k == 1:
        return
    if own_batches:
        raise ValueError(f"method {method_name!r} draws its own batches, which crops_per_image cannot split into "
                         "views; set crops_per_image=1")
    if cache is None:
        raise ValueError(f"crops_per_image={k} trains each decoded image on {k} views, each with its own stored "
                         f"teacher outputs, so it needs a teacher cache (teacher_cache=...; methods that train "
                         f"from one: KD, MEAL V2); method {method_name!r} runs without one here. Make a "
                         f"cache with `hfkd cache --num_views {k}` or more, or set crops_per_image=1")
    stored = cache.metadata.num_views
    if k > stored:
        raise ValueError(f"crops_per_image={k}, but the teacher cache stores {stored} view(s) per image: use "
                         f"crops_per_image <= {stored}, or a cache generated with num_views >= {k}")


def verify_teacher_cache(source: str, revision: Optional[str] = None, token=None) -> TeacherCache:
    """Check a cache (folder or Hub id) in full: every file's size and sha256, its metadata and its rows.

    Raises :class:`TeacherCacheError` naming the damaged file; ``hfkd cache --verify SOURCE`` calls this.
    """
    cache = TeacherCache(resolve_cache(source, revision, token), source=str(source))
    cache.verify()
    return cache
