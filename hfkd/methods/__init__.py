"""Distillation methods.  Importing this package registers the built-in ones."""
from .base import DistillationMethod, LossOutput, MethodConfig, MethodContext
from .registry import create_method, get_method_class, list_methods, normalize_name, register_method
from .kd import KD, KDConfig
from .supervised import Supervised, SupervisedConfig
from .meal_v2 import MEALv2, MEALv2Config, MEALv2Discriminator
from .feed import FEED, FEEDConfig
from .bake import BAKE, BAKEConfig
from .pskd import PSKD, PSKDConfig
from .extracurricular import Extracurricular, ExtracurricularConfig

__all__ = [
    "DistillationMethod", "LossOutput", "MethodConfig", "MethodContext", "create_method", "get_method_class",
    "list_methods", "normalize_name", "register_method", "KD", "KDConfig", "Supervised", "SupervisedConfig",
    "MEALv2", "MEALv2Config", "MEALv2Discriminator", "FEED", "FEEDConfig", "BAKE", "BAKEConfig", "PSKD",
    "PSKDConfig", "Extracurricular", "ExtracurricularConfig",
]
