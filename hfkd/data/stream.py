"""Streamed splits (``datasets.IterableDataset``): loading shards, a stable key per sample, the split across
processes, and a reader whose position can be saved and continued exactly.

A map-style split addresses a sample by its row; a stream has no rows to address, so:

- **The key.** Each sample's augmentation is seeded by a stable *sample key* instead of its row: a column the
  user names (``sample_key_column``), WebDataset's ``__key__`` (with its shard's file name, ``__url__``), or, for
  Parquet shards hfkd streams itself, ``shard file:row within the shard``.  The key does not depend on the
  number of processes, the shuffle or the epoch, so a sample is augmented the same way however it is reached.
- **The split.** ``datasets.distributed.split_dataset_by_node``: whole shards per process when the number of
  shards is a multiple of the number of processes, else every process reads every shard and keeps one sample
  in N (said in a warning, with the cost and the fix).  Each process reads its own part: nothing is read by one
  process and sent to the others.
- **The shuffle.** ``datasets`` shuffles the shards' order per epoch (``shuffle`` + ``set_epoch``); hfkd then
  shuffles samples in blocks of ``buffer_size`` consecutive samples, each block by its own seed
  ``(seed, epoch, block)``.  ``datasets``' rolling shuffle buffer is not used: its content is lost on resume
  (its ``state_dict`` says so), so a resumed epoch would skip the samples that were in it.
- **The position.** ``datasets``' ``state_dict()`` at the start of the block being read, the block's number and
  how many of its samples were used.  Resuming loads the state, reads that block again, shuffles it the same way
  and skips what was used: bitwise the same samples, augmented the same way, as an uninterrupted run.
"""
from __future__ import annotations

import collections
import copy
import glob
import hashlib
import logging
import os
from itertools import islice
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..settings import shorten
from .checks import BAD_IMAGE_POLICIES, BadImageError, _bad_image_errors, _reason
from .transforms import seeded_batch

logger = logging.getLogger(__name__)

#: WebDataset's sample key and shard address, as ``datasets``' webdataset loader names them; hfkd's Parquet
#: streams put ``shard file:row`` into ``KEY_COLUMN`` too.
KEY_COLUMN = "__key__"
URL_COLUMN = "__url__"
#: samples hfkd shuffles together (one block) when ``stream_shuffle_buffer`` is not given
DEFAULT_SHUFFLE_BUFFER = 1000
# Said alike by the loader and the trainer: the methods that need no labels read loaded splits only, for now.
STREAM_WITHOUT_LABELS = ("a streamed train split without a label column is not supported yet: its classes cannot be "
                         "checked without reading the stream; load the split (drop --streaming)")
_SPLIT_NAMES = ("train", "validation", "test")


class MissingSampleKey(KeyError):
    """A view provider (a teacher cache keyed by sample key) has no entry for a sample's key: the message says why."""


def is_stream(dataset) -> bool:
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def split_size(split) -> Optional[int]:
    """The number of samples of ``split``, or ``None`` for a stream, raw or wrapped by hfkd (its length is unknown)."""
    return None if is_stream(split) or getattr(split, "is_stream", False) else len(split)


# -- loading --------------------------------------------------------------------------------------------------
def _parquet_rows(files: List[str], root: str) -> Iterator[Dict[str, Any]]:
    import pyarrow.parquet as pq

    for path in files:
        name = os.path.relpath(path, root) if root else os.path.basename(path)
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for example in batch.to_pylist():
                example[KEY_COLUMN] = f"{name}:{row}"
                row += 1
                yield example


def parquet_stream(files: Sequence[str], root: str = ""):
    """A stream of local Parquet shards, one ``datasets`` shard per file, each row keyed ``file:row``.

    ``datasets``' own Parquet stream does not say which file and row a sample comes from, so the rows are
    read here (pyarrow, a batch at a time) and given to ``IterableDataset.from_generator``; the features
    (``Image``, ``ClassLabel``) are the ones ``datasets`` stored in the first file's schema.
    """
    import pyarrow.parquet as pq
    from datasets import Features, IterableDataset, Value

    files = [os.fspath(f) for f in files]
    if not files:
        raise FileNotFoundError("no Parquet file to stream")
    features = Features.from_arrow_schema(pq.read_schema(files[0]))
    if KEY_COLUMN in features:
        raise ValueError(f"{shorten(files[0])} has a column {KEY_COLUMN!r}, the name hfkd gives each row's "
                         "file:row key; rename that column")
    features[KEY_COLUMN] = Value("string")
    # A list in gen_kwargs makes one shard per file: split_dataset_by_node can give whole files to processes.
    return IterableDataset.from_generator(_parquet_rows, features=features,
                                          gen_kwargs={"files": files, "root": os.fspath(root)})


