"""``hfkd distill --method NAME [--config x.yaml] [options]``: parse every settings group, then run.

The recipes (``recipes/kd.py`` ...) are this command with the method fixed.  On the embedded digits (the
default ``--dataset``) the demo preset (:func:`hfkd.cli.demo.demo_preset`) fills what was not given, so that with
no other arguments it runs the method's demo; on any other data the settings are the dataclasses' defaults and the
student's own preprocessing, and ``--student`` is required.  Everything is checked before anything trains
(:mod:`hfkd.cli.preflight`).
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from ..methods.registry import get_method_class, list_methods, normalize_name
from ..training.args import DistillationArguments
from .arguments import DataArguments, ModelArguments
from .demo import Preset, demo_preset, is_demo_data
from .dry_run import dry_run
from .parser import parse_args, peek, read_config
from .preflight import check_run, claim_output_dir, problems_text
from .workflows import RunSettings, get_workflow

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
    method_class = get_method_class(name)
    workflow = get_workflow(name)
    types = (ModelArguments, DataArguments, DistillationArguments, method_class.config_class, workflow.arguments)
    extra = () if fixed_method else (_method_option(list_methods(), name),)
    description = (f"{method_class.__name__}: {(method_class.__doc__ or '').strip().splitlines()[0]}"
                   if method_class.__doc__ else None)
    preset = Preset(lambda given: demo_preset(name, given), types)
    (model, data, training, method_config, run), _ = parse_args(
        types, argv, config=config, preset=preset, extra_options=extra, prog=prog, description=description,
        epilog=PRESET_EPILOG)
    require_student(model.student, data.dataset)
    return RunSettings(name, model, data, training, method_config, run, preset=preset)


PRESET_EPILOG = ("Where the defaults come from: on the embedded demo data (no --dataset, or --dataset hfkd/digits) "
                 "the (default: ...) values shown are the demo preset's (hfkd/cli/demo.py), filling only what was "
                 "not given. On any other data they are the library's own (the settings dataclasses: AdamW at 1e-3, "
                 "cosine schedule, checkpoints every 500 steps keeping 2, timm's training augmentation, no baseline), "
                 "--student is required and starts from its pretrained weights, and image size, interpolation, crop "
                 "and mean/std are the student's own (timm's data config or its transformers image processor). "
                 "--dry_run prints what was resolved and from where.")


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
        sys.exit(f"{prog}: error: {e}")
    return run_settings(settings)
