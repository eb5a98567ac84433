from . import cifar  # registers the CIFAR networks with timm
from .backbone import LAST_STAGE, Backbone, BackboneOutput, ModuleBackbone, OutputRequest, TimmBackbone, TransformersBackbone
from .factory import create_backbone
from .preprocess import PreprocessConfig, adapt_batch
from .teacher import Teacher, check_teacher_labels, create_teacher

__all__ = [
    "Backbone", "BackboneOutput", "OutputRequest", "TimmBackbone", "TransformersBackbone", "ModuleBackbone",
    "LAST_STAGE", "create_backbone", "PreprocessConfig", "adapt_batch", "Teacher", "create_teacher",
    "check_teacher_labels",
]
