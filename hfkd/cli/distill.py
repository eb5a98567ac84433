"""``hfkd distill --method NAME [--config x.yaml] [options]``: parse every settings group, then run.

The recipes (``recipes/kd.py`` ...) are this command with the method fixed.  With no other
arguments it runs the method's embedded demo (``hfkd.demo.demo_defaults``).
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from ..arguments import DataArguments, ModelArguments
from ..training.args import DistillationArguments
from ..workflows import RunSettings, get_workflow
from .parser import load_yaml, option_value, parse_args, split_config

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
    from ..demo import demo_defaults
    from ..methods.registry import get_method_class, list_methods, normalize_name

    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = split_config(argv)
    values = load_yaml(config_path) if config_path else {}
    chosen = option_value(argv, "method") or values.pop("method", None)  # read here, not an option of any group
    if fixed_method:
        if chosen and normalize_name(chosen) != normalize_name(method):
            raise ValueError(f"this recipe runs {method!r} but the settings ask for {chosen!r}; use "
                             f"`hfkd distill --method {chosen}` (or recipes/{normalize_name(chosen)}.py)")
        chosen = method
    name = normalize_name(chosen or method or DEFAULT_METHOD)
    method_class = get_method_class(name)
    workflow = get_workflow(name)
    types = (ModelArguments, DataArguments, DistillationArguments, method_class.config_class, workflow.arguments)
    extra = () if fixed_method else (_method_option(list_methods(), name),)
    description = (f"{method_class.__name__}: {(method_class.__doc__ or '').strip().splitlines()[0]}"
                   if method_class.__doc__ else None)
    model, data, training, method_config, run = parse_args(
        types, argv, defaults=demo_defaults(name, argv), yaml_values=values, yaml_name=config_path, extra_options=extra, prog=prog,
        description=description)
    return RunSettings(name, model, data, training, method_config, run)


def run_settings(settings: RunSettings):
    if settings.run.dry_run:
        from .dry_run import dry_run

        return dry_run(settings)
    return get_workflow(settings.method).run(settings)


def main(argv: Optional[List[str]] = None, method: Optional[str] = None, fixed_method: bool = False,
         prog: str = "hfkd distill"):
    try:
        settings = parse_distill_args(argv, method, fixed_method, prog=prog)
    except ValueError as e:  # a bad setting: say what and how to fix it, without a traceback
        sys.exit(f"{prog}: error: {e}")
    return run_settings(settings)
