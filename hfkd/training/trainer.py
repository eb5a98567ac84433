"""``DistillationTrainer``: one training loop for every method, on Accelerate."""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..cache.lookup import check_crops_per_image, open_teacher_cache
from ..data import checks
from ..data.device_decode import DeviceDecoder, gpu_decode_device, tensor_transform
from ..data.labels import FROM_DATASET
from ..data.loading import find_columns
from ..data.samplers import RemainingEpochBatchSampler, epoch_order, seedable_sampler
from ..data.stream import STREAM_WITHOUT_LABELS, is_stream, split_size
from ..data.transforms import AugmentConfig, ImageClassificationDataset, collate_rows, create_image_transform
from ..data.views import spread_views
from ..hub.card import PLOT_FILENAME, create_model_card, plot_training_curves
from ..hub.push import push_to_hub
from ..hub.secrets import redact_secrets
from ..hub.save import check_save_target, save_student
from ..launch import create_accelerator
from ..methods.base import DistillationMethod, MethodContext, without_labels_problem
from ..methods.registry import create_method
from ..models.backbone import Backbone
from ..models.factory import create_backbone
from ..models.heads import headless_backbone, headless_problem
from ..models.teacher import Teacher, bind_teacher
from ..output_dir import OutputDirLock, check_output_dir, remove_run_outputs
from ..preemption import Preemption, PreemptionRequested
from ..settings import check_finite_settings, shorten
from ..tasks import Task, create_task
from ..tasks.evaluation import evaluate_agreement
from . import streaming, validation
from .args import DistillationArguments
from .bad_images import BadImageLog, verify_splits
from .callbacks import CallbackHandler, ProgressCallback, TrainerCallback
from .checkpoint import load_checkpoint, read_state, resolve_checkpoint, save_checkpoint
from .ema import create_model_ema, ema_state, load_ema_state, split_ema_state
from .fsdp import (check_fsdp_run, fsdp_plugin, full_state_dict, materialize, prepare_sharded, shard_with_accelerator,
                   unsharded_skeleton)
from .lineage import backbone_lineage, build_lineage
from .optim import create_optimizer, create_scheduler
from .resume import check_same_run, run_signature
from .speed import channels_last_batch, prepare_student, prepare_teachers
from .syncbn import apply_sync_batchnorm

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # this process's batches of the current epoch
    # Where the epoch stands in samples of its global order (all processes together): what a run resumed
    # on another number of processes continues from (docs/launch.md, "Resuming on another number of processes").
    samples_in_epoch: int = 0
    max_steps: int = 0
    num_epochs: int = 0
    log_history: List[Dict[str, Any]] = field(default_factory=list)
    train_runtime: float = 0.0
    should_stop: bool = False
    skipped_steps: int = 0  # batches whose loss was not finite (on_nonfinite_loss="skip")


class DistillationModule(nn.Module):
    """Student plus the method's own modules: the one thing DDP wraps and the optimiser sees."""

    def __init__(self, student: Backbone, method: DistillationMethod):
        super().__init__()
        self.student = student
        self.method = method

    def forward(self, batch: Dict[str, torch.Tensor], teacher_outputs: Sequence[Any]):
        student_out = self.student(batch["pixel_values"], self.method.student_request)
        return self.method(batch, student_out, teacher_outputs)


