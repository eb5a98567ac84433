"""Training on a streamed split (``datasets.IterableDataset``): the checks, the loop and the resume.

The map-style loop counts an epoch in batches of a known length and lets Accelerate shard one global order.
A stream has no length and each process reads its own shards (``hfkd/data/stream.py``), so here:

- ``max_steps`` is the budget; an epoch is one pass over this process's part of the stream, and processes may
  end their epochs at different steps (their parts need not be equally long: DDP only needs every process to
  take the same number of steps).  Schedules counted in epochs are refused; evaluating or saving per "epoch"
  happens at the end of the run.
- The stream is read in the training process (its batches decoded by worker processes with
  ``dataloader_num_workers``) and the batches moved to the device; nothing goes through Accelerate's
  data-loader preparation, which would read an iterable dataset on the main process only and send each process
  its slice.  Gradient accumulation counts batches across epochs (every window is full).
- A checkpoint records every process's position (``stream_position`` of its last trained batch); a resume
  on the same number of processes continues each process from its own, bitwise as an uninterrupted run.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from accelerate.utils import gather_object, send_to_device

from ..data import checks
from ..data.stream import KEY_COLUMN, StreamedImageDataset, describe, is_stream, key_columns, split_for_process
from ..data.transforms import create_image_transform
from ..settings import shorten

logger = logging.getLogger(__name__)


def random_access_refusal(method) -> Optional[str]:
    """Why ``method`` cannot train from a stream (its ``needs_random_access``), or ``None``."""
    reason = getattr(method, "needs_random_access", None)
    if not reason:
        return None
    return (f"method {method.name!r} cannot train from a stream: {reason}. Train it on a map-style split (load the "
            "data without streaming; datasets keeps it memory-mapped on disk), or use a method that reads each batch "
            "alone (kd, meal_v2, feature_kd)")


def check_stream_run(args, method, task, teacher_cache, train, evaluation) -> None:
    """Everything a streamed run refuses, all at once, before the first step."""
    problems: List[str] = []
    refusal = random_access_refusal(method)
    if refusal:
        problems.append(refusal)
    if args.max_steps <= 0:
        problems.append("the streamed train split has no known length, so num_train_epochs cannot be turned into "
                        "steps: set max_steps (--max_steps N)")
    # A teacher cache is checked when opened: one keyed by sample key, of this stream, is used (hfkd/cache/lookup.py).
    if args.crops_per_image > 1:
        problems.append(f"crops_per_image={args.crops_per_image}: a stream's reader makes one view per decoded image; "
                        "set crops_per_image=1, or train on the split without streaming")
    if args.verify_images:
        problems.append("verify_images reads every image before training, which a stream cannot do without reading "
                        "it twice; drop it, and choose what an unreadable image does with on_bad_image (raise/skip)")
    if args.gpu_decode:
        problems.append("gpu_decode reads each image's file by row of a map-style split; a stream's images are decoded "
                        "in its reader: drop gpu_decode, or train on the split without streaming")
    if args.uses_epoch_schedule or args.lr_scheduler_type == "multistep":
        problems.append("the learning-rate schedule is counted in epochs (lr_step_per_epoch, warmup_epochs, "
                        "warmup_start_factor or multistep milestones), and a stream's epoch has no known length: use "
                        "a schedule in steps (cosine, linear, constant; warmup_steps or warmup_ratio)")
    if getattr(task, "name", "classification") != "classification":
        problems.append(f"task {task.name!r}: streams are supported for classification only")
    for split, data in (("train", train), ("eval", evaluation)):
        if data is not None and is_stream(data) and not data.features:
            problems.append(f"the streamed {split} split does not declare its features (datasets could not read "
                            "them without reading data): cast it with dataset = dataset.cast(features) first")
    if train.features:
        try:
            key_columns(train, args.sample_key_column)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("cannot train on the streamed split:\n" + "\n".join(f"  - {p}" for p in problems))


def check_stream_targets(student, train, evaluation, image_column: str, label_column: str):
    """The stream's classes from its features (a stream's labels cannot all be read before training)."""
    from datasets import ClassLabel

    feature = train.features[label_column]
    if not isinstance(feature, ClassLabel):
        raise ValueError(f"the streamed train split's label column {label_column!r} is {shorten(repr(feature))}, not "
                         "a datasets.ClassLabel, so its classes cannot be known without reading the whole stream: "
                         f"cast it with dataset = dataset.cast_column({label_column!r}, datasets.ClassLabel("
                         "names=[...]))")
    names = list(feature.names)
    if len(names) != student.num_classes:
        raise ValueError(f"the dataset has {len(names)} classes but the student {student.name} predicts "
                         f"{student.num_classes}; create it with num_classes={len(names)}")
    if student.label_names is None:
        student.set_label_names(names)
    elif list(student.label_names) != names:
        raise ValueError(f"the student's label names {shorten(student.label_names)} differ from the dataset's "
                         f"{shorten(names)}; relabel the student with label_names=dataset label names")
    if evaluation is not None:
        if is_stream(evaluation):
            if label_column not in (evaluation.features or {}):
                raise ValueError(f"the streamed eval split has no column {label_column!r}")
            checks.check_eval_label_names(names, evaluation, label_column)
        else:
            checks.check_labels(evaluation, label_column, "eval", student.num_classes)
            checks.check_eval_label_names(names, evaluation, label_column)
    return names


def wrap_stream(trainer, dataset, training: bool) -> StreamedImageDataset:
    """This process's part of a training stream (shards' order shuffled per epoch), or an eval stream read once."""
    args, acc = trainer.args, trainer.accelerator
    transform = create_image_transform(trainer.student.preprocess, training, trainer.augment)
    mode = "RGB" if trainer.student.preprocess.input_size[0] == 3 else "L"
    common = dict(image_column=trainer.image_column, label_column=trainer.label_column, seed=args.seed,
                  image_mode=mode, on_bad_image=args.on_bad_image)
    if not training:  # read once, on the main process, its batches sent to the others (Accelerate's dispatch)
        keys = [args.sample_key_column] if args.sample_key_column in (dataset.features or {}) else (
            [KEY_COLUMN] if KEY_COLUMN in (dataset.features or {}) else [])
        return StreamedImageDataset(dataset, transform, key_columns=keys, **common)
    keys = key_columns(dataset, args.sample_key_column)
    # datasets shuffles the shards' order by (seed + epoch); a buffer of 1 keeps its state exact on resume (the
    # samples are shuffled in blocks by StreamedImageDataset).  Shuffled before the split: every process orders
    # the shards alike and takes its own.
    fingerprint = describe(dataset)
    stream = dataset.shuffle(seed=args.seed, buffer_size=1)
    stream = split_for_process(stream, acc.process_index, acc.num_processes)
    return StreamedImageDataset(stream, transform, key_columns=keys, batch_size=trainer._images_per_batch,
                                buffer_size=args.stream_shuffle_buffer, drop_last=args.dataloader_drop_last,
                                fingerprint=fingerprint, num_workers=args.dataloader_num_workers, **common)


def steps(args):
    """``(steps per epoch, steps, epochs)``: a stream's "epoch", for the scheduler and the methods, is the whole run."""
    return args.max_steps, args.max_steps, 1


