"""Run the frozen teachers once over R seeded views of every training image and store their logits.

Views are made by the same :class:`ImageClassificationDataset` and the same timm transform the
trainer uses: view ``v`` of image ``i`` is the dataset's row ``i`` at epoch ``v`` with seed
``seed``, so training can re-create it bitwise from ``sample_seed(seed, v, i)``.

The cache is written as shards of at most ``max_shard_size`` bytes (:class:`_ShardPlan`: rows numbered
view-major, a fixed number per shard), which are its data files: nothing is merged or copied.  The teachers
always see the 1-process run's batches, so a shard's bytes do not depend on which process computed it:
N processes (on any number of machines sharing the output folder) share out the shards, each writes its own,
and the cache is bitwise the 1-process one.

Generation is resumable.  A shard appears under its final name only when it is complete (written
beside it, then renamed), and ``.partial`` holds the generation's plan (:func:`_plan`: the cache's
metadata without the command, the teachers' weight hashes, the batch size and the shard layout).
The same command run again after a kill or a preemption keeps the finished shards, on any number of
processes, and computes only the others; a stopped generation with another plan is removed.  The teachers
see the same tensors either way, so the result is bitwise the uninterrupted one.

A preemption signal (SIGTERM, SIGINT, SIGUSR1) stops generation at the next batch boundary all
processes agree on: the finished shards stay in ``.partial`` for the requeued command, and
:class:`hfkd.preemption.Preempted` exits with ``128 + the signal number``.
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import os
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.loading import find_columns
from ..data.stream import (StreamedImageDataset, describe, is_stream, key_columns, key_id, shard_files,
                           split_for_process)
from ..data.transforms import (AugmentConfig, ImageClassificationDataset, create_image_transform, sample_seed,
                               seeded_batch)
from ..files import (WRITER_MARKER, abandoned_by_hfkd, disk_full_explained, manifest_problems, mark_writer,
                     relative_files, sha256, write_file_atomic)
from ..hub.secrets import redact_secrets
from ..launch import create_accelerator
from ..losses import ensemble_probs
from ..models.backbone import Backbone, hub_id
from ..models.preprocess import PreprocessConfig
from ..models.teacher import bind_teacher
from ..models.zero_shot import zero_shot_entry
from ..preemption import Preemption
from ..settings import shorten
from ..version import __version__
from .card import write_dataset_card
from .format import (DATA_FOLDER, KEYED_FORMAT, CacheMetadata, augmentation_dict, dataset_fingerprint,
                     datasets_fingerprint, encode_logits, estimated_bytes_per_view, images_sha256, shard_path)
from . import format as cache_format

logger = logging.getLogger(__name__)

#: in ``.partial``: what a stopped generation was making, so that only the same generation continues it
PLAN_FILE = "hfkd_generation_plan.json"
#: the largest shard by default: ``datasets``' own for pushes to the Hub, far below its 200 GB per file, and the
#: most work a kill can lose per process
DEFAULT_MAX_SHARD_SIZE = "500MB"
#: the Hub refuses files of this size or more
HUB_MAX_FILE_BYTES = 200 * 10 ** 9
#: the Hub takes fewer files than this per repository
HUB_MAX_FILES = 100_000
#: a shard's bytes beyond its rows: the Arrow stream's schema, record-batch header and buffer padding (under 2 kB
#: for hfkd's columns, measured); shards are sized so that rows plus this stay within ``max_shard_size``
SHARD_HEADER_BYTES = 4096


def _teacher_entry(teacher) -> Dict[str, Any]:
    backbone = teacher.backbone
    return {"name": backbone.name, "library": backbone.library, "revision": backbone.source.get("revision"),
            "hub_id": hub_id(backbone), "weight": teacher.weight, "num_parameters": backbone.num_parameters(),
            "preprocess": backbone.preprocess.to_dict(), **zero_shot_entry(backbone)}


def _rows_table(columns: Dict[str, np.ndarray]):
    """An Arrow table: integer key columns, and fixed-size lists for the stored outputs (zero-copy to read)."""
    import pyarrow as pa

    arrays, names = [], []
    for name, values in columns.items():
        if values.ndim == 1:
            arrays.append(pa.array(values))
        else:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1]))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _weights_sha256(module: torch.nn.Module) -> str:
    """A hash of a teacher's weights: the metadata names a teacher, which a retrained folder keeps."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plan(metadata: CacheMetadata, teachers: Sequence[Any], processes: int, batch_size: int,
          shards: "_ShardPlan") -> Dict[str, Any]:
    """What decides the shards' contents and boundaries: a stopped generation continues only under the same.

    ``processes`` is recorded but does not decide anything: a shard's rows are the same whichever process
    computes them (see :class:`_ShardPlan`), so a generation continues on another number of processes.
    """
    plan = {k: v for k, v in metadata.to_dict().items() if k not in ("command", "files")}
    plan.update(processes=int(processes), batch_size=int(batch_size), shards=shards.to_dict(),
                teacher_weights=[_weights_sha256(t.backbone) for t in teachers])
    return json.loads(json.dumps(plan, sort_keys=True))  # tuples -> lists, as read back from the file


