"""Command line + YAML into settings dataclasses, with one ``--help`` group per dataclass.

``hfkd distill --method kd --config run.yaml --learning_rate 0.01``: the YAML file gives
values, flags override them.  Precedence: command line > YAML > the command's defaults
(e.g. the demo's) > dataclass defaults.  A YAML file may name the method (``method: meal_v2``).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, get_type_hints

import yaml

CONFIG_HELP = "A YAML file of settings (any option below, and `method`); command-line flags override it."


def _group_name(dtype: Type) -> str:
    from ..methods.base import MethodConfig
    from ..training.args import DistillationArguments

    if dtype is DistillationArguments:
        return "training"
    if issubclass(dtype, MethodConfig):
        return f"method ({dtype.__name__})"
    return getattr(dtype, "_argument_group_name", dtype.__name__)


def _build_parser(dataclass_types: Sequence[Type], **kwargs):
    from transformers import HfArgumentParser

    class GroupedParser(HfArgumentParser):
        """HfArgumentParser with one titled group per dataclass, described by its docstring."""

        def _add_dataclass_arguments(self, dtype):
            doc = (dtype.__doc__ or "").strip().split("\n")[0]
            group = self.add_argument_group(_group_name(dtype), None if doc.startswith(dtype.__name__ + "(") else doc)
            hints = get_type_hints(dtype)
            for f in dataclasses.fields(dtype):
                if f.init:
                    f.type = hints[f.name]
                    self._parse_dataclass_field(group, f)

    return GroupedParser(list(dataclass_types), **kwargs)


def create_parser(dataclass_types: Sequence[Type], extra_options=(), **parser_kwargs):
    """The argparse parser of ``dataclass_types`` plus ``--config`` and ``extra_options``."""
    parser = _build_parser(dataclass_types, **parser_kwargs)
    parser.add_argument("--config", metavar="YAML", help=CONFIG_HELP)
    for flags, kwargs in extra_options:
        parser.add_argument(*flags, **kwargs)
    return parser


def split_config(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """``(yaml_path, argv without it)`` from ``--config X``, ``--config=X`` or a leading ``X.yaml``."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise ValueError("--config needs a YAML file: --config path/to/settings.yaml")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            path = arg[len("--config="):]
            if not path:
                raise ValueError("--config needs a YAML file: --config=path/to/settings.yaml")
            return path, argv[:i] + argv[i + 1:]
    if argv and argv[0].endswith((".yaml", ".yml")):
        return argv[0], argv[1:]
    return None, argv


def load_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def option_value(argv: Sequence[str], name: str) -> Optional[str]:
    """The value of ``--name X`` / ``--name=X`` in ``argv``, or ``None``."""
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def parse_args(dataclass_types: Sequence[Type], argv: Optional[Sequence[str]] = None,
               defaults: Optional[dict] = None, yaml_values: Optional[Dict[str, Any]] = None,
               extra_options: Sequence[Tuple[Tuple[str, ...], Dict[str, Any]]] = (), yaml_name: Optional[str] = None,
               **parser_kwargs) -> Tuple[Any, ...]:
    """Parse ``--config file.yaml`` plus command-line overrides into instances of ``dataclass_types``.

    ``yaml_values`` is the already-read YAML file ``yaml_name`` (when the caller needed a key such
    as ``method`` first; it is then given without ``--config`` in ``argv``).  ``extra_options`` are
    ``(flags, argparse kwargs)`` shown in ``--help`` and handled by the caller (``--method``).
    Unknown YAML keys and values that fail a dataclass's checks raise ``ValueError``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, argv = split_config(argv)
    parser = create_parser(dataclass_types, extra_options, **parser_kwargs)
    known = {a.dest for a in parser._actions} - {"help", "config"}
    if defaults:
        parser.set_defaults(**defaults)
    values = dict(yaml_values or {})
    if config_path:
        values.update(load_yaml(config_path))
    if values:
        unknown = sorted(set(values) - known)
        if unknown:
            groups = ", ".join(_group_name(t) for t in dataclass_types)
            raise ValueError(f"{config_path or yaml_name or 'settings'}: unknown keys {unknown}; the options are "
                             f"those of {groups} (see --help)")
        parser.set_defaults(**values)
    namespace = vars(parser.parse_args(argv))
    outputs = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in namespace.items() if k in names}))
        except (TypeError, ValueError) as e:  # a YAML value of the wrong type is only seen by __post_init__
            if config_path or yaml_name:
                raise ValueError(f"{e} (check {config_path or yaml_name} and the command line)") from e
            raise
    return tuple(outputs)


def settings_text(settings: Sequence[Any]) -> str:
    """The resolved settings, one block per group (for ``--dry_run`` and logs)."""
    lines = []
    for obj in settings:
        lines.append(f"[{_group_name(type(obj))}]")
        for f in dataclasses.fields(obj):
            if f.init:
                lines.append(f"  {f.name} = {getattr(obj, f.name)!r}")
    return "\n".join(lines)
