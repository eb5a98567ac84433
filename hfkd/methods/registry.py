"""Methods by name: ``create_method("kd", temperature=4.0)``.

The built-in methods are known by name before their modules are imported (:data:`BUILTIN`): the command
line asks for a method's settings class and its one-line description (:func:`get_config_class`,
:func:`describe_method`) without loading torch, and a method's module is imported when the method itself
is first asked for (:func:`get_method_class`).  Methods registered with :func:`register_method` are known
once their module has run.
"""
from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Dict, List, Type

from . import configs
from ..settings import shorten

if TYPE_CHECKING:  # the method classes import torch; this module must not
    from .base import DistillationMethod

_METHODS: Dict[str, Type["DistillationMethod"]] = {}

#: built-in method name -> (the module that registers it, its settings class in :mod:`hfkd.methods.configs`)
BUILTIN: Dict[str, tuple] = {
    "kd": ("hfkd.methods.kd", "KDConfig"),
    "supervised": ("hfkd.methods.supervised", "SupervisedConfig"),
    "meal_v2": ("hfkd.methods.meal_v2", "MEALv2Config"),
    "feed": ("hfkd.methods.feed", "FEEDConfig"),
    "bake": ("hfkd.methods.bake", "BAKEConfig"),
    "pskd": ("hfkd.methods.pskd", "PSKDConfig"),
    "extracurricular": ("hfkd.methods.extracurricular", "ExtracurricularConfig"),
    "feature_kd": ("hfkd.methods.feature_kd", "FeatureKDConfig"),
}


def normalize_name(name: str) -> str:
    """The registry key of a method name: case and ``-`` / ``_`` do not matter (``My-KD`` is ``my_kd``)."""
    return str(name).strip().lower().replace("-", "_")


def register_method(cls: Type["DistillationMethod"]) -> Type["DistillationMethod"]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    key = normalize_name(cls.name)
    if key in BUILTIN and key not in _METHODS and cls.__module__ != BUILTIN[key][0]:
        importlib.import_module(BUILTIN[key][0])  # a built-in name is taken even before its module is imported
    if key in _METHODS and _METHODS[key] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({_METHODS[key].__name__})")
    _METHODS[key] = cls
    return cls


def list_methods() -> List[str]:
    return sorted(set(_METHODS) | set(BUILTIN))


def _known(name: str) -> str:
    """The registry key of ``name``, or a ``ValueError`` with the closest names."""
    key = normalize_name(name)
    if key in _METHODS or key in BUILTIN:
        return key
    close = difflib.get_close_matches(key, list_methods(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown method {shorten(name)}{hint}; available methods: {', '.join(list_methods())}")


def get_method_class(name: str) -> Type["DistillationMethod"]:
    key = _known(name)
    if key not in _METHODS:
        importlib.import_module(BUILTIN[key][0])  # a built-in method registers itself when its module runs
    return _METHODS[key]


def get_config_class(name: str) -> Type[configs.MethodConfig]:
    """The settings dataclass of method ``name``; a built-in method's without importing the method (no torch)."""
    key = _known(name)
    if key in _METHODS:
        return _METHODS[key].config_class
    return getattr(configs, BUILTIN[key][1])


def describe_method(name: str) -> str:
    """One line about method ``name`` for ``--help``: the first line of its settings class's docstring."""
    doc = (get_config_class(name).__doc__ or "").strip()
    return doc.splitlines()[0].replace("``", "") if doc else normalize_name(name)


def create_method(name: str, config=None, **kwargs) -> "DistillationMethod":
    """Build a registered method from its config and/or settings as keywords.

    Unknown settings are an error that lists the valid ones (``DistillationMethod.__init__``).
    """
    return get_method_class(name)(config, **kwargs)
