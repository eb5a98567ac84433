"""The trainer and its arguments; names load on first use, so ``hfkd.training.args`` imports no torch."""
from ..lazy import lazy_exports

_EXPORTS = {
    "DistillationArguments": ".args", "TrainerCallback": ".callbacks", "ProgressCallback": ".callbacks",
    "CheckpointError": ".checkpoint", "DistillationModule": ".trainer", "DistillationTrainer": ".trainer",
    "TrainerState": ".trainer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
