"""``hfkd distill --method NAME [--config x.yaml] [options]``: parse every settings group, then run.

The recipes (``recipes/kd.py`` ...) are this command with the method fixed.  On the embedded digits (the
default ``--dataset``) the demo preset (:func:`hfkd.cli.preset.demo_preset`) fills what was not given, so that with
no other arguments it runs the method's demo; on any other data the settings are the dataclasses' defaults and the
student's own preprocessing, and ``--student`` is required.  Everything is checked before anything trains
(:mod:`hfkd.cli.preflight`).
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from ..lazy import lazy_function
from ..methods.registry import describe_method, get_config_class, list_methods, normalize_name
from ..training.args import DistillationArguments
from .arguments import DataArguments, ModelArguments, run_arguments
from .parser import parse_args, peek, read_config, short_usage
from .preset import Preset, demo_preset, is_demo_data

# The workflows, the checks and the dry run import torch: they load once the settings are parsed, so that
# `hfkd distill --help` and a bad option answer without it.
dry_run = lazy_function(".dry_run", "dry_run", __package__)
RunSettings = lazy_function(".workflows", "RunSettings", __package__)
get_workflow = lazy_function(".workflows", "get_workflow", __package__)
check_run = lazy_function(".preflight", "check_run", __package__)
claim_output_dir = lazy_function(".preflight", "claim_output_dir", __package__)
problems_text = lazy_function(".preflight", "problems_text", __package__)

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
    preset = Preset(lambda given: demo_preset(name, given), types)
    (model, data, training, method_config, run), _ = parse_args(
        types, argv, config=config, preset=preset, extra_options=extra, prog=prog, description=description,
        epilog=PRESET_EPILOG)
    require_student(model.student, data.dataset)
    return RunSettings(name, model, data, training, method_config, run, preset=preset)


PRESET_EPILOG = ("Where the defaults come from: the (default: ...) values above are the library's own (the settings "
                 "dataclasses: AdamW at 1e-3, cosine schedule, checkpoints every 500 steps keeping 2, timm's training "
                 "augmentation, no baseline) and a --config file's values. On any other data than the embedded digits "
                 "they apply as shown, --student is required and starts from its pretrained weights, and image size, "
                 "interpolation, crop and mean/std are the student's own (timm's data config or its transformers "
                 "image processor). On the embedded demo data (no --dataset, or --dataset hfkd/digits) the demo "
                 "preset (hfkd/cli/preset.py) fills only what was not given. --dry_run prints what was resolved and "
                 "from where.")


def require_student(student, dataset: str) -> None:
    """``--student`` is required except on the embedded demo data, whose preset names the demo student."""
    if student is None:
        where = "" if is_demo_data(dataset) else f" on {dataset}"
        raise ValueError(f"--student is required{where}: name the student (a timm name such as resnet18, a Hub id "
                         "or a saved model folder); only the embedded demo data has a default student")


def run_settings(settings: RunSettings):
    if settings.run.dry_run:
        return dry_run(settings)
    for line in settings.preset.describe() if settings.preset else []:
        print(line, flush=True)
    # Only the problems are kept: the checked student is not held while the workflow trains its own.
    problems = check_run(settings, train_demo=True).problems
    if problems:
        sys.exit(f"error: the run cannot start, nothing was trained:\n{problems_text(problems)}")
    lock = claim_output_dir(settings)
    try:
        return get_workflow(settings.method).run(settings)
    finally:
        if lock is not None:
            lock.release()


def main(argv: Optional[List[str]] = None, method: Optional[str] = None, fixed_method: bool = False,
         prog: str = "hfkd distill"):
    try:
        settings = parse_distill_args(argv, method, fixed_method, prog=prog)
    except ValueError as e:  # a bad setting: say what and how to fix it, without a traceback
        sys.exit(f"{prog}: error: {e}\n{short_usage(prog)}")
    return run_settings(settings)