def _read_plan(partial: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(partial, PLAN_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _same_work(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> bool:
    """Two plans make the same shards: everything but the number of processes is equal."""
    return a is not None and {k: v for k, v in a.items() if k != "processes"} == \
        {k: v for k, v in b.items() if k != "processes"}


def _clear_stages(output_dir: str, plan: Dict[str, Any], resumable: bool = True) -> bool:
    """Refuse an existing cache folder; of the ``.partial``/``.staging`` stages a stopped or failed hfkd
    generation left (its writer marker names a dead process of this host, or this process), keep a
    ``.partial`` of the same plan (returns True: the generation continues) and remove the others; refuse
    stages hfkd did not provably leave."""
    if os.path.lexists(output_dir):
        raise FileExistsError(f"{output_dir} already exists; hfkd never overwrites a folder: choose another "
                              "output_dir or remove it yourself")
    resume = False
    for stage in (output_dir + ".partial", output_dir + ".staging"):  # .staging: left by hfkd before format 3
        if not os.path.lexists(stage):
            continue
        if not abandoned_by_hfkd(stage):
            raise FileExistsError(f"{stage} already exists and is not a stage a stopped hfkd cache generation left "
                                  "on this machine (another one may be writing it); hfkd never overwrites a folder: "
                                  "choose another output_dir, or if no generation is running remove it yourself")
        stopped = _read_plan(stage) if stage.endswith(".partial") else None
        if resumable and _same_work(stopped, plan):
            processes = stopped.get("processes")
            logger.warning("continuing the cache generation that stopped in %s: its finished shards are kept%s",
                           stage, f" (it ran on {processes} processes, this one on {plan['processes']}: a shard's "
                           "rows do not depend on the number of processes)" if processes != plan["processes"] else "")
            resume = True
            continue
        logger.warning("removing %s, left by an earlier cache generation that stopped%s", stage,
                       " (a generation over a stream restarts from its start)" if not resumable else
                       " with other settings" if stopped is not None else "")
        shutil.rmtree(stage)
    return resume


def parse_shard_size(max_shard_size: Union[int, str]) -> int:
    """``max_shard_size`` in bytes (``datasets``' spelling: an int, ``"500MB"``, ``"2GiB"``), below the Hub's limit."""
    from datasets.utils.py_utils import convert_file_size_to_int

    if isinstance(max_shard_size, str) and max_shard_size.strip().isdigit():  # "2000" from the command line
        max_shard_size = int(max_shard_size)
    try:
        size = convert_file_size_to_int(max_shard_size)
    except (ValueError, TypeError):
        size = None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size < HUB_MAX_FILE_BYTES:
        raise ValueError(f"max_shard_size must be a number of bytes or a size such as '500MB' or '2GB', under the "
                         f"Hub's {HUB_MAX_FILE_BYTES // 10 ** 9} GB per file; got {shorten(max_shard_size)}")
    return size


@dataclass(frozen=True)
class _ShardPlan:
    """Which rows go into which shard: a function of the data's size, R and the caps only.

    The rows are numbered view-major, ``position = view * num_samples + index``, and shard ``k`` holds positions
    ``[k * rows_per_shard, (k + 1) * rows_per_shard)``.  Teachers always run on the 1-process run's batches
    (images ``[b * batch_size, (b + 1) * batch_size)`` of one view), whichever process computes them, so a shard's
    bytes do not depend on the number of processes: N processes share out the unfinished shards, none collide,
    and a stopped generation continues on any number of processes.

    A streamed dataset (no length, no index) has no such plan: :func:`_cache_stream` writes each process's rows,
    keyed by sample key, into its own shards as they fill, and restarts when stopped.
    """

    num_samples: int
    num_views: int
    rows_per_shard: int
    files_per_folder: int

    @classmethod
    def make(cls, num_samples: int, num_views: int, row_bytes: int, max_shard_bytes: int, batch_size: int,
             files_per_folder: int) -> "_ShardPlan":
        rows = (max_shard_bytes - SHARD_HEADER_BYTES) // row_bytes
        if rows < 1:
            raise ValueError(f"max_shard_size={max_shard_bytes} bytes holds no row: a row takes {row_bytes} bytes and "
                             f"each shard about {SHARD_HEADER_BYTES} bytes of headers; use at least "
                             f"{SHARD_HEADER_BYTES + row_bytes} bytes (the default is {DEFAULT_MAX_SHARD_SIZE})")
        if rows >= batch_size:  # whole batches: no batch is run twice for two shards
            rows -= rows % batch_size
        return cls(num_samples, num_views, min(rows, num_samples * num_views), files_per_folder)

    @property
    def count(self) -> int:
        return math.ceil(self.num_samples * self.num_views / self.rows_per_shard)

    def rows(self, number: int) -> range:
        return range(number * self.rows_per_shard, min(self.num_samples * self.num_views,
                                                       (number + 1) * self.rows_per_shard))

    def path(self, number: int) -> str:
        return shard_path(number, self.count, self.files_per_folder)

    def to_dict(self) -> Dict[str, int]:
        return {**asdict(self), "count": self.count}

    def batches(self, shards: Sequence[int], batch_size: int) -> List[Tuple[int, int]]:
        """The ``(view, batch)`` pairs the rows of ``shards`` (in increasing order) need, in order, each once."""
        out: List[Tuple[int, int]] = []
        n = self.num_samples
        for number in shards:
            rows = self.rows(number)
            for view in range(rows.start // n, (rows.stop - 1) // n + 1):
                first, last = max(rows.start, view * n) - view * n, min(rows.stop - 1, view * n + n - 1) - view * n
                for batch in range(first // batch_size, last // batch_size + 1):
                    if not out or out[-1] != (view, batch):
                        out.append((view, batch))
        return out


def _share(items: Sequence[int], rank: int, world: int) -> List[int]:
    """Process ``rank``'s contiguous part of ``items`` (sizes differ by at most one)."""
    return list(items[rank * len(items) // world:(rank + 1) * len(items) // world])


def _default_command() -> str:
    return redact_secrets(shlex.join([os.path.basename(sys.executable), *sys.argv]))


@torch.no_grad()
def cache_teacher_outputs(
    teachers: Sequence[Any],
    train_dataset,
    output_dir: str,
    *,
    student: Union[Backbone, PreprocessConfig],
    augment: Optional[AugmentConfig] = None,
    num_views: int = 1,
    top_k: Optional[int] = None,
    dtype: str = "float32",
    ensemble: bool = False,
    seed: int = 42,
    batch_size: int = 64,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    dataset_info: Optional[Dict[str, Any]] = None,
    command: Optional[str] = None,
    accelerator=None,
    num_workers: int = 0,
    hash_images: bool = False,
    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE,
    sample_key_column: Optional[str] = None,
) -> str:
    """Write a teacher cache of ``train_dataset`` to ``output_dir`` (a new folder); returns its path.

    Args:
        teachers: teachers (names, folders, Hub ids, :class:`Backbone` or :class:`Teacher`).
        student: the student (or its :class:`PreprocessConfig`): views are made in its preprocessing,
            exactly as the trainer makes them, and each teacher adapts them to its own.
        augment: the student's training augmentation; ``None`` with ``num_views=1`` stores fixed labels
            of the un-augmented images.
        num_views: R, views per image (view ``v`` = the view an online run with ``seed`` sees at epoch ``v``).
        top_k: store only the top-k logits plus the logsumexp (FKD's marginal smoothing on load);
            ``None`` stores the full logits.
        dtype: ``"float32"`` or ``"float16"`` storage.
        ensemble: store one pre-ensembled target (log of the weighted mean of the teachers' T = 1
            probabilities: MEAL V2's target) instead of each teacher's logits.
        seed: the augmentation seed, the training run's ``seed`` for its epochs to coincide with views.
        accelerator: an ``accelerate.Accelerator``; made from the launch environment when ``None``
            (``accelerate launch`` / ``torchrun`` give one shard per process).
        hash_images: also record a sha256 of every label and image's stored bytes; every run that opens the
            cache then hashes its split in full and must match it (one read of the split per run), whatever
            ``datasets``' fingerprint says (the same images loaded from elsewhere are accepted).
        max_shard_size: the largest data file (bytes, or ``"500MB"``, ``"2GB"``): the cache is written as shards of
            at most this size (whole teacher batches when a batch fits), at most ``MAX_FILES_PER_FOLDER`` per
            folder, which are the cache's files (no merge).  A kill loses at most the shard each process was writing.
        sample_key_column: for a streamed ``train_dataset`` (``datasets.IterableDataset``), the column that
            identifies each sample (as the training run's ``sample_key_column``; hfkd's Parquet and WebDataset
            streams have their own key).  A stream's cache is keyed by sample key (:func:`_cache_stream`).
    """
    from accelerate.utils import broadcast_object_list

    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if augment is None and num_views > 1:
        raise ValueError(f"num_views={num_views} without augmentation would store {num_views} identical views; "
                         "pass an augmentation (AugmentConfig) or num_views=1 for fixed labels")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None (full logits), got {top_k}")
    max_shard_bytes = parse_shard_size(max_shard_size)
    if accelerator is None:
        accelerator = create_accelerator()
    preprocess = student.preprocess if isinstance(student, Backbone) else student
    if is_stream(train_dataset):
        if hash_images:
            raise ValueError("hash_images hashes every image of a loaded split; a stream's cache is matched by its "
                             "shards' names and sizes and by each sample's key instead: drop hash_images")
        return _cache_stream(teachers, train_dataset, output_dir, preprocess=preprocess, augment=augment,
                             num_views=num_views, top_k=top_k, dtype=dtype, ensemble=ensemble, seed=seed,
                             batch_size=batch_size, image_column=image_column, label_column=label_column,
                             sample_key_column=sample_key_column, dataset_info=dataset_info, command=command,
                             accelerator=accelerator, max_shard_bytes=max_shard_bytes)
    image_column, label_column = find_columns(train_dataset, image_column, label_column, require_label=False)
    if label_column is not None:
        feature = train_dataset.features[label_column]
        label_names = list(feature.names) if hasattr(feature, "names") else None
        num_classes = len(label_names) if label_names else int(max(train_dataset[label_column])) + 1
    elif isinstance(student, Backbone):  # images without labels: the classes are the student's (--label_names)
        label_names, num_classes = student.label_names, student.num_classes
    else:
        raise ValueError("the train split has no label column, so the classes of the cache are the student's: pass "
                         "the student (a Backbone with its label names), not only its preprocessing")
    if top_k is not None and top_k > num_classes:
        raise ValueError(f"top_k={top_k} is more than the {num_classes} classes; use top_k=None for full logits")
    teachers = [bind_teacher(t, preprocess, num_classes, label_names) for t in teachers]
    if not teachers:
        raise ValueError("cache_teacher_outputs needs at least one teacher")
    # The shard layout, checked before the split is fingerprinted or a teacher runs
    row_bytes = estimated_bytes_per_view(1 if ensemble else len(teachers), num_classes, top_k, dtype)
    shards = _ShardPlan.make(len(train_dataset), int(num_views), row_bytes, max_shard_bytes, batch_size,
                             cache_format.MAX_FILES_PER_FOLDER)
    if shards.count + 2 >= HUB_MAX_FILES and accelerator.is_main_process:
        logger.warning("the teacher cache %s will have %d shards: the Hub takes fewer than %d files per repository; "
                       "to share it there, use a larger max_shard_size", output_dir, shards.count, HUB_MAX_FILES)
    metadata = CacheMetadata(
        teachers=[_teacher_entry(t) for t in teachers], num_classes=num_classes, num_samples=len(train_dataset),
        num_views=int(num_views), seed=int(seed), student_preprocess=preprocess.to_dict(),
        augmentation=augmentation_dict(augment), train_fingerprint=dataset_fingerprint(train_dataset, image_column,
                                                                                         label_column),
        top_k=top_k, dtype=dtype, ensembled=bool(ensemble), label_names=label_names,
        dataset=dict(dataset_info or {}), hfkd_version=__version__, command=command or _default_command(),
        dataset_fingerprint=datasets_fingerprint(train_dataset),
        images_sha256=images_sha256(train_dataset, image_column, label_column) if hash_images else None,
    )
    output_dir = os.path.abspath(output_dir)
    encode_logits(torch.zeros(1, 1, num_classes), top_k, dtype)  # validates dtype before the teachers run

    partial, staging = output_dir + ".partial", output_dir + ".staging"
    plan = _plan(metadata, teachers, accelerator.num_processes, batch_size, shards)
    problem, resume = None, False
    if accelerator.is_main_process:  # the stages' marker names the main process: only it can judge them
        try:
            resume = _clear_stages(output_dir, plan)
        except FileExistsError as e:
            problem = str(e)
    problem = broadcast_object_list([problem])[0]  # every process refuses together, none waits for the others
    if problem:
        raise FileExistsError(problem)
    if accelerator.is_main_process and not resume:
        os.makedirs(partial, exist_ok=False)
        # Atomic: a resume reads the plan back, and a plan cut short by a kill must not be taken for another one.
        write_file_atomic(os.path.join(partial, PLAN_FILE), json.dumps(plan, indent=2, sort_keys=True))
    # A full disk removes what this process wrote (the main process: both stages) to free the space; any other
    # failure (a teacher's error, a lost peer process) keeps the finished shards for the same command to continue.
    needed = len(train_dataset) * num_views * row_bytes + shards.count * SHARD_HEADER_BYTES
    own = [partial, staging] if accelerator.is_main_process else []  # a shard's failed write removes itself
    with disk_full_explained(os.path.dirname(output_dir), f"the teacher cache {output_dir}", needed=needed,
                             cleanup=own, where_to_change="an output_dir", cleanup_only_when_full=True):
        if accelerator.is_main_process:
            mark_writer(partial)  # a stopped generation's stage is then recognisably hfkd's, and removable
        accelerator.wait_for_everyone()
        _generate(accelerator, train_dataset, teachers, preprocess, augment, image_column, label_column, seed,
                  num_views, batch_size, num_workers, ensemble, top_k, dtype, metadata, output_dir, shards)
    accelerator.wait_for_everyone()
    return output_dir


def _generate(accelerator, train_dataset, teachers, preprocess, augment, image_column, label_column, seed, num_views,
              batch_size, num_workers, ensemble, top_k, dtype, metadata, output_dir, shards: _ShardPlan) -> None:
    """Run the teachers over every unfinished shard's rows into ``.partial``; the main process then writes the
    metadata and renames ``.partial`` to the cache: the shards are the cache's data files, never copied."""
    from accelerate.utils import broadcast_object_list, gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    partial = output_dir + ".partial"
    transform = create_image_transform(preprocess, augment is not None, augment)
    mode = "RGB" if preprocess.input_size[0] == 3 else "L"
    views = ImageClassificationDataset(train_dataset, transform, image_column, label_column, seed=seed, image_mode=mode)
    for t in teachers:
        t.to(accelerator.device)
    # The main process judges what a stopped generation finished; every process then shares out the same rest.
    finished = _finished_shards(partial, shards) if accelerator.is_main_process else None
    finished = broadcast_object_list([finished])[0]
    done = set(finished)
    pending = [k for k in range(shards.count) if k not in done]
    if finished and accelerator.is_main_process:
        logger.warning("teacher cache: %d of %d shards were finished by the generation that stopped; computing the "
                       "other %d", len(finished), shards.count, len(pending))
    mine = _share(pending, rank, world)
    # Every process polls for a preemption at the same points: as many as the busiest process has batches.
    polls = max(len(shards.batches(_share(pending, r, world), batch_size)) for r in range(world))
    outputs = _batch_outputs(views, shards.batches(mine, batch_size), batch_size, num_workers, teachers, ensemble,
                             seed, top_k, dtype, accelerator.device)
    writer = _ShardWriter(shards, mine, partial)
    with Preemption(accelerator) as preemption:
        for _ in range(polls):
            if preemption.requested():
                # The finished shards stay in .partial: the requeued command continues from them.
                accelerator.wait_for_everyone()
                raise preemption.stop()
            item = next(outputs, None)
            if item is not None:  # else this process has less work than the busiest one
                writer.add(*item)
    # The kept shards' hashes are read back (shared out too); the new ones were hashed as they were written.
    written = dict(writer.written)
    for number in _share(finished, rank, world):
        rel = shards.path(number)
        path = os.path.join(partial, rel)
        written[rel] = {"size": os.path.getsize(path), "sha256": sha256(path)}
    manifest = {}
    for entries in gather_object([written]):
        manifest.update(entries)
    problem = None
    if accelerator.is_main_process:
        missing = manifest_problems(partial, manifest, content=False)
        if missing or len(manifest) != shards.count:
            problem = (f"the teacher cache {output_dir}: the main process does not see every process's shards in "
                       f"{partial} ({'; '.join(missing[:3]) or f'{len(manifest)} of {shards.count} listed'}): "
                       "with several machines, output_dir must be on a file system they all share")
    problem = broadcast_object_list([problem])[0]
    if problem:
        raise RuntimeError(problem)
    if accelerator.is_main_process:
        metadata.files = {rel: manifest[rel] for rel in sorted(manifest)}  # sizes checked on open, hashes on request
        metadata.save(partial)
        write_dataset_card(partial, metadata)
        os.replace(partial, output_dir)  # appears complete or not at all; the shards stay where they were written
        for leftover in (PLAN_FILE, WRITER_MARKER):  # the stage's own files (a kill here leaves them, harmless)
            os.remove(os.path.join(output_dir, leftover))


def _finished_shards(partial: str, shards: _ShardPlan) -> List[int]:
    """The shards a stopped generation finished (a shard exists under its final name only when complete); the
    temporary files of writes it did not finish are removed (they are in hfkd's own stage)."""
    expected = {shards.path(k): k for k in range(shards.count)}
    finished = []
    for rel in relative_files(os.path.join(partial, DATA_FOLDER)):
        rel = f"{DATA_FOLDER}/{rel}"
        if rel in expected:
            finished.append(expected[rel])
        else:
            os.remove(os.path.join(partial, rel))
    return sorted(finished)


def _batch_outputs(views, batches, batch_size, num_workers, teachers, ensemble, seed, top_k, dtype, device):
    """Yield ``(view, columns)`` for each ``(view, batch)`` in ``batches``: the batch's rows and stored outputs."""
    from torch.utils.data import DataLoader

    n = len(views)
    weights = [t.weight for t in teachers]
    for view, group in itertools.groupby(batches, key=lambda b: b[0]):
        numbers = [b for _, b in group]
        views.set_epoch(view)  # the loader's workers copy the dataset when it starts: set before
        sampler = [list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in numbers]
        for batch in DataLoader(views, batch_sampler=sampler, num_workers=num_workers):
            x = batch["pixel_values"].to(device)
            logits = [t(x).logits.float() for t in teachers]
            stacked = (ensemble_probs(logits, weights).log().unsqueeze(1) if ensemble
                       else torch.stack(logits, dim=1)).cpu()
            index = batch["index"].numpy().astype(np.int64)
            yield view, {"index": index, "view": np.full_like(index, view, dtype=np.int32),
                         "seed": np.array([sample_seed(seed, view, int(i)) for i in index], dtype=np.int64),
                         "label": batch["labels"].numpy().astype(np.int64), **encode_logits(stacked, top_k, dtype)}


class _ShardWriter:
    """Collects batches' rows into this process's shards (increasing order) and writes each once complete."""

    def __init__(self, shards: _ShardPlan, numbers: Sequence[int], partial: str):
        self.shards, self.partial = shards, partial
        self.queue = collections.deque(numbers)
        self.parts: Dict[str, List[np.ndarray]] = {}
        self.written: Dict[str, Dict[str, Any]] = {}

    def add(self, view: int, columns: Dict[str, np.ndarray]) -> None:
        position = view * self.shards.num_samples + columns["index"]
        while self.queue:
            rows = self.shards.rows(self.queue[0])
            keep = (position >= rows.start) & (position < rows.stop)
            if keep.any():
                for name, values in columns.items():
                    self.parts.setdefault(name, []).append(values[keep])
            if position[-1] < rows.stop - 1:
                return  # the shard's last row comes in a later batch
            number = self.queue.popleft()
            rel = self.shards.path(number)
            self.written[rel] = _write_shard(os.path.join(self.partial, rel),
                                             {k: np.concatenate(v) for k, v in self.parts.items()})
            self.parts = {}


def _write_shard(path: str, columns: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """One shard as an Arrow stream (the format ``datasets`` writes and memory-maps), streamed to a temporary
    sibling and renamed when complete (a kill never leaves a complete-looking shard); returns its manifest entry.

    Written straight to the file, not through an in-memory copy: a process holds one shard's rows once."""
    import pyarrow as pa

    table = _rows_table(columns)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    # Read back while it is in the page cache: far cheaper than computing the rows it holds.
    return {"size": os.path.getsize(path), "sha256": sha256(path)}


# -- a streamed split, cached by sample key ---------------------------------------------------------------
@torch.no_grad()
def _cache_stream(teachers, stream, output_dir: str, *, preprocess: PreprocessConfig, augment, num_views: int,
                  top_k, dtype: str, ensemble: bool, seed: int, batch_size: int, image_column, label_column,
                  sample_key_column, dataset_info, command, accelerator, max_shard_bytes: int) -> str:
    """A teacher cache of a stream, keyed by sample key (format 4).

    Each process reads its own part of the stream once (``split_for_process``, as a training run splits it),
    decodes each image once and makes its R views with the seeds a streamed training run gives that key at
    epochs ``0..R-1`` (``sample_seed(seed, view, key_id)``).  Its rows (``index`` = the key id) fill its own
    shards, ``data/process-NNNNN/...``, each written when it reaches ``max_shard_size``.  The stream's length is
    unknown, so there is no plan to continue: a stopped generation restarts from the start (its stage removed).
    Unreadable images are left out (a training run skips them with ``on_bad_image="skip"``, else refuses them).
    """
    from accelerate.utils import broadcast_object_list, gather_object
    from datasets import ClassLabel

    image_column, label_column = find_columns(stream, image_column, label_column, require_label=True)
    feature = stream.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"the streamed split's label column {label_column!r} is {shorten(repr(feature))}, not a "
                         "datasets.ClassLabel, so its classes cannot be known without reading the whole stream: cast "
                         f"it with dataset.cast_column({label_column!r}, datasets.ClassLabel(names=[...]))")
    label_names = list(feature.names)
    num_classes = len(label_names)
    if top_k is not None and top_k > num_classes:
        raise ValueError(f"top_k={top_k} is more than the {num_classes} classes; use top_k=None for full logits")
    keys = key_columns(stream, sample_key_column)
    teachers = [bind_teacher(t, preprocess, num_classes, label_names) for t in teachers]
    if not teachers:
        raise ValueError("cache_teacher_outputs needs at least one teacher")
    row_bytes = estimated_bytes_per_view(1 if ensemble else len(teachers), num_classes, top_k, dtype)
    rows_per_shard = max(1, (max_shard_bytes - SHARD_HEADER_BYTES) // row_bytes)
    if max_shard_bytes - SHARD_HEADER_BYTES < row_bytes:
        raise ValueError(f"max_shard_size={max_shard_bytes} bytes holds no row: a row takes {row_bytes} bytes; use at "
                         f"least {SHARD_HEADER_BYTES + row_bytes} bytes (the default is {DEFAULT_MAX_SHARD_SIZE})")
    metadata = CacheMetadata(
        teachers=[_teacher_entry(t) for t in teachers], num_classes=num_classes, num_samples=1,
        num_views=int(num_views), seed=int(seed), student_preprocess=preprocess.to_dict(),
        augmentation=augmentation_dict(augment), train_fingerprint=describe(stream), top_k=top_k, dtype=dtype,
        ensembled=bool(ensemble), label_names=label_names, dataset=dict(dataset_info or {}),
        hfkd_version=__version__, command=command or _default_command(), format_version=KEYED_FORMAT,
        sample_key_columns=keys, stream_files=shard_files(stream))
    output_dir = os.path.abspath(output_dir)
    encode_logits(torch.zeros(1, 1, num_classes), top_k, dtype)  # validates dtype before the teachers run
    partial = output_dir + ".partial"
    plan = {k: v for k, v in metadata.to_dict().items() if k not in ("command", "files")}
    problem = None
    if accelerator.is_main_process:
        try:
            _clear_stages(output_dir, plan, resumable=False)
            os.makedirs(partial, exist_ok=False)
            with open(os.path.join(partial, PLAN_FILE), "w", encoding="utf-8") as f:
                json.dump(plan, f, indent=2, sort_keys=True)
            mark_writer(partial)
        except FileExistsError as e:
            problem = str(e)
    problem = broadcast_object_list([problem])[0]
    if problem:
        raise FileExistsError(problem)
    accelerator.wait_for_everyone()
    rank, world = accelerator.process_index, accelerator.num_processes
    transform = create_image_transform(preprocess, augment is not None, augment)
    mode = "RGB" if preprocess.input_size[0] == 3 else "L"
    # The training run's reader (its decode, key and seeded transform), reading this process's part in order.
    reader = StreamedImageDataset(split_for_process(stream, rank, world), transform, image_column, label_column,
                                  seed=seed, image_mode=mode, on_bad_image="skip", key_columns=keys)
    for t in teachers:
        t.to(accelerator.device)
    weights = [t.weight for t in teachers]
    writer = _KeyedShardWriter(partial, rank, rows_per_shard)
    with disk_full_explained(os.path.dirname(output_dir), f"the teacher cache {output_dir}", needed=None,
                             cleanup=[partial] if accelerator.is_main_process else [],
                             where_to_change="an output_dir", cleanup_only_when_full=True):
        for group in _chunks_of(reader._keyed(), batch_size):
            decoded = [(key, reader._decode(row, key), int(row[label_column])) for key, row, _ in group]
            decoded = [d for d in decoded if d[1] is not None]
            if not decoded:
                continue
            index = np.array([key_id(k) for k, _, _ in decoded], dtype=np.int64)
            labels = np.array([y for _, _, y in decoded], dtype=np.int64)
            for view in range(num_views):
                seeds = [sample_seed(seed, view, int(i)) for i in index]
                x = torch.stack(seeded_batch(transform, [im for _, im, _ in decoded], seed, view, index, seeds))
                logits = [t(x.to(accelerator.device)).logits.float() for t in teachers]
                stacked = (ensemble_probs(logits, weights).log().unsqueeze(1) if ensemble
                           else torch.stack(logits, dim=1)).cpu()
                writer.add({"index": index, "view": np.full_like(index, view, dtype=np.int32),
                            "seed": np.array(seeds, dtype=np.int64), "label": labels,
                            **encode_logits(stacked, top_k, dtype)})
        writer.close()
    if reader.skipped:
        logger.warning("teacher cache: process %d left out %d unreadable image(s) of the stream (e.g. %s)", rank,
                       len(reader.skipped), shorten(reader.skipped[0]))
    gathered = gather_object([(writer.written, writer.rows)])
    manifest, rows = {}, 0
    for written, count in gathered:
        manifest.update(written)
        rows += count
    problem = None
    if accelerator.is_main_process:
        missing = manifest_problems(partial, manifest, content=False)
        if missing:
            problem = (f"the teacher cache {output_dir}: the main process does not see every process's shards in "
                       f"{partial} ({'; '.join(missing[:3])}): with several machines, output_dir must be on a file "
                       "system they all share")
        elif rows == 0:
            problem = f"the teacher cache {output_dir}: the stream has no readable sample; nothing to cache"
    problem = broadcast_object_list([problem])[0]
    if problem:
        raise RuntimeError(problem)
    if accelerator.is_main_process:
        metadata.num_samples = rows // num_views
        metadata.files = {rel: manifest[rel] for rel in sorted(manifest)}
        metadata.save(partial)
        write_dataset_card(partial, metadata)
        os.replace(partial, output_dir)
        for leftover in (PLAN_FILE, WRITER_MARKER):
            os.remove(os.path.join(output_dir, leftover))
    accelerator.wait_for_everyone()
    return output_dir


def _chunks_of(items, size: int):
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


class _KeyedShardWriter:
    """One process's rows of a stream's cache, written ``rows_per_shard`` at a time into its own folder.

    ``data/process-RRRRR/FFFFF/data-NNNNN.arrow``: a folder per process (processes never collide) and a
    subfolder per ``MAX_FILES_PER_FOLDER`` shards (the Hub's limit per folder).
    """

    def __init__(self, partial: str, rank: int, rows_per_shard: int):
        self.partial, self.rank, self.rows_per_shard = partial, rank, rows_per_shard
        self.parts: Dict[str, List[np.ndarray]] = {}
        self.pending = 0
        self.count = 0
        self.rows = 0
        self.written: Dict[str, Dict[str, Any]] = {}

    def add(self, columns: Dict[str, np.ndarray]) -> None:
        for name, values in columns.items():
            self.parts.setdefault(name, []).append(values)
        self.pending += len(columns["index"])
        self.rows += len(columns["index"])
        while self.pending >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def close(self) -> None:
        if self.pending:
            self._flush(self.pending)

    def _flush(self, n: int) -> None:
        columns = {k: np.concatenate(v) for k, v in self.parts.items()}
        self.parts = {k: [v[n:]] for k, v in columns.items()}
        self.pending -= n
        per_folder = cache_format.MAX_FILES_PER_FOLDER
        rel = (f"{DATA_FOLDER}/process-{self.rank:05d}/{self.count // per_folder:05d}/"
               f"data-{self.count:05d}.arrow")
        self.written[rel] = _write_shard(os.path.join(self.partial, rel), {k: v[:n] for k, v in columns.items()})
        self.count += 1
