"""Run the frozen teachers once over R seeded views of every training image and store their logits.

Views are made by the same :class:`ImageClassificationDataset` and the same timm transform the
trainer uses: view ``v`` of image ``i`` is the dataset's row ``i`` at epoch ``v`` with seed
``seed``, so training can re-create it bitwise from ``sample_seed(seed, v, i)``.

With N processes, process ``r`` takes a contiguous block of the images whose size is a multiple
of the batch size, so every batch is a batch of the 1-process run: the teachers see the same
tensors and the merged cache is bitwise the 1-process one.  Each process writes one shard per
view; the main process merges them in ``(index, view)`` order.

Generation is resumable.  A shard appears under its final name only when it is complete (written
beside it, then renamed), and ``.partial`` holds the generation's plan (:func:`_plan`: the cache's
metadata without the command, the teachers' weight hashes, and the number of processes and the batch
size, which fix the blocks).
The same command run again after a kill or a preemption keeps the finished views (those whose shards
every process finished) and computes only the others; a stopped generation with another plan is
removed as before.  The teachers see the same tensors either way, so the result is bitwise the
uninterrupted one.

A preemption signal (SIGTERM, SIGINT, SIGUSR1) stops generation at the next batch boundary all
processes agree on: the finished shards stay in ``.partial`` for the requeued command, and
:class:`hfkd.preemption.Preempted` exits with ``128 + the signal number``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import sys
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..data.loading import find_columns
from ..data.transforms import AugmentConfig, ImageClassificationDataset, create_image_transform, sample_seed
from ..files import abandoned_by_hfkd, disk_full_explained, file_manifest, mark_writer, unmark_writer
from ..hub.secrets import redact_secrets
from ..launch import create_accelerator
from ..losses import ensemble_probs
from ..models.backbone import Backbone, hub_id
from ..models.preprocess import PreprocessConfig
from ..models.teacher import bind_teacher
from ..models.zero_shot import zero_shot_entry
from ..preemption import Preemption
from ..version import __version__
from .card import write_dataset_card
from .format import (UNLISTED_FILES, CacheMetadata, augmentation_dict, dataset_fingerprint, datasets_fingerprint,
                     encode_logits, estimated_bytes_per_view, images_sha256)

logger = logging.getLogger(__name__)

#: in ``.partial``: what a stopped generation was making, so that only the same generation continues it
PLAN_FILE = "hfkd_generation_plan.json"


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


def _block(num_samples: int, batch_size: int, rank: int, world: int) -> range:
    per_process = math.ceil(math.ceil(num_samples / world) / batch_size) * batch_size
    return range(min(num_samples, rank * per_process), min(num_samples, (rank + 1) * per_process))


@contextmanager
def _quiet_datasets():
    """No progress bar per shard (one per view and process would flood the log); restored after."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _weights_sha256(module: torch.nn.Module) -> str:
    """A hash of a teacher's weights: the metadata names a teacher, which a retrained folder keeps."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plan(metadata: CacheMetadata, teachers: Sequence[Any], processes: int, batch_size: int) -> Dict[str, Any]:
    """What decides the shards' contents and boundaries: a stopped generation continues only under the same."""
    plan = {k: v for k, v in metadata.to_dict().items() if k not in ("command", "files")}
    plan.update(processes=int(processes), batch_size=int(batch_size),
                teacher_weights=[_weights_sha256(t.backbone) for t in teachers])
    return json.loads(json.dumps(plan, sort_keys=True))  # tuples -> lists, as read back from the file


