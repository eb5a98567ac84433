"""Command line + YAML into settings dataclasses, with one ``--help`` group per dataclass.

``hfkd distill --method kd --config run.yaml --learning_rate 0.01``: the YAML file gives
values, flags override them.  Precedence: command line > YAML > the command's preset (the demo's)
> dataclass defaults.  A YAML file may name the method (``method: meal_v2``).

argparse reads the command line once.  Only the options that choose the parser itself
(``--config``, and ``--method`` for ``hfkd distill``) are read first, by :func:`peek`, the way
transformers' ``HfArgumentParser`` reads an args file.  Which settings the user gave is known
after the parse, so a preset fills only the others and may depend on what was given.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, Union, get_type_hints

import yaml
from transformers import HfArgumentParser

from ..methods.base import MethodConfig
from ..training.args import DistillationArguments

CONFIG_HELP = "A YAML file of settings (any option below, and `method`); command-line flags override it."
CONFIG_MISSING = "--config needs a YAML file: --config path/to/settings.yaml"

#: ``preset(given) -> {option: value}``: the command's own defaults, which may depend on the given settings
Preset = Union[None, Mapping[str, Any], Callable[[Mapping[str, Any]], Mapping[str, Any]]]


class _NotGiven:
    """The value of every option before the command line is parsed: what is still it was not given."""

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN = _NotGiven()


@dataclass
class ConfigFile:
    """A ``--config`` YAML file and its values (``path`` is ``None`` without one)."""

    path: Optional[str] = None
    values: Dict[str, Any] = field(default_factory=dict)


class _PeekParser(argparse.ArgumentParser):
    def error(self, message):  # a ValueError the command turns into its one-line error
        raise ValueError(message)


def peek(argv: Sequence[str], *names: str) -> Dict[str, Optional[str]]:
    """The values of the options ``--NAME`` that choose the parser itself, read before the full parse."""
    parser = _PeekParser(add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(f"--{name}")
    try:
        known, _ = parser.parse_known_args(list(argv))
    except ValueError as e:
        if "--config" in str(e):
            raise ValueError(CONFIG_MISSING) from None
        raise
    return vars(known)


def load_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def read_config(argv: Sequence[str]) -> ConfigFile:
    """The ``--config`` file of ``argv`` (``--config X`` or ``--config=X``), read once."""
    path = peek(argv, "config")["config"]
    if path is None:
        return ConfigFile()
    if not path or path.startswith("-"):
        raise ValueError(CONFIG_MISSING)
    return ConfigFile(path, load_yaml(path))


def _group_name(dtype: Type) -> str:
    if dtype is DistillationArguments:
        return "training"
    if issubclass(dtype, MethodConfig):
        return f"method ({dtype.__name__})"
    return getattr(dtype, "_argument_group_name", dtype.__name__)


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


def create_parser(dataclass_types: Sequence[Type], extra_options=(), **parser_kwargs) -> GroupedParser:
    """The argparse parser of ``dataclass_types`` plus ``--config`` and ``extra_options``."""
    parser = GroupedParser(list(dataclass_types), **parser_kwargs)
    parser.add_argument("--config", metavar="YAML", help=CONFIG_HELP)
    for flags, kwargs in extra_options:
        parser.add_argument(*flags, **kwargs)
    return parser


def _yaml_value(action: argparse.Action, value: Any, key: str, path: str) -> Any:
    # argparse converts a string default with the option's type; a YAML string gets the same conversion
    # (``learning_rate: 1e-3`` is a string to YAML, a float to the option).
    if not isinstance(value, str) or action.type is None:
        return value
    try:
        return action.type(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {key}: invalid value {value!r} ({e})") from None


def parse_args(dataclass_types: Sequence[Type], argv: Optional[Sequence[str]] = None, *,
               config: Optional[ConfigFile] = None, preset: Preset = None,
               extra_options: Sequence[Tuple[Tuple[str, ...], Dict[str, Any]]] = (),
               **parser_kwargs) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Parse the command line and its ``--config`` YAML into instances of ``dataclass_types``.

    Returns ``(instances, extras)``: ``extras`` holds the ``extra_options`` (``(flags, argparse kwargs)``
    shown in ``--help`` and handled by the caller, such as ``--method``) that the user gave.
    ``config`` is the already-read YAML file, when the caller needed one of its keys first.
    ``preset`` fills the options given neither on the command line nor in the YAML file.
    Unknown YAML keys and values that fail a dataclass's checks raise ``ValueError``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config = config if config is not None else read_config(argv)
    parser = create_parser(dataclass_types, extra_options, **parser_kwargs)
    actions = {a.dest: a for a in parser._actions if a.dest not in (argparse.SUPPRESS, "help")}
    fields = {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype) if f.init}
    unknown = sorted(set(config.values) - (set(actions) - {"config"}))
    if unknown:
        groups = ", ".join(_group_name(t) for t in dataclass_types)
        raise ValueError(f"{config.path or 'settings'}: unknown keys {unknown}; the options are those of {groups} "
                         "(see --help)")
    yaml_values = {k: _yaml_value(actions[k], v, k, config.path or "settings") for k, v in config.values.items()}
    preset_for = preset if callable(preset) else (lambda given, values=dict(preset or {}): values)
    # What --help shows as each option's default: the preset's, then the YAML file's.
    parser.set_defaults(**{**{k: v for k, v in preset_for(yaml_values).items() if k in actions}, **yaml_values})
    namespace = argparse.Namespace(**{dest: NOT_GIVEN for dest in actions})
    parser.parse_args(argv, namespace=namespace)
    given = {**yaml_values, **{k: v for k, v in vars(namespace).items() if v is not NOT_GIVEN}}
    values = {**{k: v for k, v in preset_for(given).items() if k in fields}, **given}
    instances = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            instances.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except (TypeError, ValueError) as e:  # a YAML value of the wrong type is only seen by __post_init__
            if config.path:
                raise ValueError(f"{e} (check {config.path} and the command line)") from e
            raise
    extras = {action.dest: given.get(action.dest) for action in parser._actions
              if action.dest in actions and action.dest not in fields and action.dest != "config"}
    return tuple(instances), extras


def settings_text(settings: Sequence[Any]) -> str:
    """The resolved settings, one block per group (for ``--dry_run`` and logs)."""
    lines = []
    for obj in settings:
        lines.append(f"[{_group_name(type(obj))}]")
        for f in dataclasses.fields(obj):
            if f.init:
                lines.append(f"  {f.name} = {getattr(obj, f.name)!r}")
    return "\n".join(lines)
