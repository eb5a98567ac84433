"""Optional dependencies: checked before a run, named with the ``pip install`` that brings them.

A missing optional package should not surface as a ``ModuleNotFoundError`` deep in a run (``hfkd compress``)
or as nothing at all (Accelerate skips a tracker whose package is missing with a debug line, and the training
curves are simply not drawn).  The checks look the package up without importing it
(:func:`importlib.util.find_spec`), so they cost nothing and import no torch.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

#: the extras of pyproject.toml ``[project.optional-dependencies]``: extra -> the modules it brings
EXTRAS: Dict[str, Tuple[str, ...]] = {
    "compress": ("torch_pruning", "onnx", "onnxscript", "onnxruntime"),
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
}
# Accelerate's trackers (``--report_to``) -> (a module that provides it, the pip requirement that brings it).
# TensorBoard also works through tensorboardX, as Accelerate accepts either.
TRACKERS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), 'pip install "hfkd[tensorboard]"'),
    "wandb": (("wandb",), 'pip install "hfkd[wandb]"'),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "aim": (("aim",), "pip install aim"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "clearml": (("clearml",), "pip install clearml"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "trackio": (("trackio",), "pip install trackio"),
}

_NOTED: set = set()


class MissingDependencyError(ImportError):
    """An optional package a run needs is not installed; the message is one line with the install command."""


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a half-installed module
        return False


def install_command(extra: str) -> str:
    return f'pip install "hfkd[{extra}]"'


def missing_modules(extra: str, modules: Optional[Sequence[str]] = None) -> List[str]:
    """The modules of ``extra`` (or the given subset of them) that are not installed."""
    return [m for m in (modules or EXTRAS[extra]) if not is_installed(m)]


def require(extra: str, purpose: str, modules: Optional[Sequence[str]] = None) -> None:
    """Raise :class:`MissingDependencyError` when a module of ``extra`` that ``purpose`` needs is missing."""
    missing = missing_modules(extra, modules)
    if missing:
        raise MissingDependencyError(f"{purpose} needs {', '.join(missing)}: {install_command(extra)}")


def tracker_problems(report_to: Iterable[str]) -> List[str]:
    """One line per ``--report_to`` tracker whose package is missing (``all`` takes what is installed)."""
    problems = []
    for tracker in report_to:
        modules, install = TRACKERS.get(str(tracker).lower(), ((), ""))
        if modules and not any(is_installed(m) for m in modules):
            problems.append(f"report_to {tracker} needs {modules[0]}: {install}")
    return problems


def note_missing(extra: str, what: str) -> None:
    """Say once per process, on stderr, that ``what`` is skipped for want of ``extra`` (for optional output)."""
    if extra in _NOTED:
        return
    _NOTED.add(extra)
    print(f"note: {what} ({', '.join(EXTRAS[extra])} is not installed: {install_command(extra)})", file=sys.stderr)