def _dataset_info(train, evaluation) -> Dict[str, Any]:
    info = getattr(train, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    return {"id": name, "config": getattr(info, "config_name", None), "train_samples": split_size(train),
            "eval_samples": split_size(evaluation) if evaluation is not None else 0,
            **({"streamed": True} if is_stream(train) else {})}


class DistillationTrainer:
    """Train a student with any registered method.

    Args:
        student: a :class:`Backbone` or anything :func:`create_backbone` takes.
        teachers: teachers (:class:`Teacher`, :class:`Backbone`, names); frozen here.
        method: a :class:`DistillationMethod` or a registered name.
        args: :class:`DistillationArguments`.
        train_dataset / eval_dataset: ``datasets.Dataset`` splits with an image and a label column.
        callbacks: extra :class:`TrainerCallback` objects.
        augment: training augmentation on top of the student's preprocessing.
        task: ``"classification"`` (default), ``"regression"`` or a :class:`hfkd.tasks.Task`.
        teacher_cache: a teacher cache (folder or Hub dataset id, see :mod:`hfkd.cache`) to distil from
            instead of ``teachers``; default ``args.teacher_cache``.
    """

    def __init__(
        self,
        student: Union[Backbone, Any],
        teachers: Optional[Sequence[Any]] = None,
        method: Union[str, DistillationMethod] = "kd",
        args: Optional[DistillationArguments] = None,
        train_dataset=None,
        eval_dataset=None,
        callbacks: Optional[List[TrainerCallback]] = None,
        augment: Optional[AugmentConfig] = None,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        accelerator=None,
        dataset_info: Optional[Dict[str, Any]] = None,
        task: Union[None, str, Task] = None,
        teacher_cache: Optional[str] = None,
    ):
        self.args = args or DistillationArguments()
        self.accelerator = accelerator or create_accelerator(self.args)
        self._claim_output_dir()
        check_fsdp_run(self.accelerator, self.args)  # what a sharded run cannot do, before anything is built
        self._sharded = fsdp_plugin(self.accelerator) is not None
        self.method = create_method(method) if isinstance(method, str) else method
        if not isinstance(self.method, DistillationMethod):
            raise TypeError(f"method must be a DistillationMethod or a registered name, not {type(method).__name__}")
        self.student = student if isinstance(student, Backbone) else create_backbone(student)
        if train_dataset is None:
            raise ValueError("train_dataset is required (see hfkd.load_image_dataset)")
        checks.check_split(train_dataset, "train_dataset")
        checks.check_split(eval_dataset, "eval_dataset")
        check_finite_settings(self.method.hparams(), f"method {self.method.name!r}")
        self.task = create_task(task)
        self._streamed = is_stream(train_dataset)  # a streamed train split: hfkd/training/streaming.py
        self._stream_position = None  # where this process's stream stands after its last trained batch
        if self._streamed:
            streaming.check_stream_run(self.args, self.method, self.task, teacher_cache or self.args.teacher_cache,
                                       train_dataset, eval_dataset)
        self.image_column, self.label_column = find_columns(train_dataset, image_column, label_column,
                                                            require_label=False)
        self._check_labels_needed(train_dataset)
        if not self.method.trains_student_head:  # saved as a backbone at the end: checked before the first step
            problem = headless_problem(self.student)
            if problem:
                raise ValueError(f"method {self.method.name!r} without labels saves the student without its head, "
                                 f"but {problem}; use a timm student, or pass ce_weight > 0 to train and keep the head")
        if self._streamed:
            if self.label_column is None:
                raise ValueError(STREAM_WITHOUT_LABELS)
            self.eval_label_column = self.label_column if eval_dataset is not None else None
            self.label_names = streaming.check_stream_targets(self.student, train_dataset, eval_dataset,
                                                              self.image_column, self.label_column)
        else:
            # The eval split may have labels of its own (accuracy) or none (agreement with the teachers).
            self.eval_label_column = find_columns(eval_dataset, self.image_column, label_column or self.label_column,
                                                  require_label=False)[1] if eval_dataset is not None else None
            self.label_names = self.task.check_targets(self.student, train_dataset, eval_dataset, self.image_column,
                                                       self.label_column, self.eval_label_column)
        self.verified_bad_images = {}  # split -> the bad images verify_images left out
        if self.args.verify_images:
            train_dataset, eval_dataset, self.verified_bad_images = verify_splits(
                train_dataset, eval_dataset, self.image_column, self.args.on_bad_image)
        teachers = [teachers] if isinstance(teachers, (str, nn.Module, Teacher)) else list(teachers or [])
        # A teacher cache stands in for the teachers; it refuses a run it does not fit (hfkd/cache/lookup.py).
        self.teacher_cache = open_teacher_cache(
            teacher_cache or self.args.teacher_cache, teachers=teachers, method=self.method, student=self.student,
            train_dataset=train_dataset, image_column=self.image_column, label_column=self.label_column,
            label_names=self.label_names, augment=augment, seed=self.args.seed,
            revision=self.args.teacher_cache_revision, sample_key_column=self.args.sample_key_column)
        if self.teacher_cache is None:
            self.method.check_teachers(len(teachers))
        if not self._streamed:  # a stream refuses crops_per_image > 1 itself (check_stream_run)
            self._check_crops_per_image(train_dataset)
        # A method reading only the teachers' features binds them without a class check (num_classes None).
        classes = self.student.num_classes if self.method.reads_teacher_logits else None
        self.teachers: List[Teacher] = [bind_teacher(t, self.student.preprocess, classes, self.student.label_names)
                                        for t in teachers]
        self.augment = augment or getattr(self.teacher_cache, "augment", None) or AugmentConfig()
        self.dataset_info = dict(dataset_info or _dataset_info(train_dataset, eval_dataset))
        self.train_dataset = self._wrap(train_dataset, training=True)
        if self.teacher_cache is not None:
            self.teacher_cache.attach(self.train_dataset, self.student.preprocess)
        self.device_decoder = self._device_decoder()
        self.eval_dataset = self._wrap(eval_dataset, training=False) if eval_dataset is not None else None
        self.callbacks = CallbackHandler([ProgressCallback(), BadImageLog(), *(callbacks or [])])
        self.state = TrainerState()
        self.teacher_metrics: Dict[str, Dict[str, float]] = {}
        self._model = None  # the prepared DistillationModule
        self._student_skeleton = None  # FSDP: an unsharded copy of the student on the meta device, for save_model
        self._whole_student = None  # FSDP: the gathered student while save_model runs (main process)
        self.model_ema = None  # timm ModelEmaV3 of the student when args.model_ema
        self._preemption = Preemption()  # signal handlers are installed only while train() runs
        self._eval_loader = None
        self._last_save, self._last_save_step = None, -1
        self._windows: Optional[tuple] = None  # (first batch, end) of the loader being trained on, in epoch batches

    # -- set-up -----------------------------------------------------------------------------------
    def _claim_output_dir(self) -> None:
        """Check the output folder before anything else, then lock it for this run (main process)."""
        args, acc = self.args, self.accelerator
        check_output_dir(args.output_dir, resume=bool(args.resume_from_checkpoint),
                         overwrite=args.overwrite_output_dir, check_lock=acc.is_main_process)
        if acc.is_main_process:
            self.output_lock = OutputDirLock(args.output_dir).acquire()
            if args.overwrite_output_dir and not args.resume_from_checkpoint:
                for path in remove_run_outputs(args.output_dir):
                    logger.warning("overwrite_output_dir: removed %s", path)
        acc.wait_for_everyone()

    def label_source(self) -> Optional[str]:
        """Where the student's label names come from: the dataset's label column, or what the caller recorded in
        ``dataset_info["label_source"]`` (``--label_names``, a teacher's config); ``None`` when unknown."""
        recorded = self.dataset_info.get("label_source")  # e.g. --label_names naming a stream's integer labels
        if recorded is not None:
            return recorded
        return FROM_DATASET if self.label_column is not None and self.label_names is not None else None

    def _check_labels_needed(self, train_dataset) -> None:
        """Data without a label column trains only a method that reads no labels (the method says whether it does)."""
        if self.label_column is not None:
            return
        columns = list(train_dataset.features)
        if self.task.requires_labels:
            raise ValueError(f"a {self.task.name} run needs targets, but the train split has no label column (its "
                             f"columns: {shorten(columns)}); name it with label_column=... (--label_column)")
        problem = without_labels_problem(self.method, columns)
        if problem:
            raise ValueError(problem)

    def _check_crops_per_image(self, train_dataset) -> None:
        args = self.args
        own = False
        if args.crops_per_image > 1 and self.label_column is not None:
            labels = (train_dataset.labels if isinstance(train_dataset, ImageClassificationDataset)
                      else train_dataset[self.label_column])
            own = self.method.train_batch_sampler(labels, args.per_device_train_batch_size, args.seed) is not None
        check_crops_per_image(args.crops_per_image, self.teacher_cache, self.method.name, own_batches=own)

    def _device_decoder(self) -> Optional[DeviceDecoder]:
        """gpu_decode: the loader yields the training images' bytes, the step decodes and crops them on the GPU.

        Without a CUDA device the run keeps the CPU path, with one warning: torchvision's decoder on a CPU is
        slower than Pillow in the loader, and the crop boxes are the same either way.
        """
        if not self.args.gpu_decode:
            return None
        dataset = self.train_dataset
        tensor_transform(dataset.transform)  # PIL-only augmentations are refused by name, with or without a GPU
        device = gpu_decode_device(self.accelerator.device)
        if device is None:
            return None
        decoder = DeviceDecoder(dataset.transform, device, dataset.image_mode)
        dataset._encoded_dataset()  # refuses an image column that holds no image files
        dataset.encoded = True
        if self.teacher_cache is not None:
            # Warned, not refused: the boxes, flips and jitter are the stored views'; only the decoder's rounding
            # (about one level of 255 on average) separates the pixels from those the teachers saw.
            warnings.warn("gpu_decode with a teacher cache: the cache's views were decoded by Pillow on the CPU, this "
                          "run decodes them with nvJPEG; the crop boxes are the same and the pixels differ by the "
                          "decoders' rounding (docs/performance.md). Leave gpu_decode off for bitwise the stored "
                          "views", stacklevel=2)
        return decoder

    def _wrap(self, dataset, training: bool) -> ImageClassificationDataset:
        if isinstance(dataset, ImageClassificationDataset):
            return dataset
        if is_stream(dataset):
            return streaming.wrap_stream(self, dataset, training)
        label_column = self.label_column if training else self._eval_labels(dataset)
        transform = create_image_transform(self.student.preprocess, training, self.augment)
        mode = "RGB" if self.student.preprocess.input_size[0] == 3 else "L"
        return self.task.dataset_class(dataset, transform, self.image_column, label_column,
                                          seed=self.args.seed, image_mode=mode, on_bad_image=self.args.on_bad_image,
                                          views_per_image=self.args.crops_per_image if training else 1)

    def _eval_labels(self, dataset) -> Optional[str]:
        """The label column of an eval split (``None``: it has none, and is evaluated against the teachers)."""
        return find_columns(dataset, self.image_column, self.eval_label_column or self.label_column,
                            require_label=False)[1]

    @property
    def _images_per_batch(self) -> int:
        """Images a process loads per batch: the batch size counts views, ``crops_per_image`` of each image."""
        return self.args.per_device_train_batch_size // self.args.crops_per_image

    def _train_loader(self):
        from torch.utils.data import DataLoader

        args = self.args
        labels = self.train_dataset.labels
        sampler = self.method.train_batch_sampler(labels, args.per_device_train_batch_size, args.seed)
        common = dict(num_workers=args.dataloader_num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=args.dataloader_persistent_workers, collate_fn=collate_rows)
        if args.dataloader_num_workers > 0:
            self.train_dataset.share_epoch()  # set_epoch must reach the workers' copies
        if sampler is not None:
            return DataLoader(self.train_dataset, batch_sampler=sampler, **common)
        return DataLoader(self.train_dataset, batch_size=self._images_per_batch, shuffle=True,
                          drop_last=args.dataloader_drop_last,
                          generator=torch.Generator().manual_seed(args.seed), **common)

    def _eval_dataloader(self, dataset=None):
        return self._polled(self._prepared_eval_dataloader(dataset))

    def _polled(self, loader):
        # A signal during evaluation stops it at a batch boundary the processes agree on; train() then saves.
        for batch in loader:
            if self._preemption.requested():
                raise PreemptionRequested()
            yield batch

    def _prepared_eval_dataloader(self, dataset=None):
        from torch.utils.data import DataLoader

        if dataset is None:
            if self._eval_loader is None:
                if self.eval_dataset is None:
                    raise ValueError("no eval_dataset was given")
                loader = DataLoader(self.eval_dataset, batch_size=self.args.per_device_eval_batch_size,
                                    num_workers=self.args.dataloader_num_workers, collate_fn=collate_rows)
                self._eval_loader = self.accelerator.prepare(loader)
            return self._eval_loader
        dataset = self._wrap(dataset, training=False)
        loader = DataLoader(dataset, batch_size=self.args.per_device_eval_batch_size, collate_fn=collate_rows)
        return self.accelerator.prepare(loader)

    # -- evaluation -------------------------------------------------------------------------------
    def _student_module(self) -> Backbone:
        if self._model is None:
            return self.student.to(self.accelerator.device)
        return self.accelerator.unwrap_model(self._model).student

    def evaluate(self, eval_dataset=None) -> Dict[str, float]:
        """Top-1, top-5 and cross-entropy of the student on the eval set.

        On an eval set without labels: the student's top-1 agreement with each teacher and with their ensemble, and
        the distillation loss (:func:`hfkd.tasks.evaluation.evaluate_agreement`); ``eval_accuracy_note`` says why
        there is no accuracy.
        """
        student = self._student_module()
        labelled = self._eval_labelled(eval_dataset)
        was_training = student.training
        student.eval()
        try:
            if labelled:
                metrics = self.task.evaluate(self.accelerator, self._eval_dataloader(eval_dataset),
                                             lambda x: student(x).logits)
            else:
                metrics = self._evaluate_without_labels(eval_dataset, student)
        finally:
            student.train(was_training)
        if self.model_ema is not None:
            ema = self.model_ema.module
            metrics.update(self.task.evaluate(self.accelerator, self._eval_dataloader(eval_dataset),
                                              lambda x: ema(x).logits, prefix="eval_ema") if labelled
                           else self._evaluate_without_labels(eval_dataset, ema, prefix="eval_ema"))
        metrics.update(step=self.state.global_step, epoch=self.state.epoch)
        self._log(metrics)
        self.callbacks("on_evaluate", self, metrics)
        return metrics

    @torch.no_grad()
    def predict(self, eval_dataset=None) -> Dict[str, torch.Tensor]:
        """The student's ``logits`` and the ``labels`` of every eval image (default: the eval set), in its order.

        What a paired comparison of two runs needs (``hfkd benchmark``): the per-image outputs, not only the
        metrics :meth:`evaluate` reduces them to.  Gathered from every process; on CPU.
        """
        student = self._student_module()
        was_training = student.training
        student.eval()
        logits, labels = [], []
        try:
            for batch in self._eval_dataloader(eval_dataset):
                with self.accelerator.autocast():
                    out = student(batch["pixel_values"]).logits
                out, y = self.accelerator.gather_for_metrics((out.float(), batch["labels"]))
                logits.append(out.cpu())
                labels.append(y.cpu())
        finally:
            student.train(was_training)
        if not logits:
            raise ValueError("the eval set is empty")
        return {"logits": torch.cat(logits), "labels": torch.cat(labels)}

    def _eval_labelled(self, eval_dataset=None) -> bool:
        if eval_dataset is None:
            if self.eval_dataset is None:
                raise ValueError("no eval_dataset was given")
            return self.eval_dataset.labelled
        return self._wrap(eval_dataset, training=False).labelled

    def _evaluate_without_labels(self, eval_dataset, student, prefix: str = "eval") -> Dict[str, Any]:
        """The student's agreement with the teachers (when their logits are over its classes) and the method's loss."""
        method = self.method
        logit_teachers = self.teachers if method.reads_teacher_logits else []
        for t in self.teachers:
            t.to(self.accelerator.device)
        prepare_teachers(self.teachers, self.args)
        weights = [t.weight for t in logit_teachers]
        set_up = method.context is not None  # the loss needs the method's modules (built by train())

        def forward(batch):
            x = batch["pixel_values"]
            out = student(x, method.student_request)
            teachers = [t(x, method.teacher_request) for t in self.teachers]
            loss = method.compute_loss(batch, out, teachers).loss if set_up and teachers else None
            return out.logits, [t.logits for t in teachers] if logit_teachers else [], loss

        was_training = method.training
        method.eval()
        try:
            return evaluate_agreement(self.accelerator, self._eval_dataloader(eval_dataset), forward,
                                      len(logit_teachers), lambda logits: self.task.ensemble(logits, weights), prefix)
        finally:
            method.train(was_training)

    def evaluate_teachers(self) -> Dict[str, Dict[str, float]]:
        """Each teacher's accuracy, and the ensemble's when there are several (measured once)."""
        if not self.teachers or self.eval_dataset is None or not self.method.reads_teacher_logits:
            return {}  # a feature teacher's logits (if any) are not over the student's classes
        if not self.eval_dataset.labelled:
            return {}  # no labels: a teacher's accuracy cannot be measured (the student is compared with them)
        device = self.accelerator.device
        for t in self.teachers:
            t.to(device)
        prepare_teachers(self.teachers, self.args)
        results = {}
        for i, t in enumerate(self.teachers):
            results[f"teacher_{i}"] = {"name": t.name, **self.task.evaluate(self.accelerator, self._eval_dataloader(),
                                                                            lambda x, t=t: t(x).logits)}
        if len(self.teachers) > 1:
            weights = [t.weight for t in self.teachers]
            results["ensemble"] = self.task.evaluate(
                self.accelerator, self._eval_dataloader(),
                lambda x: self.task.ensemble([t(x).logits for t in self.teachers], weights))
        self.teacher_metrics = results
        metric = self.task.main_metric
        flat = {f"{k}_{metric}": v[f"eval_{metric}"] for k, v in results.items()}
        self._log(flat)
        return results

    # -- logging ----------------------------------------------------------------------------------
    def _log(self, logs: Dict[str, Any]) -> None:
        entry = {**logs, "step": self.state.global_step}
        self.state.log_history.append(entry)
        numeric = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        if self.args.report_to:
            self.accelerator.log(numeric, step=self.state.global_step)
        self.callbacks("on_log", self, logs)

    # -- training ---------------------------------------------------------------------------------
    def _setup_training(self):
        acc, args = self.accelerator, self.args
        from accelerate.utils import set_seed

        set_seed(args.seed)  # before modules are built and the sampler is made (seedable sampler)
        if self._streamed:  # read by each process itself, never through Accelerate's prepare (streaming.py)
            train_loader = None
            steps_per_epoch, max_steps, num_epochs = streaming.steps(args)
        else:
            train_loader, steps_per_epoch, max_steps, num_epochs = self._map_style_length()
        for t in self.teachers:
            t.to(acc.device)  # never prepare() a frozen teacher: DDP would wrap it (docs/launch.md)
        self.student = apply_sync_batchnorm(self.student, acc, args.sync_batchnorm)
        prepare_teachers(self.teachers, args)
        self.student.to(acc.device)
        self.model_ema = create_model_ema(args, self.student)
        prepare_student(self.student, args)
        self.method.setup(MethodContext(
            num_classes=self.student.num_classes, num_epochs=num_epochs,
            num_train_samples=0 if self._streamed else len(self.train_dataset),  # unknown for a stream
            steps_per_epoch=steps_per_epoch, student=self.student, accelerator=acc,
            teachers=self.teacher_cache.teachers if self.teacher_cache is not None else self.teachers,
            task=self.task, seed=args.seed,
        ))
        module = DistillationModule(self.student, self.method).to(acc.device)
        if self._sharded:  # FSDP2: shard before the optimiser is built on the shards (hfkd/training/fsdp.py)
            self._student_skeleton = unsharded_skeleton(self.student)
            shard_with_accelerator(acc, module, self.teachers, args.shard_teachers)
        optimizer = create_optimizer(args, self.student, self.method.param_groups(args.learning_rate))
        scheduler = create_scheduler(args, optimizer, max_steps, steps_per_epoch)
        if self._sharded:
            self._model, self.optimizer = prepare_sharded(acc, module, optimizer)
        else:
            self._model, self.optimizer = acc.prepare(module, optimizer)
        self._train_loader_prepared = train_loader
        self.lr_scheduler = scheduler
        acc.register_for_checkpointing(scheduler)
        self.state.max_steps, self.state.num_epochs = max_steps, num_epochs
        self.steps_per_epoch = steps_per_epoch
        # Samples (images) of the epoch's global order that one batch of every process takes together.
        self._samples_per_batch = self._images_per_batch * acc.num_processes
        if self._streamed:  # no known epoch length: the logged "epoch" is the epoch's number
            self._global_order, self._epoch_samples = False, float("inf")
        else:
            epoch_samples = len(train_loader) * self._samples_per_batch
            self._global_order = seedable_sampler(train_loader) is not None
            self._epoch_samples = (min(epoch_samples, len(self.train_dataset)) if self._global_order
                                   else epoch_samples)
        if args.report_to:  # a tracker's config is written (and often uploaded): no credentials in it
            config = {**{k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool))},
                      "method": self.method.name, **self.method.hparams()}
            acc.init_trackers(redact_secrets(args.run_name or "hfkd"), config=redact_secrets(config))

    def _map_style_length(self):
        """The prepared train loader, and the run's length: steps per epoch, steps, epochs."""
        acc, args = self.accelerator, self.args
        train_loader = acc.prepare(self._train_loader())
        validation.check_steps(len(train_loader), len(self.train_dataset), self._images_per_batch,
                               args.dataloader_drop_last, acc.num_processes)
        steps_per_epoch = max(1, math.ceil(len(train_loader) / args.gradient_accumulation_steps))
        if args.gradient_accumulation_steps > len(train_loader):
            logger.warning("gradient_accumulation_steps=%d is more than the %d batches of an epoch: every epoch makes "
                           "one optimiser step over its %d batches (the loss is their mean). Lower "
                           "gradient_accumulation_steps, or use a smaller batch size, for longer windows",
                           args.gradient_accumulation_steps, len(train_loader), len(train_loader))
        if args.max_steps > 0:
            max_steps = args.max_steps
            num_epochs = math.ceil(max_steps / steps_per_epoch)
        else:
            num_epochs = int(args.num_train_epochs)
            max_steps = num_epochs * steps_per_epoch
        return train_loader, steps_per_epoch, max_steps, num_epochs

    def _resume(self) -> None:
        path = resolve_checkpoint(self.args.resume_from_checkpoint, self.args.output_dir)
        if path is None:
            return
        recorded = read_state(path)
        check_same_run(recorded.get("run"), run_signature(self), self.args.resume_allow_changes, path)
        samples = (streaming.resume_position(self, recorded, path) if self._streamed
                   else self._resume_position(recorded, path))
        state, method_state = load_checkpoint(self.accelerator, path)
        self.state.global_step = state["global_step"]
        self.state.epoch = state["epoch"]
        self.state.batches_in_epoch = state["batches_in_epoch"]
        self.state.samples_in_epoch = samples
        if self.args.max_steps <= 0:
            self._steps_to_finish_epochs()
        self.state.skipped_steps = state.get("skipped_steps", 0)
        self.state.log_history = state.get("log_history", [])
        self.teacher_metrics = state.get("teacher_metrics", {})
        method_state, model_ema = split_ema_state(method_state)
        load_ema_state(self.model_ema, model_ema, path)
        self.method.load_extra_state(method_state)

    def _resume_position(self, recorded: Dict[str, Any], path: str) -> int:
        """The checkpoint's position in its epoch, in samples of the global order; refused where not reproducible.

        The default sampler's global order is the same on any number of processes, so any position can be
        continued (``RemainingEpochBatchSampler``).  A method's own batch sampler (BAKE's) can only skip whole
        batches of every process: a position that is not a whole number of this run's steps is refused.
        """
        run = recorded.get("run") or {}
        world = int(run.get("world_size", self.accelerator.num_processes))
        samples = recorded.get("samples_in_epoch")
        if samples is None:  # written before positions were kept in samples: batches of the recorded layout
            batch_size = int(run.get("per_device_train_batch_size", self.args.per_device_train_batch_size))
            samples = min(recorded["batches_in_epoch"] * world * batch_size, self._epoch_samples)
        samples = int(samples)
        if samples and samples % self._samples_per_batch and not self._global_order:
            raise ValueError(
                f"{path} stopped {samples} samples into epoch {recorded.get('epoch')}, which is not a whole number "
                f"of this run's steps ({self.args.per_device_train_batch_size} x {self.accelerator.num_processes} "
                f"processes = {self._samples_per_batch} samples), and method {self.method.name!r} draws its own "
                f"batches, so the rest of the epoch cannot be reproduced exactly (a sample would be skipped or "
                f"repeated). Resume on {world} processes with the same batch size, or from a checkpoint at the end "
                "of an epoch")
        self._check_views_resume(run, samples, world, path)
        return samples

    def _check_views_resume(self, run: Dict[str, Any], samples: int, world: int, path: str) -> None:
        """Views dealt over K batches: a checkpoint inside a group resumes only in the layout that made it."""
        k, args = self.args.crops_per_image, self.args
        if k == 1 or not args.spread_crops or not samples:
            return
        recorded_batch = int(run.get("per_device_train_batch_size", args.per_device_train_batch_size))
        recorded_step = recorded_batch // k * world  # images of the global order per step of the recorded run
        if samples % (recorded_step * k) == 0 or recorded_step == self._samples_per_batch:
            return  # at a group's end (every view of the images before it trained), or the same layout
        raise ValueError(
            f"{path} stopped inside a group of {k} batches that share their images' views (crops_per_image={k}, "
            f"spread_crops): the images of that group have trained on some of their views only, which a run on "
            f"{self.accelerator.num_processes} process(es) with batch {args.per_device_train_batch_size} cannot "
            f"continue exactly. Resume on {world} process(es) with batch {recorded_batch}, or from a checkpoint at "
            "the end of an epoch")

    def _steps_to_finish_epochs(self) -> None:
        # A budget in epochs: the steps done so far may have been counted on another number of processes or
        # with another batch size, so the step budget computed for this run could end too early or too late;
        # count the steps of the rest of the epochs instead (the same number when nothing changed).
        rest = self._epoch_samples - self.state.samples_in_epoch
        batches = rest // self._samples_per_batch if self.args.dataloader_drop_last else -(-rest // self._samples_per_batch)
        steps = math.ceil(batches / self.args.gradient_accumulation_steps)
        remaining_epochs = max(0, self.state.num_epochs - self.state.epoch - 1)
        max_steps = self.state.global_step + steps + remaining_epochs * self.steps_per_epoch
        if max_steps != self.state.max_steps:
            logger.warning("resumed at step %d: %d more step(s) of %d process(es) finish the %d epoch(s); the run ends "
                           "at step %d (the learning-rate schedule keeps this run's length of %d steps)",
                           self.state.global_step, max_steps - self.state.global_step, self.accelerator.num_processes,
                           self.state.num_epochs, max_steps, self.state.max_steps)
        self.state.max_steps = max_steps

    def _epoch_batches(self, loader, epoch: int, start: int):
        """This process's batches of ``epoch`` from sample ``start`` of the global order, and how many there are.

        With ``crops_per_image`` K > 1 and ``spread_crops``, K loaded batches at a time are dealt view by view
        (:func:`hfkd.data.views.spread_views`); a run stopped inside such a group reloads it and skips what it
        trained.
        """
        k = self.args.crops_per_image
        if k == 1 or not self.args.spread_crops:
            return self._loaded_batches(loader, epoch, start)
        into_group = start // self._samples_per_batch % k if start % self._samples_per_batch == 0 else 0
        group_start = start - into_group * self._samples_per_batch
        batches, count = self._loaded_batches(loader, epoch, group_start)
        return spread_views(batches, k, skip=into_group), count - into_group

    def _loaded_batches(self, loader, epoch: int, start: int):
        if start == 0:
            return loader, len(loader)
        if start % self._samples_per_batch == 0:  # whole steps: Accelerate's skip (bitwise the same batches)
            skip = start // self._samples_per_batch
            return self.accelerator.skip_first_batches(loader, skip), max(0, len(loader) - skip)
        # Resumed on another number of processes: cut the rest of the epoch's global order anew.
        from accelerate.data_loader import DataLoaderShard

        acc, args = self.accelerator, self.args
        batches = RemainingEpochBatchSampler(
            epoch_order(seedable_sampler(loader), epoch), start, self._images_per_batch,
            acc.num_processes, acc.process_index, args.dataloader_drop_last)
        logger.warning("resuming epoch %d at sample %d of %d on %d process(es): %d more batch(es) per process",
                       epoch, start, self._epoch_samples, acc.num_processes, len(batches))
        self.train_dataset.set_epoch(epoch)
        rest = DataLoaderShard(self.train_dataset, device=acc.device, batch_sampler=batches, collate_fn=collate_rows,
                               num_workers=args.dataloader_num_workers, pin_memory=torch.cuda.is_available())
        return rest, len(batches)

    def _save(self) -> str:
        state = {k: v for k, v in asdict(self.state).items() if k != "should_stop"}
        # The arguments are redacted as in hfkd.json: a checkpoint folder is shared and uploaded just as often.
        state.update(teacher_metrics=self.teacher_metrics, method=self.method.name,
                     method_hparams=redact_secrets(self.method.hparams()), args=redact_secrets(self.args.to_dict()),
                     run=run_signature(self))
        if self._streamed:  # every process's position in its part of the stream
            state["stream"] = streaming.checkpoint_positions(self)
        path = save_checkpoint(self.accelerator, self.args.output_dir, self.state.global_step, state,
                               {**self.method.extra_state(), **ema_state(self.model_ema)}, self.args.save_total_limit)
        self._last_save, self._last_save_step = path, self.state.global_step
        self.callbacks("on_save", self, path)
        return path

    def _train_step(self, batch) -> torch.Tensor:
        acc = self.accelerator
        if self.device_decoder is not None:  # gpu_decode: the batch's images are made here, on the device
            batch = self.device_decoder(batch)
        batch = self.method.prepare_batch(batch)
        if self.args.channels_last:
            batch = channels_last_batch(batch)
        with acc.accumulate(self._model):
            teacher_outputs = self.teacher_cache.teacher_outputs(batch) if self.teacher_cache is not None else []
            if self.teachers:
                with acc.autocast():
                    teacher_outputs = [t(batch["pixel_values"], self.method.teacher_request) for t in self.teachers]
            out = self._model(batch, teacher_outputs)
            if validation.nonfinite(out.loss, acc):
                if self.args.on_nonfinite_loss == "raise":
                    raise validation.nonfinite_loss_error(self.state.global_step, out.loss, out.logs,
                                                          self.args.output_dir)
                self._skip_nonfinite()
                return out.loss.detach()
            acc.backward(out.loss * self._accumulation_scale())
            if acc.sync_gradients and self.args.max_grad_norm > 0:
                acc.clip_grad_norm_(self._model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self._running.append({"loss": out.loss.detach(), **out.logs})
        return out.loss.detach()

    def _accumulation_scale(self) -> float:
        """``gradient_accumulation_steps`` / the batches of the current accumulation window.

        Accelerate divides every loss by ``gradient_accumulation_steps`` but also steps at the end of each
        epoch, so the last window of an epoch (or the only one, when the accumulation is longer than an
        epoch) would be averaged over batches it does not hold; scaled by this, every update is the mean
        over the batches actually accumulated.  Windows restart with each epoch, as Accelerate's do.
        """
        gas = self.args.gradient_accumulation_steps
        if gas == 1:
            return 1.0
        first, end = self._windows or (0, len(self._train_loader_prepared))
        window_start = first + (self.state.batches_in_epoch - first) // gas * gas
        return gas / min(gas, end - window_start)

    def _skip_nonfinite(self) -> None:
        # on_nonfinite_loss="skip": this batch updates nothing (gradients of the accumulation window dropped).
        self.optimizer.zero_grad(set_to_none=True)
        self.state.skipped_steps += 1
        self._log({"nonfinite_loss_skipped": self.state.skipped_steps})

    def _log_running(self) -> None:
        keys = self._running[0].keys()
        means = {k: torch.stack([r[k].float() for r in self._running]).mean() for k in keys}
        reduced = {k: self.accelerator.reduce(v, reduction="mean").item() for k, v in means.items()}
        reduced["learning_rate"] = self.lr_scheduler.get_last_lr()[0]
        reduced["epoch"] = self.state.epoch + self.state.samples_in_epoch / max(1, self._epoch_samples)
        self._running = []
        self._log(reduced)

    def train(self) -> TrainerState:
        """Train until ``max_steps`` / ``num_train_epochs``; resumes when asked.  Returns the state."""
        # SIGTERM / SIGINT / SIGUSR1 from here on (also while setting up and resuming): a checkpoint at the next
        # step boundary, then Preempted.
        self._preemption = Preemption(self.accelerator)
        with self._preemption:
            self._setup_training()
            self._resume()
            start = time.perf_counter()
            try:
                self._train_loop()
            except PreemptionRequested:  # raised by the evaluation loop
                pass
            if self._preemption.requested():
                path = self._last_save if self._last_save_step == self.state.global_step else self._save()
                self.state.train_runtime += time.perf_counter() - start
                for tracker in self.accelerator.trackers:
                    tracker.finish()
                stop = self._preemption.stop(path)
                if self.accelerator.is_main_process:
                    logger.warning("hfkd: %s; resume with resume_from_checkpoint='latest'", stop)
                raise stop
        self.state.train_runtime += time.perf_counter() - start
        self.callbacks("on_train_end", self)
        # Trackers only: Accelerator.end_training would also tear down the process group, and a
        # distributed evaluate() or save_model() commonly follows train().
        for tracker in self.accelerator.trackers:
            tracker.finish()
        return self.state

    def _train_loop(self) -> None:
        acc, args = self.accelerator, self.args
        if args.eval_teachers and not self.teacher_metrics:
            self.evaluate_teachers()
        self._running: List[Dict[str, torch.Tensor]] = []
        self.callbacks("on_train_begin", self)
        self._model.train()
        if self._streamed:
            streaming.train_loop(self)
            return
        loader = self._train_loader_prepared
        start_epoch, start_samples = self.state.epoch, self.state.samples_in_epoch
        for epoch in range(start_epoch, self.state.num_epochs):
            if self.state.global_step >= self.state.max_steps or self.state.should_stop:
                break
            self.state.epoch = epoch
            loader.set_epoch(epoch)  # the seedable sampler and the augmentation draw depend on it
            # Accelerate does not forward set_epoch to a custom batch sampler inside BatchSamplerShard.
            inner = getattr(loader.batch_sampler, "batch_sampler", None)
            if hasattr(inner, "set_epoch"):
                inner.set_epoch(epoch)
            self.method.on_epoch_start(epoch)
            self.callbacks("on_epoch_begin", self, epoch)
            start = start_samples if epoch == start_epoch else 0
            batches, num_batches = self._epoch_batches(loader, epoch, start)
            self.state.samples_in_epoch = start
            self.state.batches_in_epoch = start // self._samples_per_batch
            # Accelerate counts accumulation windows from where this loader starts and closes one at its end.
            self._windows = (self.state.batches_in_epoch, self.state.batches_in_epoch + num_batches)
            done = 0
            for batch in batches:
                self._train_step(batch)
                done += 1
                self.state.batches_in_epoch += 1
                self.state.samples_in_epoch = min(self._epoch_samples,
                                                  self.state.samples_in_epoch + self._samples_per_batch)
                if not acc.sync_gradients:
                    continue
                self.lr_scheduler.step()
                self.state.global_step += 1
                if self.model_ema is not None:
                    self.model_ema.update(self._student_module(), step=self.state.global_step)
                self._after_step()
                if (self.state.global_step >= self.state.max_steps or self.state.should_stop
                        or self._preemption.requested()):
                    break
            if done < num_batches or self._preemption.requested():
                break
            self.method.on_epoch_end(epoch)
            self.state.epoch, self.state.batches_in_epoch, self.state.samples_in_epoch = epoch + 1, 0, 0
            self.callbacks("on_epoch_end", self, epoch)
            if args.eval_strategy == "epoch" and self.eval_dataset is not None:
                self.evaluate()
            if args.save_strategy == "epoch":
                self._save()

    def _after_step(self) -> None:
        args, step = self.args, self.state.global_step
        self.callbacks("on_step_end", self)
        if step % args.logging_steps == 0 and self._running:
            self._log_running()
        if args.eval_strategy == "steps" and step % args.eval_steps == 0 and self.eval_dataset is not None:
            self.evaluate()
        if args.save_strategy == "steps" and step % args.save_steps == 0:
            self._save()

    # -- outputs ----------------------------------------------------------------------------------
    def unwrapped_student(self) -> Backbone:
        """The trained student: its EMA when ``model_ema_as_student``."""
        if self.model_ema is not None and self.args.model_ema_as_student:
            return self.model_ema.module
        if self._whole_student is not None:
            return self._whole_student
        return self._student_module()

    def lineage(self) -> Dict[str, Any]:
        """What produced this student: teachers, method, data, arguments, metrics and versions."""
        return build_lineage(self)

    def save_model(self, output_dir: Optional[str] = None, baseline_metrics: Optional[Dict[str, Any]] = None,
                   card_extras: Optional[Dict[str, Any]] = None) -> Optional[str]:
        """Save the student (never the method's modules) in its native format, with its card; main process only.

        The folder holds the weights (safetensors), ``config.json``, ``hfkd.json``
        (the lineage), ``README.md`` (the model card) and, when the run logged
        curves and matplotlib is installed, ``training_curves.png``.
        ``baseline_metrics`` (``eval_accuracy``, ``eval_top5_accuracy``, ``params``
        of the same student trained without KD) go into the card's results table;
        ``card_extras`` are keyword arguments of :func:`hfkd.hub.card.create_model_card`
        (``license``, ``dataset_split``, ``extra_sections``).
        """
        output_dir = output_dir or os.path.join(self.args.output_dir, "student")
        self.accelerator.wait_for_everyone()
        self._gather_student()
        error = None
        if self.accelerator.is_main_process:
            try:
                self._save_student(output_dir, baseline_metrics, card_extras)
            except Exception as e:  # noqa: BLE001 - re-raised after the barrier so no process waits forever
                error = e
            finally:
                self._whole_student = None
        self.accelerator.wait_for_everyone()
        if error is not None:
            raise error
        self.callbacks("on_save_model", self, output_dir)
        return output_dir

    def _gather_student(self) -> None:
        """FSDP: every process sends its shards; the main process gets the whole student (``unwrapped_student``)."""
        if self._sharded and self._model is not None:
            state = full_state_dict(self._student_module())
            if self.accelerator.is_main_process:
                self._whole_student = materialize(self._student_skeleton, state)

    def _save_student(self, output_dir, baseline_metrics, card_extras) -> None:
        import tempfile

        check_save_target(output_dir)  # before any work: refuses a folder holding files hfkd did not write
        lineage = self.lineage()
        if baseline_metrics:
            lineage["baseline"] = {k: v for k, v in baseline_metrics.items() if isinstance(v, (int, float, str))}
        card_options = dict(card_extras or {})
        if card_options:
            lineage["card_options"] = card_options
        student = self.unwrapped_student()
        if not self.method.trains_student_head and student.num_classes:
            # The head never learned (no labels in the loss): the student is saved as the backbone it trained.
            student = headless_backbone(student)
            lineage = backbone_lineage(lineage, student)
        extra_files = {}
        with tempfile.TemporaryDirectory() as tmp:
            plot_path = os.path.join(tmp, PLOT_FILENAME)
            if plot_training_curves(lineage.get("log_history", []), plot_path):
                with open(plot_path, "rb") as f:
                    extra_files[PLOT_FILENAME] = f.read()
        card = create_model_card(lineage, plot_filename=PLOT_FILENAME if extra_files else None, **card_options)
        extra_files["README.md"] = str(card).encode("utf-8")
        save_student(student, output_dir, metadata=lineage, extra_files=extra_files)

    def push_to_hub(self, output_dir: Optional[str] = None, repo_id: Optional[str] = None,
                    commit_message: Optional[str] = None):
        """Push the saved student folder (``save_model`` first) to ``args.hub_model_id`` in one commit.

        Main process only; uses ``hub_private_repo``, ``hub_revision`` and
        ``hub_create_pr`` from the arguments.  A failure raises
        :class:`hfkd.hub.HubPushError` (HTTP status, auth vs server, the retry
        command) and leaves the local save intact.  Returns the ``CommitInfo``
        on the main process, ``None`` elsewhere.
        """
        output_dir = output_dir or os.path.join(self.args.output_dir, "student")
        repo_id = repo_id or self.args.hub_model_id
        if not repo_id:
            raise ValueError("push_to_hub needs a repository: set hub_model_id=ORG/NAME (--hub_model_id)")
        info, error = None, None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            try:
                info = push_to_hub(output_dir, repo_id, private=self.args.hub_private_repo or None,
                                   revision=self.args.hub_revision, create_pr=self.args.hub_create_pr,
                                   commit_message=commit_message or f"Upload {self.method.name} student with hfkd")
            except Exception as e:  # noqa: BLE001 - re-raised after the barrier so no process waits forever
                error = e
        self.accelerator.wait_for_everyone()
        if error is not None:
            raise error
        return info
