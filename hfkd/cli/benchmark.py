"""``hfkd benchmark``: the baseline and each method over seeds and folds, compared run by run.

    hfkd benchmark                                   # the demo: KD and MEAL V2 vs the no-KD baseline, 3 seeds x 5 folds
    hfkd benchmark --methods kd pskd --seeds 0 1 2 3 4
    hfkd benchmark --methods feed feed_sequential bake extracurricular extracurricular_regression compress
    hfkd benchmark --dataset ./photos --student resnet18 --teachers ./teacher --split holdout --methods kd

Every (seed, fold) trains the baseline and each method on the same images from the same initialisation, saves
each run's predictions, and compares method and baseline pair by pair: the mean difference with its
corrected resampled t interval (docs/benchmark.md).  A run whose predictions are saved is reused, so a killed
benchmark continues where it stopped when run again.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from ..lazy import lazy_function
from ..methods.registry import list_methods, normalize_name
from ..settings import shorten
from .arguments import BenchmarkArguments
from .benchmark_entries import WORKFLOW_ENTRIES
from .parser import parse_args, short_usage

# The runs import torch: loaded once the settings are parsed, so that `hfkd benchmark --help` answers without it.
run_benchmark = lazy_function(".benchmarking", "run_benchmark", __package__)
check_teachers = lazy_function(".benchmarking", "check_teachers", __package__)

PROG = "hfkd benchmark"
DESCRIPTION = ("The no-KD baseline and each method over seeds and folds on the same images, compared run by run: "
               "the mean difference with its corrected resampled t interval (docs/benchmark.md).")


def check_methods(methods: List[str]) -> List[str]:
    """The entries' names: registry names of methods, or ``WORKFLOW_ENTRIES``; refused: unknown names and the
    baseline itself."""
    known = list_methods()
    names = []
    for method in methods:
        name = method if method in WORKFLOW_ENTRIES else normalize_name(method)
        if name not in known and name not in WORKFLOW_ENTRIES:
            raise ValueError(f"unknown method {method[:100]!r} in --methods; the methods are {', '.join(known)}, "
                             f"and {', '.join(WORKFLOW_ENTRIES)}")
        if name == "supervised":
            raise ValueError("--methods names supervised, which is the baseline every method is compared with; "
                             "name only distillation methods")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"--methods names a method twice: {shorten(methods)}")
    return names


def parse_benchmark_args(argv: Optional[List[str]] = None) -> BenchmarkArguments:
    (args,), _ = parse_args((BenchmarkArguments,), argv, prog=PROG, description=DESCRIPTION)
    args.methods = check_methods(args.methods)
    return args


def main(argv: Optional[List[str]] = None):
    try:
        args = parse_benchmark_args(argv)
        check_teachers(args)  # before any data is loaded or model trained
    except ValueError as e:  # a bad setting: what and how to fix it, without a traceback
        sys.exit(f"{PROG}: error: {e}\n{short_usage(PROG)}")
    return run_benchmark(args)