def train_loop(trainer) -> None:
    """Train from this process's stream until ``max_steps`` (or a stop); epochs follow each other per process.

    ``eval_strategy`` / ``save_strategy`` ``"epoch"``: processes end their parts of a stream at different steps, so
    there is no end of an epoch common to all of them to evaluate or save at; the run is evaluated (by the caller)
    and saved at its end instead, and ``"steps"`` does it along the way.
    """
    acc, state, args = trainer.accelerator, trainer.state, trainer.args
    if "epoch" in (args.eval_strategy, args.save_strategy) and acc.is_main_process:
        logger.warning("streamed train split: eval_strategy/save_strategy 'epoch' act at the end of the run (processes "
                       "end their parts of the stream at different steps); use 'steps' to evaluate or save on the way")
    _steps_from_stream(trainer)
    if (args.save_strategy == "epoch" and not trainer._preemption.requested() and state.global_step
            and trainer._last_save_step != state.global_step):
        trainer._save()


def _steps_from_stream(trainer) -> None:
    acc, state, data = trainer.accelerator, trainer.state, trainer.train_dataset
    trainer._windows = (0, float("inf"))  # every accumulation window is full: no end of a loader to close one
    epoch, resumed = data.epoch, trainer._stream_position is not None
    while state.global_step < state.max_steps and not state.should_stop:
        state.epoch = epoch
        data.set_epoch(epoch)
        trainer.method.on_epoch_start(epoch)
        trainer.callbacks("on_epoch_begin", trainer, epoch)
        batches = 0
        for batch in data:
            trainer._stream_position = batch.pop("stream_position")
            trainer._train_step(send_to_device(batch, acc.device))
            batches += 1
            state.batches_in_epoch += 1
            if not acc.sync_gradients:
                continue
            trainer.lr_scheduler.step()
            state.global_step += 1
            if trainer.model_ema is not None:
                trainer.model_ema.update(trainer._student_module(), step=state.global_step)
            trainer._after_step()
            if state.global_step >= state.max_steps or state.should_stop or trainer._preemption.requested():
                return
        if batches == 0 and not resumed:
            raise ValueError(f"process {acc.process_index}'s part of the streamed train split is empty (epoch {epoch}); "
                             "with several processes every one needs samples: use fewer processes or more shards")
        resumed = False
        trainer.method.on_epoch_end(epoch)
        trainer.callbacks("on_epoch_end", trainer, epoch)
        epoch, state.batches_in_epoch = epoch + 1, 0
        # The position "start of the next epoch" (a checkpoint before its first batch continues there).
        trainer._stream_position = {"epoch": epoch, "block": 0, "offset": 0, "state": None}


def checkpoint_positions(trainer) -> Dict[str, Any]:
    """Every process's stream position (a collective: every process calls it, as it calls the checkpoint save)."""
    acc = trainer.accelerator
    position = trainer._stream_position or {"epoch": trainer.state.epoch, "block": 0, "offset": 0, "state": None}
    positions = gather_object([position]) if acc.num_processes > 1 else [position]
    return {"world_size": acc.num_processes, "positions": positions}


def resume_position(trainer, recorded: Dict[str, Any], path: str) -> int:
    """Put this process's stream at the checkpoint's position; refused when the processes' parts changed."""
    acc = trainer.accelerator
    stream = recorded.get("stream")
    if not stream:
        raise ValueError(f"{path} was written by a run on a map-style split, and this run streams its train split; "
                         "resume with the data the checkpoint was trained on")
    world = int(stream["world_size"])
    if world != acc.num_processes:
        raise ValueError(
            f"{path} was written by {world} process(es) reading their own parts of the stream; on "
            f"{acc.num_processes} the stream is split into other parts, and where each process stood cannot be "
            f"carried over exactly (samples would be skipped or repeated). Resume on {world} process(es)")
    position = stream["positions"][acc.process_index]
    trainer.train_dataset.start_at(position)
    trainer._stream_position = position
    return 0
