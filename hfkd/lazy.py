"""Package faces whose names load on first use (PEP 562), so that importing a package costs nothing.

``hfkd --help`` and the settings dataclasses must not pay for torch, timm or transformers: a package's
``__init__`` lists where each public name lives, and the module is imported when the name is first
read (``hfkd.DistillationTrainer``, ``from hfkd import create_backbone``).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` from ``{name: module}``.

    ``module`` is relative to ``package`` (``".models"``); a name equal to its module's last part
    (``"losses": ".losses"``) is the module itself.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        return module if exports[name].rsplit(".", 1)[-1] == name else getattr(module, name)

    def __dir__() -> List[str]:
        return sorted(exports)

    return __getattr__, __dir__


def lazy_function(module: str, name: str, package: str) -> Callable[..., Any]:
    """``module.name`` as a function that imports ``module`` on its first call.

    A command's parse must not load torch (``hfkd distill --help``), but what runs after the parse does:
    the command names its heavy helpers with this and they load once the settings are read.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module, package), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on the first call"
    return call
