"""hfkd: knowledge distillation of image classifiers for the Hugging Face ecosystem."""
from . import losses, tasks
from .cache import cache_teacher_outputs, push_teacher_cache
from .compress import compress_student
from .data import ImageClassificationData, load_default_dataset, load_image_dataset
from .hub import from_pretrained, push_to_hub, save_student
from .methods import DistillationMethod, create_method, list_methods, register_method
from .models import Backbone, PreprocessConfig, Teacher, create_backbone, create_teacher
from .training import DistillationArguments, DistillationTrainer, TrainerCallback

__version__ = "0.1.0"

__all__ = [
    "losses", "tasks", "cache_teacher_outputs", "push_teacher_cache", "ImageClassificationData",
    "load_default_dataset", "load_image_dataset", "save_student", "from_pretrained", "push_to_hub", "compress_student",
    "DistillationMethod", "create_method", "list_methods", "register_method", "Backbone", "PreprocessConfig",
    "Teacher", "create_backbone", "create_teacher", "DistillationArguments", "DistillationTrainer", "TrainerCallback",
]
