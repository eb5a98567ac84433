"""Command line + YAML into settings dataclasses, with one ``--help`` group per dataclass.

``hfkd distill --method kd --config run.yaml --learning_rate 0.01``: the YAML file gives
values, flags override them.  Precedence: command line > YAML > the command's preset (the demo's)
> dataclass defaults.  A YAML file may name the method (``method: meal_v2``).

argparse reads the command line once.  Only the options that choose the parser itself
(``--config``, and ``--method`` for ``hfkd distill``) are read first, by :func:`peek`, the way
transformers' ``HfArgumentParser`` reads an args file.  Which settings the user gave is known
after the parse, so a preset fills only the others and may depend on what was given.

The options come from transformers' ``HfArgumentParser`` (each dataclass field becomes an option by its
``_parse_dataclass_field``: type, default, choices, lists, ``Optional``, ``--no_x`` for booleans that default to
true), with hfkd's manners on top: each option has one spelling in the help (``--learning_rate``;
HfArgumentParser's ``--learning-rate`` alias is still read), booleans are bare flags or take a value
(``--x``, ``--x false``), ``--no_x`` has its own help, one default is shown, types are named (``INT``),
abbreviations are refused, and an unknown option or value gets the closest name and a one-line usage.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union, get_type_hints

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from ..methods.configs import MethodConfig
from ..settings import cut, shorten
from ..training.args import DistillationArguments

CONFIG_HELP = "A YAML file of settings (any option below, and `method`); command-line flags override it."
CONFIG_MISSING = "--config needs a YAML file: --config path/to/settings.yaml"
# How much of a YAML parser's own message is quoted: it may hold a piece of the file.
_MESSAGE_LIMIT = 300

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


# -- the command line's manners -------------------------------------------------------------------------
def short_usage(prog: str) -> str:
    return f"usage: {prog} [options]   (every option: {prog} --help)"


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``candidates``, or nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_bool(value: str) -> bool:
    """``--flag true|false`` (also yes/no, 1/0, on/off)."""
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "on", "t"):
        return True
    if text in ("false", "no", "n", "0", "off", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {shorten(value)}")


class HelpFormatter(argparse.HelpFormatter):
    """Each option once, its default appended only when its help does not already say what the default is."""

    def __init__(self, prog, indent_increment=2, max_help_position=32, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower() or action.nargs == 0  # a flag such as --no_x
                or default is None or default is argparse.SUPPRESS or default is NOT_GIVEN or default == []):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default).lower() \
            if isinstance(default, bool) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser's options with hfkd's manners: one spelling in the help, bare or valued booleans, a
    ``--no_x`` with its own help, named types, no abbreviations; an error is one line with the closest name,
    then a one-line usage."""

    def __init__(self, dataclass_types: Sequence[Type] = (), **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(list(dataclass_types), **kwargs)

    def _add_dataclass_arguments(self, dtype: Type) -> None:
        """One titled group per dataclass (described by its docstring); each field's option is made by
        HfArgumentParser, then given hfkd's manners."""
        doc = (dtype.__doc__ or "").strip().split("\n")[0]
        group = self.add_argument_group(_group_name(dtype), None if doc.startswith(dtype.__name__ + "(") else doc)
        hints = get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            # HfArgumentParser writes the resolved type into the field it is given: a copy keeps the
            # dataclass's own fields as they are.
            f = copy.copy(f)
            f.type = hints[f.name]
            first = len(self._actions)
            self._parse_dataclass_field(group, f)
            option, *turn_off = self._actions[first:]
            _with_manners(option)
            for action in turn_off:  # --no_x of a boolean whose default is true
                action.option_strings = action.option_strings[:1]
                action.help = f"Turn {f.name} off (the same as --{f.name} false)."

    def options(self) -> List[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]

    def parse_args(self, args=None, namespace=None):
        namespace, rest = self.parse_known_args(args, namespace)
        if rest:
            self.error(self._unknown(rest))
        return namespace

    def _unknown(self, rest: Sequence[str]) -> str:
        word = rest[0]
        if word.startswith("-"):
            name = word.split("=", 1)[0][:100]
            others = sum(1 for w in rest[1:] if w.startswith("--"))
            more = f" (and {others} more unknown option{'s' if others > 1 else ''})" if others else ""
            return f"unknown option {name}{did_you_mean(name, self.options())}{more}"
        return f"unexpected value {shorten(word)} (each value follows its --option)"

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice {shorten(value)}{did_you_mean(str(value), choices)}; "
                                                 f"choose from {', '.join(choices)}")

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n{short_usage(self.prog)}\n")


