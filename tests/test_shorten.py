"""One helper cuts every value a message quotes (hfkd.settings.shorten)."""
import time

from hfkd.settings import QUOTE_LIMIT, shorten


def test_long_strings_and_huge_nested_values_are_cut_quickly():
    assert shorten("short") == "'short'"
    assert len(shorten("x" * 10_000)) <= QUOTE_LIMIT + 20
    bomb = ["lol"]
    for _ in range(9):  # what a YAML alias bomb expands to: 10**9 leaves if rendered whole
        bomb = [bomb] * 10
    start = time.perf_counter()
    text = shorten(bomb)
    assert time.perf_counter() - start < 1.0
    assert len(text) <= QUOTE_LIMIT + 20 and text.startswith("[[")


def test_the_limit_is_respected_for_any_type():
    for value in ({str(i): i for i in range(1000)}, tuple(range(1000)), 1.5e300, b"y" * 5000):
        assert len(shorten(value, limit=50)) <= 50 + 20
