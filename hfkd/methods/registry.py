"""Methods by name: ``create_method("kd", temperature=4.0)``."""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Type

from .base import DistillationMethod

_METHODS: Dict[str, Type[DistillationMethod]] = {}


def register_method(cls: Type[DistillationMethod]) -> Type[DistillationMethod]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({_METHODS[cls.name].__name__})")
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> List[str]:
    return sorted(_METHODS)


def get_method_class(name: str) -> Type[DistillationMethod]:
    key = name.lower().replace("-", "_")
    if key not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(list_methods())}")
    return _METHODS[key]


def create_method(name: str, **kwargs) -> DistillationMethod:
    """Build a registered method; unknown keyword arguments are an error that lists the valid ones."""
    cls = get_method_class(name)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"method {cls.name!r} does not take {unknown}; its parameters are {accepted}")
    return cls(**kwargs)
