"""Optional dependencies: a missing one is one line naming the pip install that brings it, before the run."""
import pathlib
import sys
import tomllib

import pytest

from hfkd import extras
from hfkd.training.args import DistillationArguments

ROOT = pathlib.Path(__file__).resolve().parents[1]
INSTALLED = extras.is_installed


def _without(monkeypatch, *modules):
    monkeypatch.setattr(extras, "is_installed", lambda name: name not in modules and INSTALLED(name))


def test_compress_without_torch_pruning_is_one_line_before_anything_loads(monkeypatch):
    import hfkd.cli.compress as command

    _without(monkeypatch, "torch_pruning")
    monkeypatch.setattr(command, "load_data", lambda *a, **k: pytest.fail("the data loaded before the check"))
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--quantize", "false"])
    assert str(exit_info.value.code) == 'hfkd compress: error: hfkd compress needs torch_pruning: pip install "hfkd[compress]"'
    _without(monkeypatch, "onnxruntime")
    with pytest.raises(SystemExit, match=r'needs onnxruntime: pip install "hfkd\[compress\]"'):
        command.main([])


def test_a_tracker_whose_package_is_missing_is_refused_with_the_install(monkeypatch):
    _without(monkeypatch, "tensorboard", "tensorboardX", "wandb")
    with pytest.raises(ValueError, match=r'report_to tensorboard needs tensorboard: pip install "hfkd\[tensorboard\]"'):
        DistillationArguments(report_to=["tensorboard"])
    with pytest.raises(ValueError, match=r'report_to wandb needs wandb: pip install "hfkd\[wandb\]"'):
        DistillationArguments(report_to="wandb")
    assert DistillationArguments(report_to=["none"]).report_to == []
    monkeypatch.setattr(extras, "is_installed", lambda name: True)
    assert DistillationArguments(report_to=["tensorboard"]).report_to == ["tensorboard"]


def test_missing_matplotlib_is_said_once_and_the_curves_are_skipped(monkeypatch, capsys, tmp_path):
    from hfkd.hub.card import plot_training_curves

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import matplotlib.figure raises ImportError
    monkeypatch.setattr(extras, "_NOTED", set())
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]
    assert plot_training_curves(history, str(tmp_path / "a.png")) is False
    assert plot_training_curves(history, str(tmp_path / "b.png")) is False
    err = capsys.readouterr().err
    assert err.count("the training curves are not drawn") == 1 and 'pip install "hfkd[plot]"' in err


def test_the_extras_are_those_of_pyproject_and_the_readme_lists_them():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    readme = (ROOT / "README.md").read_text()
    for extra, modules in extras.EXTRAS.items():
        assert extra in declared, f"hfkd.extras names [{extra}], pyproject.toml does not declare it"
        requirements = " ".join(declared[extra]).lower().replace("-", "_")
        assert all(m.lower() in requirements for m in modules), (extra, modules, declared[extra])
        assert f"| `{extra}` |" in readme, f"README's install section does not list [{extra}]"
    assert extras.is_installed("os") and not extras.is_installed("no_such_module_hfkd")
    assert not extras.is_installed("no_such_package_hfkd.sub")
