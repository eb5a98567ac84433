"""Distillation methods.  Importing this package registers the built-in ones."""
from .base import DistillationMethod, LossOutput, MethodContext
from .registry import create_method, get_method_class, list_methods, register_method
from . import kd, supervised  # noqa: F401  (registration)
from .meal_v2 import MEALv2Discriminator  # noqa: F401  (registers meal_v2; exported)
from . import feed  # noqa: F401  (registration)
from . import bake, extracurricular, pskd  # noqa: F401  (registration)

__all__ = [
    "DistillationMethod", "LossOutput", "MethodContext", "create_method", "get_method_class", "list_methods",
    "register_method",
]