def _split_files(folder: str, extension: str) -> Dict[str, List[str]]:
    """The files of ``folder`` by split, with ``datasets``' own naming rules (train-*.parquet, val/..., ...)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    patterns = get_data_patterns(folder)
    files = DataFilesDict.from_patterns(patterns, base_path=folder)
    found = {split: sorted(f for f in paths if f.endswith(extension)) for split, paths in files.items()}
    return {split: paths for split, paths in found.items() if paths}


def load_stream(source, *, revision: Optional[str] = None, config_name: Optional[str] = None,
                cache_dir: Optional[str] = None) -> Tuple[Dict[str, Any], str]:
    """``({split: IterableDataset}, name)`` for a folder or glob of Parquet or WebDataset (.tar) shards, or a Hub id.

    Local Parquet shards are keyed by ``file:row`` (:func:`parquet_stream`); WebDataset shards carry
    ``__key__`` and ``__url__``; other streams need ``sample_key_column`` for a training split.
    """
    from datasets import load_dataset

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"streaming=True takes a folder, a glob or a Hub id, not {type(source).__name__}; pass a "
                        "datasets.IterableDataset itself to the trainer instead")
    source = os.fspath(source)
    if os.path.isdir(source):
        for extension in (".parquet", ".tar"):
            splits = _split_files(source, extension)
            if splits:
                return _local_stream(splits, extension, source, cache_dir), source
        raise FileNotFoundError(f"streaming=True: {shorten(source)} holds no .parquet or .tar (WebDataset) shards; "
                                "stream a folder of shards, or load an image folder without streaming")
    if "*" in source or source.endswith((".parquet", ".tar")):
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"no file matches {shorten(source)}")
        extension = ".tar" if files[0].endswith(".tar") else ".parquet"
        return _local_stream({"train": files}, extension, os.path.dirname(files[0]), cache_dir), source
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"the dataset path {shorten(source)} does not exist "
                                f"(resolved: {shorten(os.path.abspath(source))})")
    return dict(load_dataset(source, config_name, revision=revision, cache_dir=cache_dir, streaming=True)), source


def _local_stream(splits: Dict[str, List[str]], extension: str, root: str, cache_dir):
    from datasets import load_dataset

    if extension == ".parquet":
        return {split: parquet_stream(files, root) for split, files in splits.items()}
    return dict(load_dataset("webdataset", data_files=splits, streaming=True, cache_dir=cache_dir))


# -- the sample key -----------------------------------------------------------------------------------------
def key_columns(dataset, sample_key_column: Optional[str], split: str = "train") -> List[str]:
    """The columns a sample's key is made of; refused, with the ways out, when the stream has none."""
    features = dataset.features or {}
    if sample_key_column:
        if sample_key_column not in features:
            raise ValueError(f"sample_key_column={shorten(sample_key_column)} is not a column of the streamed "
                             f"{split} split; its columns are {shorten(list(features))}")
        return [sample_key_column]
    if KEY_COLUMN in features:
        return [URL_COLUMN, KEY_COLUMN] if URL_COLUMN in features else [KEY_COLUMN]
    raise ValueError(
        f"the streamed {split} split has no stable sample key (its columns: {shorten(list(features))}), and "
        "training augmentation is random: each sample's augmentation is seeded by its key, so that a resumed "
        "run, or a run on another number of processes, augments it the same way. Name a column that identifies "
        "each sample with sample_key_column=... (--sample_key_column, e.g. an image id or file name), stream "
        "local Parquet or WebDataset shards through hfkd (--dataset FOLDER --streaming true: keyed by shard "
        "and row, or by WebDataset's __key__), or train on the split without streaming")


