"""The ``create_method(...)`` calls the docs and the README show run as written (a wrong field name raises)."""
import ast
import pathlib
import re

import pytest

from hfkd.methods.registry import create_method

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
CALL = re.compile(r"create_method\(\s*\"[a-z_0-9]+\"[^()`]*\)", re.S)


def _calls():
    for page in PAGES:
        for match in CALL.finditer(page.read_text(encoding="utf-8")):
            yield pytest.param(match.group(0), id=f"{page.name}:{match.group(0)[:40]}")


@pytest.mark.parametrize("call", list(_calls()))
def test_documented_create_method_calls_work(call):
    node = ast.parse(" ".join(call.split()), mode="eval").body
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    method = create_method(*args, **kwargs)
    for key, value in kwargs.items():
        assert getattr(method.config, key) == value


def test_the_reader_finds_the_multi_line_calls():
    calls = [c.values[0] for c in _calls()]
    assert any(c.startswith('create_method("bake"') for c in calls)
    assert len(calls) >= 6
