"""Share students: native save, model cards, Hub pushes and loading them back."""
from .card import create_model_card, plot_training_curves
from .load import eval_transform, from_pretrained, load_lineage
from .push import HubPushError, push_to_hub
from .save import atomic_directory, save_student

__all__ = [
    "atomic_directory", "save_student", "from_pretrained", "load_lineage", "eval_transform", "push_to_hub",
    "HubPushError", "create_model_card", "plot_training_curves",
]
