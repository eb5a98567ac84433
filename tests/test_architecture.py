"""The package's layers, read from the source: every import, inside functions too (docs/architecture.md).

* the library's parts import one another without a cycle;
* no library part imports the application (``hfkd.cli``);
* an hfkd module is imported inside a function only to avoid a heavy optional dependency, with a comment
  on that line or the one above it naming the dependency (none today);
* ``import hfkd``, the command registry and the settings dataclasses load no torch, timm, transformers or datasets.
"""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hfkd"
APPLICATION = "cli"
#: optional extras (pyproject.toml) whose import an hfkd module may put off until a function runs
OPTIONAL = ("matplotlib", "torch_pruning", "onnx", "onnxruntime", "onnxscript")


def _module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, root: pathlib.Path = ROOT):
    """``(imported hfkd module, line, inside a function)`` for every import of ``path``."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` names a module when x is one; otherwise the names are the module's attributes
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target == "hfkd" or target.startswith("hfkd."):
                yield target, node.lineno, id(node) in inner


def _part(module: str) -> str:
    """The part a module belongs to: ``hfkd.models.factory`` -> ``models``, ``hfkd.losses`` -> ``losses``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hfkd"


def _graph():
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _part(_module_name(path))
        for target, line, _ in _imports(path):
            destination = _part(target)
            if destination not in ("hfkd", source) and source != "hfkd" and source != "__main__":
                edges.setdefault(source, {}).setdefault(destination, f"{path.relative_to(ROOT)}:{line}")
    return edges


def _cycle(edges):
    """One cycle of parts as a list of ``(part, where it imports the next)``, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == "open":
                loop = stack[stack.index(nxt):] + [nxt]
                return [(a, edges[a][b]) for a, b in zip(loop, loop[1:])]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in list(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_parts_import_each_other_without_a_cycle():
    edges = _graph()
    assert {"models", "data", "training", "methods", "cli"} <= set(edges) | {p for e in edges.values() for p in e}
    cycle = _cycle(edges)
    assert cycle is None, "import cycle among hfkd's parts: " + " -> ".join(f"{a} ({where})" for a, where in cycle)


def test_the_library_never_imports_the_application():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {target}"
                 for path in sorted(PACKAGE.rglob("*.py")) if _part(_module_name(path)) not in (APPLICATION, "__main__")
                 for target, line, _ in _imports(path) if _part(target) == APPLICATION]
    assert not offenders, "\n".join(offenders)


def test_hfkd_modules_are_imported_inside_functions_only_for_an_optional_dependency():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line, inside in _imports(path):
            if inside:
                said = " ".join(lines[max(0, line - 2):line])
                if not any(dependency in said for dependency in OPTIONAL):
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert not offenders, "\n".join(sorted(set(offenders)))


def test_the_checks_above_can_fail(tmp_path):
    """The graph reader sees a cycle hidden inside a function, and a library module importing the application."""
    edges = {"training": {"cache": "a:1"}, "cache": {"training": "b:2"}}
    assert [part for part, _ in _cycle(edges)] == ["training", "cache"]
    assert _cycle({"training": {"cache": "a:1"}}) is None
    assert ("hfkd.results", 9, False) in set(_imports(PACKAGE / "hub" / "card_sections.py"))
    fake = tmp_path / "hfkd" / "cache" / "lookup.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from ..cli.demo import DEMO_STUDENT\n")
    found = list(_imports(fake, tmp_path))
    assert found == [("hfkd.cli.demo", 2, True), ("hfkd.cli.demo.DEMO_STUDENT", 2, True)]
    assert _part(found[0][0]) == APPLICATION


HEAVY = ("torch", "timm", "transformers", "datasets")


@pytest.mark.parametrize("modules", [
    "hfkd",
    "hfkd.cli",  # the command registry
    "hfkd.methods, hfkd.methods.registry, hfkd.methods.configs",  # the method configs and their names
    "hfkd.cli.arguments, hfkd.training.args, hfkd.data.augment, hfkd.settings",  # the settings dataclasses
])
def test_import_loads_nothing_heavy(modules):
    code = (f"import sys, {modules}\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {modules} loaded {out.stdout.strip()}"


def _help_commands():
    from hfkd.cli import COMMANDS
    from hfkd.methods.registry import list_methods

    return ([[]] + [[name] for name in COMMANDS]
            + [["distill", "--method", method] for method in list_methods()])


@pytest.mark.slow
def test_help_loads_nothing_heavy():
    """``hfkd --help`` (the command list) loads none of torch, timm, transformers or datasets; ``hfkd CMD --help``
    for every command and ``hfkd distill --method M --help`` for every method load no torch, timm or datasets (their
    options come from transformers' HfArgumentParser, which needs no torch): a command's run-time modules load after
    its settings are parsed."""
    code = ("import contextlib, io, sys\nfrom hfkd.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(sys.argv[2:] + ['--help'])\n    except SystemExit as e:\n"
            "        assert e.code in (0, None), e.code\n"
            "assert 'usage' in out.getvalue()\n"
            "print(','.join(m for m in sys.argv[1].split(',') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = {}
    for argv in _help_commands():
        heavy = HEAVY if not argv else tuple(m for m in HEAVY if m != "transformers")
        out = subprocess.run([sys.executable, "-c", code, ",".join(heavy), *argv], capture_output=True, text=True,
                             env=env, timeout=120)
        assert out.returncode == 0, f"hfkd {' '.join(argv)} --help failed: {out.stderr[-2000:]}"
        if out.stdout.strip():
            loaded[" ".join(["hfkd", *argv, "--help"])] = out.stdout.strip()
    assert not loaded, f"--help loaded heavy modules: {loaded}"