def _read_plan(partial: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(partial, PLAN_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _clear_stages(output_dir: str, plan: Dict[str, Any]) -> bool:
    """Refuse an existing cache folder; of the ``.partial``/``.staging`` stages a stopped or failed hfkd
    generation left (its writer marker names a dead process of this host, or this process), keep a
    ``.partial`` of the same plan (returns True: the generation continues) and remove the others; refuse
    stages hfkd did not provably leave."""
    if os.path.lexists(output_dir):
        raise FileExistsError(f"{output_dir} already exists; hfkd never overwrites a folder: choose another "
                              "output_dir or remove it yourself")
    resume = False
    for stage in (output_dir + ".partial", output_dir + ".staging"):
        if not os.path.lexists(stage):
            continue
        if not abandoned_by_hfkd(stage):
            raise FileExistsError(f"{stage} already exists and is not a stage a stopped hfkd cache generation left "
                                  "(another one may be writing it); hfkd never overwrites a folder: choose another "
                                  "output_dir or remove it yourself")
        if stage.endswith(".partial") and _read_plan(stage) == plan:
            logger.warning("continuing the cache generation that stopped in %s: its finished shards are kept", stage)
            resume = True
            continue
        logger.warning("removing %s, left by an earlier cache generation that stopped%s", stage,
                       " with other settings" if _read_plan(stage) is not None else "")
        shutil.rmtree(stage)
    return resume


def _cache_bytes(num_rows: int, num_teachers: int, num_classes: int, top_k: Optional[int], dtype: str) -> int:
    """About what the generation writes: the shards, then the merged copy next to them."""
    return 2 * num_rows * estimated_bytes_per_view(num_teachers, num_classes, top_k, dtype)


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
    """
    from accelerate.utils import broadcast_object_list

    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if augment is None and num_views > 1:
        raise ValueError(f"num_views={num_views} without augmentation would store {num_views} identical views; "
                         "pass an augmentation (AugmentConfig) or num_views=1 for fixed labels")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None (full logits), got {top_k}")
    if accelerator is None:
        accelerator = create_accelerator()
    preprocess = student.preprocess if isinstance(student, Backbone) else student
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

    rank = accelerator.process_index
    partial, staging = output_dir + ".partial", output_dir + ".staging"
    plan = _plan(metadata, teachers, accelerator.num_processes, batch_size)
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
        with open(os.path.join(partial, PLAN_FILE), "w", encoding="utf-8") as f:
            json.dump(plan, f, indent=2, sort_keys=True)
    # A full disk removes what this process wrote (the main process: both stages) to free the space; any other
    # failure (a teacher's error, a lost peer process) keeps the finished shards for the same command to continue.
    needed = _cache_bytes(len(train_dataset) * num_views, 1 if ensemble else len(teachers), num_classes, top_k, dtype)
    own = [partial, staging] if accelerator.is_main_process else [
        os.path.join(partial, f"rank{rank:05d}-view{view:05d}") for view in range(num_views)]
    with disk_full_explained(os.path.dirname(output_dir), f"the teacher cache {output_dir}", needed=needed,
                             cleanup=own, where_to_change="an output_dir", cleanup_only_when_full=True):
        if accelerator.is_main_process:
            mark_writer(partial)  # a stopped generation's stage is then recognisably hfkd's, and removable
        accelerator.wait_for_everyone()
        _generate(accelerator, train_dataset, teachers, preprocess, augment, image_column, label_column, seed,
                  num_views, batch_size, num_workers, ensemble, top_k, dtype, metadata, output_dir)
    accelerator.wait_for_everyone()
    return output_dir


def _shard_name(rank: int, view: int) -> str:
    return f"rank{rank:05d}-view{view:05d}"


def _finished_views(partial: str, ranks: Sequence[int], num_views: int) -> List[int]:
    """The views every process with samples finished (a shard exists under its final name only when complete)."""
    return [view for view in range(num_views)
            if all(os.path.isdir(os.path.join(partial, _shard_name(r, view))) for r in ranks)]


def _generate(accelerator, train_dataset, teachers, preprocess, augment, image_column, label_column, seed, num_views,
              batch_size, num_workers, ensemble, top_k, dtype, metadata, output_dir) -> None:
    """Run the teachers over every view into ``.partial`` shards; the main process merges them into the cache."""
    from accelerate.utils import broadcast_object_list
    from datasets import concatenate_datasets, load_from_disk
    from torch.utils.data import DataLoader, Subset

    rank, world = accelerator.process_index, accelerator.num_processes
    partial, staging = output_dir + ".partial", output_dir + ".staging"
    transform = create_image_transform(preprocess, augment is not None, augment)
    mode = "RGB" if preprocess.input_size[0] == 3 else "L"
    views = ImageClassificationDataset(train_dataset, transform, image_column, label_column, seed=seed, image_mode=mode)
    block = _block(len(views), batch_size, rank, world)
    weights = [t.weight for t in teachers]
    for t in teachers:
        t.to(accelerator.device)
    # Every process polls at the same points: as many as the largest block has batches.
    num_batches = max(math.ceil(len(_block(len(views), batch_size, r, world)) / batch_size) for r in range(world))
    # Every process skips the same views (the main process judges them), so all poll at the same points.
    writers = [r for r in range(world) if len(_block(len(views), batch_size, r, world))]  # the others write nothing
    finished = _finished_views(partial, writers, num_views) if accelerator.is_main_process else None
    finished = broadcast_object_list([finished])[0]
    if finished and accelerator.is_main_process:
        logger.warning("teacher cache: %d of %d views were finished by the generation that stopped; computing the "
                       "other %d", len(finished), num_views, num_views - len(finished))
    with Preemption(accelerator) as preemption:
        for view in range(num_views):
            if view in finished:
                continue
            views.set_epoch(view)
            loader = DataLoader(Subset(views, list(block)), batch_size=batch_size, num_workers=num_workers)
            _teacher_view(teachers, weights, loader, num_batches, preemption, accelerator, view, seed, ensemble,
                          top_k, dtype, os.path.join(partial, _shard_name(rank, view)))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pieces = [load_from_disk(os.path.join(partial, _shard_name(r, v))) for v in range(num_views) for r in writers]
        merged = concatenate_datasets(pieces).sort(["index", "view"])
        os.makedirs(staging)
        mark_writer(staging)  # a generation stopped while merging leaves a stage a retry may remove
        with _quiet_datasets():
            merged.save_to_disk(staging)
        unmark_writer(staging)  # the cache's own files only, from here on
        metadata.files = file_manifest(staging, exclude=UNLISTED_FILES)  # sizes checked on open, hashes on request
        metadata.save(staging)
        write_dataset_card(staging, metadata)
        os.replace(staging, output_dir)  # appears complete or not at all
        del pieces, merged
        shutil.rmtree(partial)


def _teacher_view(teachers, weights, loader, num_batches, preemption, accelerator, view, seed, ensemble, top_k,
                  dtype, shard) -> None:
    """The teachers' outputs of one view of this process's block, saved as one shard at ``shard``."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    parts: Dict[str, List[np.ndarray]] = {}
    batches = iter(loader)
    for _ in range(num_batches):
        if preemption.requested():
            # The finished shards stay in .partial: the requeued command continues from them.
            accelerator.wait_for_everyone()
            raise preemption.stop()
        batch = next(batches, None)
        if batch is None:  # this block is shorter than the largest one
            continue
        x = batch["pixel_values"].to(accelerator.device)
        logits = [t(x).logits.float() for t in teachers]
        stacked = (ensemble_probs(logits, weights).log().unsqueeze(1) if ensemble
                   else torch.stack(logits, dim=1)).cpu()
        index = batch["index"].numpy().astype(np.int64)
        columns = {"index": index, "view": np.full_like(index, view, dtype=np.int32),
                   "seed": np.array([sample_seed(seed, view, int(i)) for i in index], dtype=np.int64),
                   "label": batch["labels"].numpy().astype(np.int64), **encode_logits(stacked, top_k, dtype)}
        for k, v in columns.items():
            parts.setdefault(k, []).append(v)
    if parts:
        # Written beside its final name and renamed when complete: a killed write never looks finished.
        table = _rows_table({k: np.concatenate(v) for k, v in parts.items()})
        writing = shard + ".writing"
        if os.path.isdir(writing):  # a killed write of this process's shard, inside hfkd's own stage
            shutil.rmtree(writing)
        with _quiet_datasets():
            Dataset(InMemoryTable(table)).save_to_disk(writing)
        if os.path.isdir(shard):  # finished before a stop that left other processes' shards of this view unfinished
            shutil.rmtree(shard)
        os.replace(writing, shard)
