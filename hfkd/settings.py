"""Checks every settings dataclass shares: value types (YAML values reach a dataclass unconverted) and finiteness.

Importing this module imports no torch: the command line builds settings before anything heavy loads.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from typing import Any, List, Mapping, Union

import numpy as np

# A value quoted in a message is cut to this many characters: a YAML alias bomb or a huge config value must
# not put megabytes on stderr.
QUOTE_LIMIT = 200

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as it is when it fits in ``limit`` characters, else its first ``limit`` marked as cut."""
    return text if len(text) <= limit else f"{text[:limit]}... (cut)"


def shorten(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (:func:`cut`).

    Every validation message that quotes a user's or a file's value goes through this.  Long
    containers are not rendered whole first (``reprlib`` caps each level), so a huge value costs little.
    """
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxtuple, r.maxset, r.maxlevel = limit, limit, 20, 20, 20, 20, 3
    return cut(r.repr(value), limit)


def _type_ok(value: Any, hint: Any) -> bool:
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_type_ok(value, p) for p in params)
    if origin in (list, List):
        return isinstance(value, list) and all(_type_ok(v, params[0]) for v in value) if params else isinstance(value, list)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # a type this check does not know: left to the field's own validation


def field_type_problems(obj) -> List[str]:
    """Fields of the dataclass ``obj`` whose value has the wrong type (e.g. ``max_steps: 2.5`` or
    ``learning_rate: [..]`` from a YAML file, where argparse does not convert) or is not finite."""
    hints = typing.get_type_hints(type(obj))
    problems = []
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints.get(f.name)
        if hint is not None and not _type_ok(value, hint):
            expected = _NAMES.get(hint) or str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
            problems.append(f"{f.name} must be {expected}, got {shorten(value)} ({type(value).__name__})")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number, got {value}")
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            problems.append(f"{f.name} must hold finite numbers, got {shorten(value)}")
    return problems


def check_finite_settings(settings: Mapping[str, Any], owner: str) -> None:
    """Every float setting is finite (``inf``/``nan`` would train to NaN weights without a word)."""
    bad = [f"{k}={v}" for k, v in settings.items() if isinstance(v, float) and not math.isfinite(v)]
    bad += [f"{k}={shorten(v)}" for k, v in settings.items()
            if isinstance(v, (list, tuple)) and any(isinstance(x, float) and not math.isfinite(x) for x in v)]
    if bad:
        raise ValueError(f"{owner}: non-finite values {bad}; every numeric setting must be a finite number")
