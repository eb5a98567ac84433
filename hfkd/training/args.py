"""``DistillationArguments``: the run's knobs, named after transformers' TrainingArguments."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from ..extras import tracker_problems
from ..settings import field_type_problems, shorten

_MIXED = ("no", "bf16", "fp16")
_NONFINITE = ("raise", "skip")
_BAD_IMAGE = ("raise", "skip")
_TEACHER_DTYPES = ("bf16", "fp16", "fp32")
_STRATEGIES = ("no", "steps", "epoch")
_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "multistep")
_EPOCH_SCHEDULERS = ("constant", "linear", "cosine", "multistep")
# timm's optimizers that run SGD with Nesterov momentum (torch refuses Nesterov without momentum, at the first step)
_NESTEROV = ("sgd", "nesterov", "sgdw", "nesterovw", "sgdp")


@dataclass
class DistillationArguments:
    output_dir: str = field(default="outputs/hfkd", metadata={"help": "Where checkpoints, logs and the student go."})
    num_train_epochs: int = field(default=3, metadata={"help": "Epochs to train (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Total optimiser steps; overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per process for training."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Batch size per process for evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={
        "help": "Weight decay (not applied to biases and norms unless weight_decay_norm_and_bias)."})
    optim: str = field(default="adamw", metadata={"help": "Any timm optimizer name: adamw, sgd (Nesterov), momentum, ..."})
    momentum: float = field(default=0.9, metadata={"help": "Momentum for SGD-type optimizers."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam-type optimizers: beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam-type optimizers: beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam-type optimizers: epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "The learning-rate schedule.",
                                                               "choices": list(_SCHEDULERS)})
    lr_milestones: List[float] = field(
        default_factory=list, metadata={"help": "multistep: epochs at which the lr is multiplied by lr_gamma."}
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "multistep: the factor at each milestone."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Warm-up as a fraction of all steps (if warmup_steps=0)."})
    # None: Accelerate decides (`accelerate launch --mixed_precision`, `accelerate config`, ACCELERATE_MIXED_PRECISION).
    mixed_precision: Optional[str] = field(default=None, metadata={
        "help": "no, bf16 or fp16 (fp16 is a no-op on CPU). Default: what `accelerate launch` / `accelerate config` "
                "say (docs/launch.md).", "choices": list(_MIXED)})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling and augmentation."})
    logging_steps: int = field(default=10, metadata={"help": "Log the running loss every N optimiser steps."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate the student.",
                                                          "choices": list(_STRATEGIES)})
    eval_steps: int = field(default=500, metadata={"help": "Evaluate every N steps with eval_strategy=steps."})
    save_strategy: str = field(default="steps", metadata={"help": "When to write checkpoints.",
                                                          "choices": list(_STRATEGIES)})
    save_steps: int = field(default=500, metadata={"help": "Write a checkpoint every N optimiser steps."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Start a new run in an output_dir that holds an earlier run: its checkpoints and saved student (hfkd's "
                "own files only) are removed first. Without it such a run is refused."})
    report_to: List[str] = field(default_factory=list, metadata={"help": "Accelerate trackers: tensorboard, wandb, ..."})
    run_name: Optional[str] = field(default=None, metadata={"help": "Name of the run for trackers."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes loading the data (0: in the "
                                                                     "training process)."})
    dataloader_drop_last: bool = field(default=False, metadata={"help": "Drop the last incomplete training batch."})
    # -- streamed data (docs/launch.md, "Streamed data") --
    sample_key_column: Optional[str] = field(default=None, metadata={
        "help": "Streamed data: the column identifying each sample, whose augmentation is seeded by it (default: "
                "WebDataset's __key__, or shard file:row for Parquet shards hfkd streams)."})
    stream_shuffle_buffer: int = field(default=1000, metadata={
        "help": "Streamed data: samples shuffled together (one block) after the shards' order; 1 keeps the order."})
    # None: Accelerate decides (`accelerate launch --cpu`, ACCELERATE_USE_CPU; else CUDA, MPS or CPU).
    use_cpu: Optional[bool] = field(default=None, metadata={
        "help": "Train on the CPU even if a GPU is there. Default: what `accelerate launch` / `accelerate config` say."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})
    ddp_find_unused_parameters: bool = field(default=False, metadata={
        "help": "DDP: look for parameters without gradient every step (slower; needed when some are unused)."})
    eval_teachers: bool = field(default=True, metadata={"help": "Measure the teachers' accuracy once before training."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the student to the Hub after training."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "ORG/NAME of the Hub repository."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository private."})
    hub_revision: Optional[str] = field(default=None, metadata={"help": "Branch to push to."})
    hub_create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing."})
    # --- Reliability (docs/reliability.md): what a resume may change, and what a non-finite loss does ---
    resume_allow_changes: List[str] = field(
        default_factory=list,
        metadata={"help": "Settings a resume may change from the checkpoint's run (e.g. max_steps, learning_rate); "
                          "any other difference is refused. See docs/reliability.md."})
    on_nonfinite_loss: str = field(
        default="raise", metadata={"help": "raise: stop at a NaN/inf loss, naming the step, the loss terms and the "
                                           "last checkpoint; skip: drop that batch's update and go on.",
                                   "choices": _NONFINITE})
    # -- bad images (docs/reliability.md): unreadable files and decompression bombs --
    on_bad_image: str = field(default="raise", metadata={
        "help": "raise: stop at an image that cannot be read (or is a decompression bomb), naming its row and file; "
                "skip: leave it out of its batch, count it in the log and list it in hfkd.json.",
        "choices": _BAD_IMAGE})
    verify_images: bool = field(default=False, metadata={
        "help": "Before the first step, open every image's header (no decoding) and list all the bad ones; "
                "on_bad_image decides whether the run stops or trains without them."})
    # -- paper-faithful optimisation (docs/cifar.md) --
    weight_decay_norm_and_bias: bool = field(default=False, metadata={
        "help": "Decay every parameter, norms and biases too, as PS-KD, BAKE and Factor Transfer do."})
    lr_step_per_epoch: bool = field(default=False, metadata={
        "help": "Set the lr once per epoch from the epoch index (pycls / BAKE ImageNet) instead of every step."})
    warmup_epochs: int = field(default=0, metadata={
        "help": "pycls warm-up over this many epochs (BAKE ImageNet: 5); excludes warmup_steps / warmup_ratio."})
    warmup_start_factor: float = field(default=0.0, metadata={
        "help": "The warm-up starts at this fraction of the lr (BAKE ImageNet: 0.1)."})
    sync_batchnorm: bool = field(default=False, metadata={
        "help": "Convert the student's BatchNorm to SyncBatchNorm (several GPU processes only)."})
    # -- speed and memory (measured in docs/performance.md) ----------------------------------------------------
    dataloader_persistent_workers: bool = field(
        default=False, metadata={"help": "Keep data-loader workers alive between epochs (needs dataloader_num_workers > 0)."}
    )
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the student (slow first steps on CPU)."})
    torch_compile_teachers: bool = field(default=False, metadata={"help": "torch.compile the frozen teachers too."})
    torch_compile_mode: Optional[str] = field(
        default=None, metadata={"help": "torch.compile mode: default, reduce-overhead, max-autotune, ..."}
    )
    channels_last: bool = field(
        default=False, metadata={"help": "Student, teachers and batches in channels_last memory format."}
    )
    model_ema: bool = field(
        default=False, metadata={"help": "Keep an EMA of the student's weights (timm ModelEmaV3); evaluated and checkpointed."}
    )
    model_ema_decay: float = field(default=0.999, metadata={"help": "EMA decay (the upper bound with warm-up)."})
    model_ema_warmup: bool = field(
        default=True, metadata={"help": "Warm the EMA decay up as 1 - (1 + step)^(-2/3), for short runs."}
    )
    model_ema_as_student: bool = field(
        default=False, metadata={"help": "save_model saves the EMA weights as the student."}
    )
    shard_teachers: bool = field(default=False, metadata={
        "help": "Under FSDP (accelerate launch --use_fsdp --fsdp_version 2), shard each frozen teacher across the "
                "processes for inference, for a teacher that does not fit on one device (docs/launch.md, \"FSDP\")."})
    teacher_dtype: Optional[str] = field(
        default=None,
        metadata={"help": "Run frozen teachers in bf16, fp16 or fp32, whatever the student's mixed precision."},
    )
    gpu_decode: bool = field(default=False, metadata={
        "help": "Decode the training JPEGs on the GPU (nvJPEG) and crop and normalise them there, with the CPU "
                "path's crop boxes; without a CUDA device the CPU path is kept, with a warning (docs/performance.md)."})
    # -- teacher soft-label cache (hfkd/cache, docs/teacher_cache.md) --
    teacher_cache: Optional[str] = field(
        default=None, metadata={"help": "A teacher cache (folder or Hub dataset id) to distil from, no teacher run."})
    teacher_cache_revision: Optional[str] = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit) of a teacher_cache given by its id."})
    crops_per_image: int = field(
        default=1, metadata={"help": "Views per decoded image (FKD's multi-crop): each image loaded serves K views, "
                                     "each with its own stored teacher outputs; needs a teacher_cache of >= K views; "
                                     "per_device_train_batch_size counts views (a multiple of K)."})
    spread_crops: bool = field(
        default=True, metadata={"help": "With crops_per_image=K > 1: deal each image's K views to K consecutive "
                                        "batches (each batch holds one view of as many images as it has rows, as "
                                        "with one view per decode) instead of putting them side by side in one "
                                        "batch (FKD's layout)."})

    def __post_init__(self):
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        if isinstance(self.resume_allow_changes, str):
            self.resume_allow_changes = [self.resume_allow_changes]
        self.report_to = [r for r in self.report_to if r not in ("none", "")]
        problems = field_type_problems(self)
        if problems:  # the range checks below assume the types are right
            raise ValueError("invalid DistillationArguments: " + "; ".join(problems))
        if self.on_nonfinite_loss not in _NONFINITE:
            problems.append(f"on_nonfinite_loss must be one of {_NONFINITE} (got {shorten(self.on_nonfinite_loss)})")
        if self.on_bad_image not in _BAD_IMAGE:
            problems.append(f"on_bad_image must be one of {_BAD_IMAGE} (got {shorten(self.on_bad_image)})")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.per_device_train_batch_size < 1 or self.per_device_eval_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if self.crops_per_image < 1:
            problems.append(f"crops_per_image must be >= 1 (got {self.crops_per_image})")
        elif self.per_device_train_batch_size % self.crops_per_image:
            problems.append(f"per_device_train_batch_size counts views, so it must be a multiple of crops_per_image "
                            f"(got {self.per_device_train_batch_size} and {self.crops_per_image}): each image loaded "
                            f"brings {self.crops_per_image} views")
        if self.gradient_accumulation_steps < 1:
            problems.append(f"gradient_accumulation_steps must be >= 1 (got {self.gradient_accumulation_steps})")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        problems += _momentum_problems(self)
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0 (got {self.max_grad_norm}); 0 disables clipping")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        if self.mixed_precision is not None and self.mixed_precision not in _MIXED:
            problems.append(f"mixed_precision must be one of {_MIXED} (got {shorten(self.mixed_precision)})")
        if self.lr_scheduler_type not in _SCHEDULERS:
            problems.append(f"lr_scheduler_type must be one of {_SCHEDULERS} (got {shorten(self.lr_scheduler_type)})")
        if self.lr_scheduler_type == "multistep" and not self.lr_milestones:
            problems.append("lr_scheduler_type=multistep needs lr_milestones (epochs)")
        for name in ("eval_strategy", "save_strategy"):
            if getattr(self, name) not in _STRATEGIES:
                problems.append(f"{name} must be one of {_STRATEGIES} (got {shorten(getattr(self, name))})")
        for name in ("logging_steps", "eval_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            problems.append("save_total_limit must be >= 1 or None")
        problems += self._epoch_schedule_problems()
        problems += tracker_problems(self.report_to)  # Accelerate would skip a missing tracker without a word
        if self.push_to_hub and not self.hub_model_id:
            problems.append("push_to_hub needs hub_model_id=ORG/NAME")
        problems += _speed_problems(self)
        if problems:
            raise ValueError("invalid DistillationArguments: " + "; ".join(problems))

    @property
    def uses_epoch_schedule(self) -> bool:
        """Whether the lr follows pycls's schedule (hfkd.training.optim.epoch_lr_factor)."""
        return self.lr_step_per_epoch or self.warmup_epochs > 0 or self.warmup_start_factor > 0

    def _epoch_schedule_problems(self) -> List[str]:
        problems = []
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0 (got {self.warmup_epochs})")
        if not 0 <= self.warmup_start_factor < 1:
            problems.append(f"warmup_start_factor must be in [0, 1) (got {self.warmup_start_factor})")
        if self.warmup_start_factor > 0 and self.warmup_epochs == 0:
            problems.append("warmup_start_factor needs warmup_epochs > 0")
        epoch_style = self.uses_epoch_schedule
        if epoch_style and (self.warmup_steps or self.warmup_ratio):
            problems.append("warmup_epochs / warmup_start_factor / lr_step_per_epoch use the pycls schedule: "
                            "give the warm-up as warmup_epochs, not warmup_steps / warmup_ratio")
        if epoch_style and self.lr_scheduler_type not in _EPOCH_SCHEDULERS:
            problems.append(f"with lr_step_per_epoch or warmup_epochs, lr_scheduler_type must be one of "
                            f"{_EPOCH_SCHEDULERS} (got {shorten(self.lr_scheduler_type)})")
        return problems

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _momentum_problems(args: DistillationArguments) -> List[str]:
    if args.momentum < 0:
        return [f"momentum must be >= 0 (got {args.momentum})"]
    optim = args.optim.lower().removeprefix("lookahead_")
    if optim in _NESTEROV and args.momentum == 0:
        return [f"optim={args.optim} uses Nesterov momentum, which needs momentum > 0 (got 0): set momentum (0.9 is "
                "usual), or use optim=momentum for SGD without Nesterov (with momentum 0 it is plain SGD)"]
    return []


def _speed_problems(args: DistillationArguments) -> List[str]:
    problems = []
    if args.dataloader_num_workers < 0:
        problems.append(f"dataloader_num_workers must be >= 0 (got {args.dataloader_num_workers})")
    if args.dataloader_persistent_workers and args.dataloader_num_workers == 0:
        problems.append("dataloader_persistent_workers needs dataloader_num_workers > 0")
    if args.stream_shuffle_buffer < 1:
        problems.append(f"stream_shuffle_buffer must be >= 1 (got {args.stream_shuffle_buffer}); 1 keeps the stream's "
                        "order")
    if not 0.0 < args.model_ema_decay < 1.0:
        problems.append(f"model_ema_decay must be in (0, 1) (got {args.model_ema_decay})")
    if args.model_ema_as_student and not args.model_ema:
        problems.append("model_ema_as_student needs model_ema=True")
    if args.teacher_dtype is not None and args.teacher_dtype not in _TEACHER_DTYPES:
        problems.append(f"teacher_dtype must be one of {_TEACHER_DTYPES} or unset (got {shorten(args.teacher_dtype)})")
    return problems
