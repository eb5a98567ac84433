"""The methods' settings: declared once in hfkd/methods/configs.py (no torch), known to the registry by name,
and refusing a non-finite number when they are built, like any other bad value."""
import dataclasses
import math
import typing

import pytest

import hfkd
from hfkd.methods import configs, get_config_class, get_method_class, list_methods
from hfkd.methods.registry import describe_method


def _float_fields(config_class):
    hints = typing.get_type_hints(config_class)
    return [f.name for f in dataclasses.fields(config_class)
            if float in (hints[f.name], *typing.get_args(hints[f.name]))]


@pytest.mark.parametrize("name", list_methods())
def test_every_config_refuses_non_finite_numbers_when_built(name):
    config_class = get_config_class(name)
    floats = _float_fields(config_class)
    assert floats, f"{config_class.__name__} has no float setting to check"
    for field_name in floats:
        for bad in (math.inf, -math.inf, math.nan):
            with pytest.raises(ValueError, match=f"{config_class.__name__}: non-finite values.*{field_name}"):
                config_class(**{field_name: bad})
            with pytest.raises(ValueError, match="non-finite"):
                hfkd.create_method(name, **{field_name: bad})


def test_kd_temperature_inf_is_refused_by_create_method():
    with pytest.raises(ValueError, match=r"KDConfig: non-finite values \['temperature=inf'\]"):
        hfkd.create_method("kd", temperature=float("inf"))


@pytest.mark.parametrize("name", list_methods())
def test_the_registry_names_each_config_without_a_second_declaration(name):
    method_class = get_method_class(name)
    assert get_config_class(name) is method_class.config_class
    assert method_class.config_class.__module__ == "hfkd.methods.configs"
    assert name in describe_method(name) and "``" not in describe_method(name)


def test_public_names_still_import_from_the_method_files():
    from hfkd.methods.bake import BAKEConfig
    from hfkd.methods.feed import FEEDConfig
    from hfkd.methods.kd import KDConfig
    from hfkd.methods.meal_v2 import MEALv2Config
    from hfkd.models.backbone import LAST_STAGE

    assert (KDConfig, MEALv2Config, FEEDConfig, BAKEConfig) == (
        configs.KDConfig, configs.MEALv2Config, configs.FEEDConfig, configs.BAKEConfig)
    assert hfkd.KDConfig is configs.KDConfig and hfkd.methods.MethodConfig is configs.MethodConfig
    assert configs.LAST_STAGE == LAST_STAGE  # configs.py keeps its own copy: hfkd.models imports torch


def test_an_unknown_method_gets_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown method 'meal-v3' \(did you mean 'meal_v2'\?\)"):
        hfkd.create_method("meal-v3")
    with pytest.raises(ValueError, match=r"unknown method 'pskdd' \(did you mean 'pskd'\?\)"):
        get_config_class("pskdd")


def test_a_built_in_name_is_taken_before_its_module_is_imported():
    code = ("from hfkd.methods.registry import register_method\n"
            "from hfkd.methods.base import DistillationMethod\n"
            "class Mine(DistillationMethod):\n    name = 'pskd'\n"
            "try:\n    register_method(Mine)\nexcept ValueError as e:\n    print(e)\n")
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root})
    assert "a method named 'pskd' is already registered (PSKD)" in out.stdout, out.stderr[-2000:]
