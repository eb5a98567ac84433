"""Distillation methods.  Importing this package registers the built-in ones."""
from .base import DistillationMethod, LossOutput, MethodConfig, MethodContext
from .registry import create_method, get_method_class, list_methods, normalize_name, register_method
from .kd import KDConfig
from .supervised import SupervisedConfig
from .meal_v2 import MEALv2Config, MEALv2Discriminator  # noqa: F401  (registers meal_v2; exported)
from .feed import FEEDConfig
from .bake import BAKEConfig
from .pskd import PSKDConfig
from .extracurricular import ExtracurricularConfig

__all__ = [
    "DistillationMethod", "LossOutput", "MethodConfig", "MethodContext", "create_method", "get_method_class",
    "list_methods", "normalize_name", "register_method", "KDConfig", "SupervisedConfig", "MEALv2Config",
    "FEEDConfig", "BAKEConfig", "PSKDConfig", "ExtracurricularConfig",
]
