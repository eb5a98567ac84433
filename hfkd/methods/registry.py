"""Methods by name: ``create_method("kd", temperature=4.0)``."""
from __future__ import annotations

from typing import Dict, List, Type

from .base import DistillationMethod

_METHODS: Dict[str, Type[DistillationMethod]] = {}


def normalize_name(name: str) -> str:
    """The registry key of a method name: case and ``-`` / ``_`` do not matter (``My-KD`` is ``my_kd``)."""
    return str(name).strip().lower().replace("-", "_")


def register_method(cls: Type[DistillationMethod]) -> Type[DistillationMethod]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    key = normalize_name(cls.name)
    if key in _METHODS and _METHODS[key] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({_METHODS[key].__name__})")
    _METHODS[key] = cls
    return cls


def list_methods() -> List[str]:
    return sorted(_METHODS)


def get_method_class(name: str) -> Type[DistillationMethod]:
    key = normalize_name(name)
    if key not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(list_methods())}")
    return _METHODS[key]


def create_method(name: str, config=None, **kwargs) -> DistillationMethod:
    """Build a registered method from its config and/or settings as keywords.

    Unknown settings are an error that lists the valid ones (``DistillationMethod.__init__``).
    """
    return get_method_class(name)(config, **kwargs)
