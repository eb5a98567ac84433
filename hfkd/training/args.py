"""``DistillationArguments``: the run's knobs, named after transformers' TrainingArguments."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

_MIXED = ("no", "bf16", "fp16")
_STRATEGIES = ("no", "steps", "epoch")
_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial", "multistep")


@dataclass
class DistillationArguments:
    output_dir: str = field(default="outputs/hfkd", metadata={"help": "Where checkpoints, logs and the student go."})
    num_train_epochs: int = field(default=3, metadata={"help": "Epochs to train (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Total optimiser steps; overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per process for training."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Batch size per process for evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimiser step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (not applied to biases and norms)."})
    optim: str = field(default="adamw", metadata={"help": "Any timm optimizer name: adamw, sgd (Nesterov), momentum, ..."})
    momentum: float = field(default=0.9, metadata={"help": "Momentum for SGD-type optimizers."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": f"One of {', '.join(_SCHEDULERS)}."})
    lr_milestones: List[float] = field(
        default_factory=list, metadata={"help": "multistep: epochs at which the lr is multiplied by lr_gamma."}
    )
    lr_gamma: float = field(default=0.1, metadata={"help": "multistep: the factor at each milestone."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Warm-up as a fraction of all steps (if warmup_steps=0)."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (fp16 is a no-op on CPU)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling and augmentation."})
    logging_steps: int = field(default=10, metadata={"help": "Log the running loss every N optimiser steps."})
    eval_strategy: str = field(default="epoch", metadata={"help": "no, steps or epoch."})
    eval_steps: int = field(default=500, metadata={"help": "Evaluate every N steps with eval_strategy=steps."})
    save_strategy: str = field(default="steps", metadata={"help": "no, steps or epoch: when to write checkpoints."})
    save_steps: int = field(default=500, metadata={"help": "Write a checkpoint every N optimiser steps."})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )
    report_to: List[str] = field(default_factory=list, metadata={"help": "Accelerate trackers: tensorboard, wandb, ..."})
    run_name: Optional[str] = field(default=None, metadata={"help": "Name of the run for trackers."})
    dataloader_num_workers: int = 0
    dataloader_drop_last: bool = False
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is there."})
    disable_tqdm: bool = False
    ddp_find_unused_parameters: bool = False
    eval_teachers: bool = field(default=True, metadata={"help": "Measure the teachers' accuracy once before training."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the student to the Hub after training."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "ORG/NAME of the Hub repository."})
    hub_private_repo: bool = False
    hub_revision: Optional[str] = field(default=None, metadata={"help": "Branch to push to."})
    hub_create_pr: bool = False
    # Teacher soft-label cache (hfkd/cache): distil from stored teacher outputs instead of running teachers.
    teacher_cache: Optional[str] = field(
        default=None, metadata={"help": "A teacher cache (folder or Hub dataset id) to distil from, no teacher run."})

    def __post_init__(self):
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [r for r in self.report_to if r not in ("none", "")]
        problems = []
        if self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.per_device_train_batch_size < 1 or self.per_device_eval_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if self.gradient_accumulation_steps < 1:
            problems.append(f"gradient_accumulation_steps must be >= 1 (got {self.gradient_accumulation_steps})")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            problems.append("set num_train_epochs > 0 or max_steps > 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if self.max_grad_norm < 0:
            problems.append(f"max_grad_norm must be >= 0 (got {self.max_grad_norm}); 0 disables clipping")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0 (got {self.warmup_steps})")
        if self.mixed_precision not in _MIXED:
            problems.append(f"mixed_precision must be one of {_MIXED} (got {self.mixed_precision!r})")
        if self.lr_scheduler_type not in _SCHEDULERS:
            problems.append(f"lr_scheduler_type must be one of {_SCHEDULERS} (got {self.lr_scheduler_type!r})")
        if self.lr_scheduler_type == "multistep" and not self.lr_milestones:
            problems.append("lr_scheduler_type=multistep needs lr_milestones (epochs)")
        for name in ("eval_strategy", "save_strategy"):
            if getattr(self, name) not in _STRATEGIES:
                problems.append(f"{name} must be one of {_STRATEGIES} (got {getattr(self, name)!r})")
        for name in ("logging_steps", "eval_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            problems.append("save_total_limit must be >= 1 or None")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("push_to_hub needs hub_model_id=ORG/NAME")
        if problems:
            raise ValueError("invalid DistillationArguments: " + "; ".join(problems))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