def _with_manners(action: argparse.Action) -> None:
    """hfkd's manners on the option HfArgumentParser made for one field."""
    # One spelling in the help and in errors: the dashed alias (--learning-rate) stays registered, so it is read.
    action.option_strings = action.option_strings[:1]
    # A YAML file may give a value the dataclass has no default for; the dataclass names it when it is missing.
    action.required = False
    if action.type is string_to_bool:
        # --x, --x false: also for Optional[bool], which HfArgumentParser gives no bare form; the error says the fix.
        action.type, action.nargs, action.const, action.metavar = parse_bool, "?", True, "BOOL"
    elif action.choices is None:
        action.metavar = _METAVARS.get(action.type, "TEXT")


# -- --config ------------------------------------------------------------------------------------------
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


class _SettingsLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader that also refuses a key written twice (YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _SettingsLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: Dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:  # an unhashable key: construct_mapping names it
            continue
        if first != line:
            raise yaml.constructor.ConstructorError(
                None, None, f"{shorten(key)} is given twice (lines {first} and {line}); keep one", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_SettingsLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where, never more than a few hundred characters of the file."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    if "could not determine a constructor" in problem:
        problem += " (a settings file holds plain values: YAML tags that build Python objects are refused, not run)"
    problem = " ".join(problem.split())
    return where + cut(problem, _MESSAGE_LIMIT)


def load_yaml(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f, Loader=_SettingsLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ValueError(f"--config {shorten(path)}: no such file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: {_yaml_problem(e)}") from None
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


# -- dataclasses into options ----------------------------------------------------------------------------
def _group_name(dtype: Type) -> str:
    """A settings group's title in words: ``training``, ``KD method``, ``pruning``."""
    if dtype is DistillationArguments:
        return "training"
    named = getattr(dtype, "_argument_group_name", None)
    if named:
        return named
    if issubclass(dtype, MethodConfig):
        return f"{dtype.__name__.removesuffix('Config')} method"
    stem = dtype.__name__.removesuffix("Arguments").removesuffix("Config")
    words = "".join(f" {c.lower()}" if c.isupper() and i and not stem[i - 1].isupper() else c.lower()
                    for i, c in enumerate(stem))
    return words.strip() or dtype.__name__


def create_parser(dataclass_types: Sequence[Type], extra_options=(), **parser_kwargs) -> ArgumentParser:
    """The parser of ``dataclass_types`` plus ``--config`` and ``extra_options``."""
    parser_kwargs.setdefault("usage", "%(prog)s [options]")
    parser = ArgumentParser(dataclass_types, **parser_kwargs)
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
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ValueError(f"{path}: {key}: invalid value {shorten(value)} ({shorten(str(e))})") from None


def parse_args(dataclass_types: Sequence[Type], argv: Optional[Sequence[str]] = None, *,
               config: Optional[ConfigFile] = None, preset: Preset = None,
               extra_options: Sequence[Tuple[Tuple[str, ...], Dict[str, Any]]] = (),
               **parser_kwargs) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    """Parse the command line and its ``--config`` YAML into instances of ``dataclass_types``.

    Returns ``(instances, extras)``: ``extras`` holds the ``extra_options`` (``(flags, argparse kwargs)``
    shown in ``--help`` and handled by the caller, such as ``--method``) that the user gave.
    ``config`` is the already-read YAML file, when the caller needed one of its keys first.
    ``preset`` fills the options given neither on the command line nor in the YAML file; it is called
    after the parse (``--help`` shows the dataclasses' defaults and the YAML file's values, never runs it).
    Unknown YAML keys and values that fail a dataclass's checks raise ``ValueError``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config = config if config is not None else read_config(argv)
    parser = create_parser(dataclass_types, extra_options, **parser_kwargs)
    actions: Dict[str, argparse.Action] = {}
    for action in parser._actions:  # an option before its --no_x (the same dest)
        if action.dest not in (argparse.SUPPRESS, "help"):
            actions.setdefault(action.dest, action)
    fields = {f.name for dtype in dataclass_types for f in dataclasses.fields(dtype) if f.init}
    unknown = sorted(map(str, set(config.values) - (set(actions) - {"config"})))
    if unknown:
        groups = ", ".join(_group_name(t) for t in dataclass_types)
        close = {k: difflib.get_close_matches(k, sorted(actions), n=1) for k in unknown[:5]}
        hints = "".join(f"; {k}: did you mean {m[0]}?" for k, m in close.items() if m)
        raise ValueError(f"{config.path or 'settings'}: unknown keys {shorten(unknown)}{hints}; the options are "
                         f"those of {groups} (see --help)")
    yaml_values = {k: _yaml_value(actions[k], v, k, config.path or "settings") for k, v in config.values.items()}
    parser.set_defaults(**yaml_values)  # --help shows the YAML file's values as the defaults
    namespace = argparse.Namespace(**{dest: NOT_GIVEN for dest in actions})
    parser.parse_args(argv, namespace=namespace)
    given = {**yaml_values, **{k: v for k, v in vars(namespace).items() if v is not NOT_GIVEN}}
    preset_values = (preset(given) if callable(preset) else preset) or {}
    values = {**{k: v for k, v in preset_values.items() if k in fields}, **given}
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
