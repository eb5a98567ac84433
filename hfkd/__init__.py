"""hfkd: knowledge distillation of image classifiers for the Hugging Face ecosystem.

Every name below loads its module on first use (:mod:`hfkd.lazy`): ``import hfkd`` imports neither
torch nor timm, so the ``hfkd`` command answers ``--help`` at once.  The CIFAR networks register with
timm when :mod:`hfkd.models` is imported (``import hfkd.models``, or any model-building call).
"""
from .lazy import lazy_exports
from .version import __version__

_EXPORTS = {
    # modules
    "losses": ".losses", "tasks": ".tasks", "methods": ".methods", "models": ".models", "data": ".data",
    "training": ".training", "hub": ".hub", "cache": ".cache", "compress": ".compress",
    # models
    "Backbone": ".models", "PreprocessConfig": ".models", "Teacher": ".models", "create_backbone": ".models",
    "create_teacher": ".models",
    # data
    "AugmentConfig": ".data", "ImageClassificationData": ".data", "load_default_dataset": ".data",
    "load_image_dataset": ".data",
    # tasks
    "Task": ".tasks", "ClassificationTask": ".tasks", "RegressionTask": ".tasks", "create_task": ".tasks",
    # methods and their configs
    "DistillationMethod": ".methods", "MethodConfig": ".methods", "create_method": ".methods",
    "list_methods": ".methods", "register_method": ".methods",
    "KD": ".methods", "KDConfig": ".methods", "MEALv2": ".methods", "MEALv2Config": ".methods",
    "FEED": ".methods", "FEEDConfig": ".methods", "PSKD": ".methods", "PSKDConfig": ".methods",
    "BAKE": ".methods", "BAKEConfig": ".methods", "Extracurricular": ".methods",
    "ExtracurricularConfig": ".methods", "Supervised": ".methods", "SupervisedConfig": ".methods",
    # training
    "DistillationArguments": ".training", "DistillationTrainer": ".training", "TrainerCallback": ".training",
    # sharing
    "from_pretrained": ".hub", "push_to_hub": ".hub", "save_student": ".hub",
    # teacher cache and compression
    "cache_teacher_outputs": ".cache", "push_teacher_cache": ".cache",
    "compress_student": ".compress", "CompressionArguments": ".compress", "PruningConfig": ".compress",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["__version__", *_EXPORTS]
