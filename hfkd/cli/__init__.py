"""The ``hfkd`` command: ``hfkd distill|train|eval|push|compress|cache ...`` (also ``accelerate launch -m hfkd ...``).

This package is hfkd's application: parsing (``parser``, ``arguments``), the demo and its preset
(``demo``), what a command does with its settings (``pipeline``, ``workflows``) and one module per
subcommand.  The library (every other part of hfkd) never imports it.

Each subcommand is a module with a ``main(argv)``; :data:`COMMANDS` maps its name to it, so adding
one is one module and one line here.  The module is imported only when its command runs: this
registry imports nothing heavy, so ``hfkd --help`` answers without torch.
"""
from __future__ import annotations

import importlib
import sys
import time
from typing import Dict, List, Optional

from ..lazy import lazy_function

# Loaded once a command has run: "which process am I" is Accelerate's answer (torch), and `hfkd --help` should cost
# no more than Python's start.
is_main_process = lazy_function("..launch", "is_main_process", __package__)
format_duration = lazy_function("..training.callbacks", "format_duration", __package__)

# name -> "module:function" taking argv (imported only when the subcommand runs)
COMMANDS: Dict[str, str] = {
    "distill": "hfkd.cli.distill:main",
    "train": "hfkd.cli.train:main",
    "eval": "hfkd.cli.evaluate:main",
    "push": "hfkd.cli.push:main",
    "compress": "hfkd.cli.compress:main",
    "cache": "hfkd.cli.cache:main",
    "benchmark": "hfkd.cli.benchmark:main",
}
DESCRIPTIONS = {
    "distill": "distil a student with any registered method (--method NAME; the embedded demo by default)",
    "train": "train a model with cross-entropy (teachers, baselines)",
    "eval": "top-1 / top-5 / NLL / ECE of a model on a dataset",
    "push": "upload a saved student folder to the Hub in one commit",
    "compress": "prune, recover with KD, quantize to int8 and export a distilled student (docs/compression.md)",
    "cache": "run the teachers once and store their soft labels, to distil from without them (docs/teacher_cache.md)",
    "benchmark": "the no-KD baseline and methods over seeds and folds, compared pair by pair (docs/benchmark.md)",
}


# Errors that refuse a run for a reason the message states with its fix (a resume of another run, a damaged
# checkpoint, an output folder in use, a missing optional package): said in one message, not a traceback.
# module -> class; looked up only in modules already imported, since an error can only come from one of those.
REFUSALS = {"hfkd.training.resume": "ResumeRefused", "hfkd.training.checkpoint": "CheckpointError",
            "hfkd.output_dir": "OutputDirError", "hfkd.extras": "MissingDependencyError"}


def _refusals() -> tuple:
    return tuple(getattr(sys.modules[m], name) for m, name in REFUSALS.items() if m in sys.modules)


def _usage() -> str:
    lines = ["usage: hfkd <command> [options]   (hfkd <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<10}{DESCRIPTIONS.get(name, '')}" for name in COMMANDS]
    lines += ["", "Launch on several processes or in bf16 with Accelerate: accelerate launch -m hfkd distill ..."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return None
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib  # only for a mistyped command: `hfkd --help` should cost no more than Python's start

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        sys.exit(f"hfkd: unknown command {name[:100]!r}{hint}\nusage: hfkd <command> [options]; commands: "
                 f"{', '.join(COMMANDS)} (hfkd --help)")
    module, function = COMMANDS[name].split(":")
    start = time.perf_counter()
    try:
        result = getattr(importlib.import_module(module), function)(rest)
    except Exception as e:  # noqa: BLE001 - only hfkd's refusals become one message; anything else is re-raised
        if isinstance(e, _refusals()):
            sys.exit(f"hfkd {name}: error: {e}")
        raise
    if is_main_process():
        print(f"hfkd {name}: done in {format_duration(time.perf_counter() - start)}", flush=True)
    return result


__all__ = ["COMMANDS", "DESCRIPTIONS", "main", "cli"]


def cli() -> None:
    """The console entry point (``[project.scripts]``): runs :func:`main`, returns nothing for the exit code."""
    main()
