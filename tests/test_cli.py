"""The `hfkd` command and the recipes: parsing, YAML, --help, --dry_run, method configs, registry names."""
import dataclasses
import os
import subprocess
import sys

import pytest

import hfkd
from hfkd.cli import COMMANDS
from hfkd.cli import main as hfkd_main
from hfkd.cli.distill import main as distill_main
from hfkd.cli.distill import parse_distill_args
from hfkd.cli.parser import create_parser
from hfkd.methods import MethodConfig, get_method_class, list_methods
from hfkd.cli.arguments import DataArguments, ModelArguments
from hfkd.cli.workflows import get_workflow
from helpers.models import saved_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--student", "test_resnet", "--max_train_samples", "64", "--per_device_train_batch_size", "16",
        "--eval_strategy", "no", "--eval_teachers", "false", "--disable_tqdm", "true", "--save_strategy", "no"]


def _yaml(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- parsing ------------------------------------------------------------------------------------------
def test_yaml_chooses_the_method_and_flags_override_it(tmp_path):
    cfg = _yaml(tmp_path, "method: pskd\nalpha_T: 0.5\nbank_dtype: float16\nlearning_rate: 0.01\n")
    s = parse_distill_args(["--config", cfg, "--learning_rate", "0.02"])
    assert s.method == "pskd" and type(s.method_config).__name__ == "PSKDConfig"
    assert s.method_config.alpha_T == 0.5 and s.method_config.bank_dtype == "float16"
    assert s.training.learning_rate == 0.02
    same = parse_distill_args([f"--config={cfg}", "--learning_rate", "0.02"])  # --config=x.yaml
    assert same == s
    # --method on the command line beats the YAML's method
    assert parse_distill_args(["--config", cfg, "--method", "pskd"]).method == "pskd"
    with pytest.raises(ValueError, match="unknown keys \\['alpha_T', 'bank_dtype'\\]"):
        parse_distill_args(["--config", cfg, "--method", "kd"])


def test_the_preset_fills_only_what_was_not_given(tmp_path):
    """Command line > YAML > the demo preset > dataclass defaults, from one parse of the command line."""
    cfg = _yaml(tmp_path, "learning_rate: 1e-3\nsave_strategy: steps\n")  # 1e-3 is a string to YAML
    s = parse_distill_args(["--config", cfg, "--num_train_epochs", "2"], method="meal_v2", fixed_method=True)
    assert s.training.learning_rate == 0.001 and s.training.num_train_epochs == 2
    assert s.training.save_strategy == "steps"  # the preset's "no" yields to the YAML file
    assert s.data.aug_scale == [0.25, 1.0] and s.model.student == "cifar_resnet8"  # the rest is the preset's
    s = parse_distill_args(["--config", cfg, "--save_strategy", "epoch"], method="kd", fixed_method=True)
    assert s.training.save_strategy == "epoch" and s.training.num_train_epochs == 4
    with pytest.raises(ValueError, match="learning_rate: invalid value 'fast'"):
        parse_distill_args(["--config", _yaml(tmp_path, "learning_rate: fast\n", "bad.yaml")])


def test_config_without_a_value_and_recipe_method_conflicts_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--config needs a YAML file"):
        parse_distill_args(["--config"])
    with pytest.raises(ValueError, match="--config needs a YAML file"):
        parse_distill_args(["--config", "--learning_rate", "0.1"])
    with pytest.raises(SystemExit) as exit_info:  # the command: a one-line error, no traceback
        distill_main(["--config="], method="kd", fixed_method=True, prog="recipes/kd.py")
    assert str(exit_info.value.code).startswith("recipes/kd.py: error: --config needs a YAML file")
    cfg = _yaml(tmp_path, "method: bake\n")
    with pytest.raises(ValueError, match="this recipe runs 'kd' but the settings ask for 'bake'"):
        parse_distill_args(["--config", cfg], method="kd", fixed_method=True)
    with pytest.raises(ValueError, match="temperature must be > 0"):  # the config's own check, at parse time
        parse_distill_args(["--method", "kd", "--temperature", "0"])


def test_the_demo_command_equals_the_recipe():
    """`hfkd distill --method meal_v2` parses to exactly what `python recipes/meal_v2.py` runs."""
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    try:
        import meal_v2 as recipe
    finally:
        sys.path.remove(os.path.join(ROOT, "recipes"))
    assert recipe.distill is distill_main
    command = parse_distill_args(["--method", "meal_v2"])
    assert command == parse_distill_args([], method="meal_v2", fixed_method=True)
    assert command.model.student == "cifar_resnet8" and command.training.num_train_epochs == 6
    assert command.data.aug_scale == [0.25, 1.0] and command.training.output_dir == "outputs/meal_v2"
    assert set(COMMANDS) >= {"distill", "train", "eval", "push"}


# -- --help -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list_methods())
def test_every_option_has_help_and_its_group(method):
    cls = get_method_class(method)
    types = (ModelArguments, DataArguments, hfkd.DistillationArguments,
             cls.config_class, get_workflow(method).arguments)
    parser = create_parser(types)
    missing = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not missing, f"options without help: {missing}"
    titles = [g.title for g in parser._action_groups]
    for title in ("model", "data", "training", f"{cls.config_class.__name__.removesuffix('Config')} method", "run"):
        assert title in titles
    for dtype in types:  # every field is an option, in its own group
        group = next(g for g in parser._action_groups if dtype.__name__ in g.title or g.title == _title(dtype))
        assert {f.name for f in dataclasses.fields(dtype)} <= {a.dest for a in group._group_actions}
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    assert set(choices["mixed_precision"]) == {"no", "bf16", "fp16"}
    assert "cosine" in choices["lr_scheduler_type"] and set(choices["save_strategy"]) == {"no", "steps", "epoch"}


def _title(dtype):
    from hfkd.cli.parser import _group_name

    return _group_name(dtype)


def test_help_lists_the_methods_and_shows_the_chosen_ones_options(capsys):
    with pytest.raises(SystemExit):
        distill_main(["--method", "bake", "--help"])
    out = capsys.readouterr().out
    assert "--config YAML" in out and "--method NAME" in out
    assert all(m in out for m in list_methods())
    assert "BAKE method" in out and "--omega" in out and "--baseline_protocol" in out
    assert "--temperature" in out and "--alpha " not in out  # bake's options, not kd's


# -- method settings in one place ----------------------------------------------------------------------
CHANGED = {"kd": dict(temperature=2.0, alpha=0.5), "meal_v2": dict(discriminator_weight=0.5, discriminator_lr=0.1),
           "pskd": dict(alpha_T=0.4, bank_dtype="float16"), "bake": dict(omega=0.9, kd_weight=0.5),
           "feed": dict(beta=7.0, stage="2", kernel_size=1), "supervised": dict(label_smoothing=0.1),
           "extracurricular": dict(extra_ratio=0.5, mix="cutmix", uncertainty="select", regression_match="mean"),
           "feature_kd": dict(distance="smooth_l1", projector="linear", ce_weight=0.5)}


@pytest.mark.parametrize("name", list_methods())
def test_config_round_trips_through_hparams_cli_and_card(name):
    from hfkd.hub.card import create_model_card

    cls = get_method_class(name)
    assert issubclass(cls.config_class, MethodConfig) and cls.config_class is not MethodConfig
    method = hfkd.create_method(name, **CHANGED[name])
    config = method.config
    assert method.hparams() == dataclasses.asdict(config)
    assert cls.config_class(**method.hparams()) == config
    assert type(hfkd.create_method(name, config)) is cls and hfkd.create_method(name, config).config == config
    argv = [x for k, v in CHANGED[name].items() for x in (f"--{k}", str(v))]
    assert parse_distill_args(["--method", name, *argv]).method_config == config
    card = str(create_model_card({"method": {"name": name, "hparams": method.hparams()}, "student": {"name": "s"}}))
    for key, value in method.hparams().items():
        assert f"- `{key}`: {value}" in card
    with pytest.raises(ValueError, match="does not take \\['nope'\\]"):
        hfkd.create_method(name, nope=1)


def test_registry_normalises_names_in_one_place():
    from hfkd.methods import registry
    from hfkd.methods.kd import KD

    class MyKD(KD):
        name = "My-KD"

    hfkd.register_method(MyKD)
    try:
        assert "my_kd" in list_methods()
        for spelling in ("My-KD", "my_kd", "MY_KD", "my-kd"):
            assert type(hfkd.create_method(spelling, temperature=3.0)) is MyKD
        with pytest.raises(ValueError, match="already registered"):
            hfkd.register_method(type("Other", (KD,), {"name": "my_kd"}))
    finally:
        registry._METHODS.pop("my_kd")


# -- --dry_run -----------------------------------------------------------------------------------------
def test_dry_run_prints_settings_sizes_and_steps_and_trains_nothing(tmp_path, capsys):
    out_dir = tmp_path / "never"
    teacher = saved_model(tmp_path / "test_convnext")  # teachers are loaded with their weights, offline here
    report = hfkd_main(["distill", "--method", "kd", *TINY, "--teachers", teacher, "--num_train_epochs", "3",
                        "--output_dir", str(out_dir), "--dry_run"])
    out = capsys.readouterr().out
    for group in ("[model]", "[data]", "[training]", "[KD method]", "[run]"):
        assert group in out
    assert "temperature = 4.0" in out and "dry_run = True" in out
    student = hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    assert f"student test_resnet: {student.num_parameters():,} parameters" in out
    assert "teacher test_convnext:" in out
    # 64 images / batch 16 = 4 steps per epoch, 3 epochs
    assert report["steps_per_epoch"] == 4 and report["total_steps"] == 12
    assert "4 optimizer steps per epoch, 12 in total" in out
    assert not out_dir.exists()
    report = parse_and_dry("bake", "--per_device_train_batch_size", "16", "--intra_class_images", "3")
    assert report["steps_per_epoch"] == 16  # class-aware batches: 4 anchors + 12 partners, every image an anchor


def parse_and_dry(method, *argv):
    from hfkd.cli.distill import run_settings

    return run_settings(parse_distill_args(["--method", method, *TINY, *argv, "--dry_run"]))


@pytest.mark.slow
def test_python_m_hfkd_runs_the_command():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "hfkd", "distill", "--method", "feed", "--help"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FEED method" in proc.stdout and "--generations" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "hfkd", "nope"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "unknown command 'nope'" in proc.stderr


# -- teacher cache (issue 10) --------------------------------------------------------------------------
def test_hfkd_cache_is_a_command(capsys):
    assert COMMANDS["cache"] == "hfkd.cli.cache:main"
    with pytest.raises(SystemExit) as exit_info:
        hfkd_main(["cache", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hfkd cache") and "--num_views" in out and "--teacher_cache" not in out


def test_a_teacher_cache_builds_no_demo_teachers(monkeypatch, capsys):
    import hfkd.cli.demo
    from hfkd.cli.workflows import method_teachers

    def no_demo_teachers(*args, **kwargs):
        raise AssertionError("the demo teachers were built although a teacher cache was given")

    monkeypatch.setattr(hfkd.cli.demo, "demo_teachers", no_demo_teachers)
    for method in ("kd", "meal_v2"):
        settings = parse_distill_args(["--method", method, "--teacher_cache", "ORG/soft-labels"])
        assert settings.training.teacher_cache == "ORG/soft-labels"
        assert method_teachers(settings) == []
    # Offline, the Hub cache cannot be opened: the dry run says so and exits non-zero, as the run would stop there.
    with pytest.raises(SystemExit) as exit_info:
        parse_and_dry("meal_v2", "--teacher_cache", "ORG/soft-labels")
    assert "teacher cache 'ORG/soft-labels' cannot be used" in str(exit_info.value.code)
    out = capsys.readouterr().out
    assert "teacher cache: ORG/soft-labels (no teacher is loaded)" in out and "parameters\nteacher " not in out