def sample_key(row: Dict[str, Any], columns: Sequence[str]) -> str:
    # WebDataset's __url__ is a full path or URL: its file name is what stays the same when the shards move.
    parts = [os.path.basename(str(row[c])) if c == URL_COLUMN else str(row[c]) for c in columns]
    return "/".join(parts)


def key_id(key: str) -> int:
    """A 63-bit number for ``key`` (blake2b, the same in every process and Python run): the sample's "index"."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") & (2**63 - 1)


# -- the split across processes ---------------------------------------------------------------------------
def split_for_process(dataset, rank: int, world_size: int, split: str = "train"):
    """This process's part of the stream (``split_dataset_by_node``); a warning when shards cannot be divided."""
    from datasets.distributed import split_dataset_by_node

    if world_size == 1:
        return dataset
    shards = dataset.num_shards
    if shards % world_size and rank == 0:
        logger.warning(
            "the streamed %s split has %d shard(s), not a multiple of the %d processes: datasets makes every process "
            "read every shard and keep 1 sample in %d, so each process reads (and downloads) %d times the data it "
            "trains on. Write the data in a multiple of %d shards (e.g. %d) for whole shards per process",
            split, shards, world_size, world_size, world_size, world_size,
            max(world_size, (shards // world_size + 1) * world_size))
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def _source_files(dataset) -> List[str]:
    """The stream's data files as its generator was given them: the paths in its lists (hfkd's Parquet streams'
    ``files``, WebDataset's ``tar_paths``).  Other objects are left out: WebDataset's ``tar_iterators`` are open
    archive readers, whose text changes from one load of the same shards to the next."""
    files = []
    gen_kwargs = getattr(getattr(dataset, "_ex_iterable", None), "kwargs", None) or {}
    for value in gen_kwargs.values():
        if isinstance(value, list):
            files += [os.fspath(v) for v in value if isinstance(v, (str, os.PathLike))]
    return files


def describe(dataset) -> str:
    """What identifies a stream in a checkpoint's run signature: its shards' names and columns, not their paths."""
    config = getattr(getattr(dataset, "info", None), "config_name", None)
    files = [os.path.basename(f) for f in _source_files(dataset)]
    text = repr((config, sorted(files), list(dataset.features or {}), dataset.num_shards))
    return "stream-sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def shard_files(dataset) -> Optional[Dict[str, int]]:
    """``{file name: size in bytes}`` of a stream of local files (a teacher cache of it records them), else ``None``.

    Names and sizes, not paths: the same shards moved to another folder or machine are the same stream; a shard
    rewritten with other rows almost always changes size (and a key it no longer holds is refused per batch).
    """
    files = [f for f in _source_files(dataset) if os.path.isfile(f)]
    return {os.path.basename(f): os.path.getsize(f) for f in sorted(files)} or None


# -- the reader -------------------------------------------------------------------------------------------
class StreamedImageDataset(torch.utils.data.IterableDataset):
    """Samples ``{"pixel_values", "labels", "index"}`` of a streamed split, transformed with key-seeded augmentation.

    Training (``batch_size`` set): yields collated batches of ``batch_size`` samples, each with the
    ``"stream_position"`` after it (what a checkpoint records); the shuffle is described in the module
    docstring.  Evaluation (``batch_size=None``): yields single samples in stream order, once.
    ``index`` is :func:`key_id` of the sample's key (its place in the stream when no key is given).
    ``fingerprint`` identifies the data in a checkpoint (default :func:`describe` of ``dataset``).
    ``view_provider(epoch, index) -> (seed, extra)``, when set (a teacher cache keyed by sample key), gives each
    sample its stored view's seed and outputs, as for a map-style split; it raises :class:`MissingSampleKey`
    for a key it lacks.
    ``num_workers`` > 0: that many processes decode and transform batches, a few ahead, while this process reads
    the stream and keeps the positions; the batches are the same as without them.  Rows are grouped
    ``batch_size`` at a time before decoding, so a batch with an unreadable image skipped is one sample shorter.
    """

    is_stream = True

    def __init__(self, dataset, transform: Callable, image_column: str, label_column: str, seed: int = 0,
                 image_mode: str = "RGB", on_bad_image: str = "raise", key_columns: Sequence[str] = (),
                 batch_size: Optional[int] = None, buffer_size: int = DEFAULT_SHUFFLE_BUFFER, drop_last: bool = False,
                 fingerprint: Optional[str] = None, num_workers: int = 0):
        from datasets import Image

        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES} (got {on_bad_image!r})")
        if buffer_size < 1:
            raise ValueError(f"stream_shuffle_buffer must be >= 1 (got {buffer_size}); 1 keeps the stream's order")
        # The whole stream's, given when ``dataset`` is one process's part (the same on every process count).
        self._fingerprint = fingerprint or describe(dataset)
        columns = list(dict.fromkeys([image_column, label_column, *key_columns]))
        stream = dataset.select_columns(columns)
        if isinstance(stream.features[image_column], Image):  # decoded here, so that a bad image can be named
            stream = stream.cast_column(image_column, Image(decode=False))
        self.stream = stream
        self.transform, self.image_column, self.label_column = transform, image_column, label_column
        self.seed, self.image_mode, self.on_bad_image = seed, image_mode, on_bad_image
        self.key_columns = list(key_columns)
        self.batch_size, self.buffer_size, self.drop_last = batch_size, buffer_size, drop_last
        self.num_workers = num_workers
        self.view_provider: Optional[Callable[[int, int], Tuple[int, Dict[str, Any]]]] = None
        self.epoch = 0
        self._start: Optional[Dict[str, Any]] = None
        self.skipped: List[str] = []  # keys of unreadable images left out (on_bad_image="skip")

    @property
    def labelled(self) -> bool:
        """Whether the stream has a label column (a train stream without one is refused before training)."""
        return self.label_column is not None

    # what the trainer's bad-image report reads (hfkd/training/bad_images.py)
    @property
    def bad_rows(self) -> List[int]:
        return [key_id(k) for k in self.skipped]

    def bad_row_files(self, rows: Sequence[int]) -> List[str]:
        by_id = {key_id(k): k for k in self.skipped}
        return [f"sample {by_id.get(int(r), r)}" for r in rows]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_at(self, position: Dict[str, Any]) -> None:
        """Continue from ``position`` (a batch's ``"stream_position"``) when its epoch is read next."""
        self._start = copy.deepcopy(position)
        self.epoch = int(position["epoch"])

    def _rows(self) -> Iterator[Tuple[Dict[str, Any], Dict[str, Any]]]:
        """``(row, position after it)`` of this epoch, from the start position when there is one."""
        epoch, start = self.epoch, self._start
        self._start = None
        stream = copy.copy(self.stream)  # set_epoch and the resume state are per iteration
        stream.set_epoch(epoch)
        block, skip, begin = 0, 0, None
        if start is not None and start["epoch"] == epoch:
            block, skip, begin = int(start["block"]), int(start["offset"]), start["state"]
            if begin is not None:
                stream.load_state_dict(begin)
        rows = iter(stream)
        training = self.batch_size is not None
        while True:
            chunk = list(islice(rows, self.buffer_size if training else 256))
            if not chunk:
                return
            end = stream.state_dict()
            order = (np.random.default_rng([self.seed, epoch, block]).permutation(len(chunk)) if training
                     else np.arange(len(chunk)))
            for j in range(skip, len(chunk)):
                after = ({"epoch": epoch, "block": block, "offset": j + 1, "state": begin} if j + 1 < len(chunk)
                         else {"epoch": epoch, "block": block + 1, "offset": 0, "state": end})
                yield chunk[order[j]], after
            block, skip, begin = block + 1, 0, end

    def _decode(self, row: Dict[str, Any], key: str):
        """The row's image in ``image_mode``; ``None`` for an unreadable one with ``on_bad_image="skip"``."""
        from datasets import Image
        from PIL import Image as PILImage

        value = row[self.image_column]
        try:
            if value is None:
                raise OSError("the sample has no image")
            image = Image().decode_example(value) if isinstance(value, dict) else value
            if not hasattr(image, "convert"):
                image = PILImage.fromarray(np.asarray(image))
            image.load()  # PIL decodes lazily: a truncated file fails here, not in the transform
            return image if image.mode == self.image_mode else image.convert(self.image_mode)
        except _bad_image_errors() as e:
            reason = _reason(e)
            if self.on_bad_image == "skip":
                logger.debug("skipped the unreadable image of sample %s: %s", shorten(key), shorten(reason, 300))
                return None
            raise BadImageError(f"cannot read the image of streamed sample {shorten(key)} (column "
                                f"{self.image_column!r}): {shorten(reason, 300)}; remove or replace it, or skip such "
                                "images with on_bad_image='skip' (--on_bad_image skip)", None, key, reason) from e

    def _keyed(self) -> Iterator[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        """``(key, row, position after it)`` of this epoch."""
        for count, (row, after) in enumerate(self._rows()):
            yield (sample_key(row, self.key_columns) if self.key_columns else str(count)), row, after

    def make_batch(self, items: Sequence[Tuple[str, Dict[str, Any]]], epoch: int):
        """``(samples, skipped keys)`` of raw ``(key, row)`` items: decoded and transformed, seeded by key.

        A pure function of its arguments, so a worker process computes what the training process would.
        """
        images, labels, indices, keys, skipped = [], [], [], [], []
        for key, row in items:
            image = self._decode(row, key)
            if image is None:
                skipped.append(key)
                continue
            images.append(image)
            labels.append(int(row[self.label_column]))
            indices.append(key_id(key))
            keys.append(key)
        seeds, extras = None, [{}] * len(indices)
        if self.view_provider is not None:
            views = []
            for key, index in zip(keys, indices):
                try:
                    views.append(self.view_provider(epoch, index))
                except MissingSampleKey as e:  # never trained without the teachers' outputs: named, with the fix
                    raise ValueError(f"streamed sample {shorten(key)} (key id {index}): {e.args[0]}") from None
            seeds, extras = [s for s, _ in views], [x for _, x in views]
        pixels = seeded_batch(self.transform, images, self.seed, epoch, indices, seeds)
        return [{"pixel_values": p, "labels": y, "index": i, **x}
                for p, y, i, x in zip(pixels, labels, indices, extras)], skipped

    def _made(self, size: int):
        """``(samples, skipped keys, position after the group, raw group length)`` per group of ``size`` rows, in
        stream order; made by ``num_workers`` processes when set (a few groups ahead), the stream read here."""
        epoch = self.epoch
        groups = _chunks(self._keyed(), size)
        if not self.num_workers:
            for group in groups:
                yield (*self.make_batch([(k, r) for k, r, _ in group], epoch), group[-1][2], len(group))
            return
        context = torch.multiprocessing.get_context("fork")  # torch's context: tensors come back in shared memory
        with context.Pool(self.num_workers, initializer=_start_worker, initargs=(self,)) as pool:
            pending = collections.deque()
            for group in groups:
                pending.append((pool.apply_async(_worker_batch, ([(k, r) for k, r, _ in group], epoch)),
                                group[-1][2], len(group)))
                if len(pending) > 2 * self.num_workers:
                    result, after, length = pending.popleft()
                    yield (*result.get(), after, length)
            while pending:
                result, after, length = pending.popleft()
                yield (*result.get(), after, length)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None and self.batch_size is not None:
            raise RuntimeError("a training stream is read in the training process; its num_workers decode it")
        if self.batch_size is None:
            for samples, skipped, _, _ in self._made(64):
                self.skipped += skipped
                yield from samples
            return
        for samples, skipped, after, length in self._made(self.batch_size):
            self.skipped += skipped
            if length < self.batch_size and self.drop_last:
                return
            if not samples:  # every image of these rows was unreadable (on_bad_image="skip")
                continue
            batch = torch.utils.data.default_collate(samples)
            batch["stream_position"] = after
            yield batch


_WORKER: Optional[StreamedImageDataset] = None


def _start_worker(dataset: StreamedImageDataset) -> None:
    global _WORKER
    _WORKER = dataset
    torch.set_num_threads(1)  # one core per worker, as torch's data-loader workers


def _worker_batch(items, epoch: int):
    return _WORKER.make_batch(items, epoch)


def _chunks(items: Iterator, size: int) -> Iterator[List]:
    while True:
        chunk = list(islice(items, size))
        if not chunk:
            return
        yield chunk
