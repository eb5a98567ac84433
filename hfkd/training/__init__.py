from .args import DistillationArguments
from .callbacks import ProgressCallback, TrainerCallback
from .checkpoint import CheckpointError
from .trainer import DistillationModule, DistillationTrainer, TrainerState, create_accelerator

__all__ = ["DistillationArguments", "DistillationTrainer", "DistillationModule", "TrainerCallback",
           "ProgressCallback", "TrainerState", "create_accelerator", "CheckpointError"]
