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
