"""``hfkd distill --method NAME [--config x.yaml] [options]``: parse every settings group, then run.

The recipes (``recipes/kd.py`` ...) are this command with the method fixed.  With no other
arguments it runs the method's embedded demo (:func:`hfkd.cli.demo.demo_preset`).
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from ..lazy import lazy_function
from ..methods.registry import describe_method, get_config_class, list_methods, normalize_name
from ..training.args import DistillationArguments
from .arguments import DataArguments, ModelArguments, run_arguments
from .parser import parse_args, peek, read_config, short_usage

# The demo, the workflows and the dry run import torch: they load once the settings are parsed, so that
# `hfkd distill --help` and a bad option answer without it.
demo_preset = lazy_function(".demo", "demo_preset", __package__)
dry_run = lazy_function(".dry_run", "dry_run", __package__)
RunSettings = lazy_function(".workflows", "RunSettings", __package__)
get_workflow = lazy_function(".workflows", "get_workflow", __package__)

DEFAULT_METHOD = "kd"


def _method_option(methods: Sequence[str], default: str):
    return (("--method",), dict(default=default, choices=list(methods), metavar="NAME",
                                help=f"The distillation method: {', '.join(methods)}. `--method NAME --help` "
                                     "shows that method's settings."))


def parse_distill_args(argv: Optional[Sequence[str]] = None, method: Optional[str] = None,
                       fixed_method: bool = False, prog: Optional[str] = None) -> RunSettings:
    """All settings of a distillation run from ``argv`` and ``--config``.

    The method is ``method`` when ``fixed_method`` (a recipe), else ``--method``, else the YAML's
    ``method:``, else ``method`` or ``kd``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config = read_config(argv)
    # `method` is read here, before the parser is built for it; it is not an option of any settings group.
    chosen = peek(argv, "method")["method"] or config.values.pop("method", None)
    if fixed_method:
        if chosen and normalize_name(chosen) != normalize_name(method):
            raise ValueError(f"this recipe runs {method!r} but the settings ask for {chosen!r}; use "
                             f"`hfkd distill --method {chosen}` (or recipes/{normalize_name(chosen)}.py)")
        chosen = method
    name = normalize_name(chosen or method or DEFAULT_METHOD)
    types = (ModelArguments, DataArguments, DistillationArguments, get_config_class(name), run_arguments(name))
    extra = () if fixed_method else (_method_option(list_methods(), name),)
    description = describe_method(name)
    (model, data, training, method_config, run), _ = parse_args(
        types, argv, config=config, preset=lambda given: demo_preset(name, given), extra_options=extra, prog=prog,
        description=description)
    return RunSettings(name, model, data, training, method_config, run)


def run_settings(settings: RunSettings):
    if settings.run.dry_run:
        return dry_run(settings)
    return get_workflow(settings.method).run(settings)


def main(argv: Optional[List[str]] = None, method: Optional[str] = None, fixed_method: bool = False,
         prog: str = "hfkd distill"):
    try:
        settings = parse_distill_args(argv, method, fixed_method, prog=prog)
    except ValueError as e:  # a bad setting: say what and how to fix it, without a traceback
        sys.exit(f"{prog}: error: {e}\n{short_usage(prog)}")
    return run_settings(settings)
