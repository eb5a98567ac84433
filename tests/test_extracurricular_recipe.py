"""recipes/extracurricular.py end to end on tiny models: classification and regression, several seeds."""
import json
import os
import sys

import pytest

from hfkd import create_backbone
from hfkd.hub import save_student

RECIPES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes")


def _recipe():
    sys.path.insert(0, RECIPES)
    try:
        import extracurricular as recipe
    finally:
        sys.path.remove(RECIPES)
    return recipe


def _teacher(tmp_path, num_classes):
    path = str(tmp_path / f"teacher{num_classes}")
    model = create_backbone("test_resnet", num_classes=num_classes, pretrained=False, image_size=32,
                            label_names=[str(i) for i in range(10)] if num_classes == 10 else None)
    return save_student(model, path)


COMMON = ["--student", "test_efficientnet", "--max_train_samples", "64", "--max_steps", "2",
          "--per_device_train_batch_size", "32", "--disable_tqdm", "true"]


@pytest.mark.slow
def test_classification_demo_reports_baseline_kd_and_gap_over_seeds(tmp_path):
    out = tmp_path / "cls"
    summary = _recipe().main(COMMON + ["--teachers", _teacher(tmp_path, 10), "--seeds", "0", "1",
                                       "--output_dir", str(out)])
    roles = [r["role"] for r in summary]
    assert roles == ["teacher 1", "student, no KD (baseline)", "student, classic KD", "student, extracurricular"]
    assert all(r["runs"] == 2 and r["eval_accuracy"] is not None for r in summary)
    assert "gap_closed" in summary[-1]
    table = (out / "results.md").read_text()
    assert "gap closed vs KD (%)" in table and "±" in table
    card = (out / "seed_0" / "extracurricular" / "student" / "README.md").read_text()
    assert "Gap closed vs classic KD" in card
    lineage = json.loads((out / "seed_1" / "extracurricular" / "student" / "hfkd.json").read_text())
    assert lineage["method"]["name"] == "extracurricular" and lineage["training_args"]["seed"] == 1


@pytest.mark.slow
def test_regression_demo_runs_point_kd_and_gaussian_matching(tmp_path):
    rows = _recipe().main(COMMON + ["--regression", "true", "--teachers", _teacher(tmp_path, 2),
                                    "--output_dir", str(tmp_path / "reg")])
    by_role = {r["role"]: r for r in rows}
    assert set(by_role) == {"teacher 1", "student, no KD (baseline)", "student, KD (point matching)",
                            "student, extracurricular"}
    assert all(r["eval_mae"] > 0 and "eval_accuracy" not in r for r in rows)
    kd = json.loads((tmp_path / "reg" / "kd" / "student" / "hfkd.json").read_text())
    assert kd["method"]["hparams"]["regression_match"] == "mean" and kd["method"]["hparams"]["extra_ratio"] == 0
    assert kd["task"] == {"name": "regression", "num_targets": 1, "target_scale": 45.0, "log_var_bound": 6.0}
    assert "MAE" in (tmp_path / "reg" / "results.md").read_text()


def test_cifar100_config_parses_into_the_recipe_arguments():
    from hfkd.cli.distill import parse_distill_args

    config = os.path.join(RECIPES, "configs", "extracurricular_cifar100.yaml")
    settings = parse_distill_args(["--config", config], method="extracurricular", fixed_method=True)
    data_args, args, method, cfg = settings.data, settings.training, settings.method_config, settings.run
    assert method.extra_ratio == 1.0 and method.mix == "both" and method.temperature == 4.0
    assert not data_args.max_train_samples and data_args.dataset == "uoft-cs/cifar100"
    assert args.num_train_epochs == 240 and not cfg.regression


def test_regression_mode_has_its_own_defaults(tmp_path):
    """The regression demo's preset follows the parsed setting, from the command line or the YAML file."""
    from hfkd.cli.distill import parse_distill_args

    def parsed(*argv):
        settings = parse_distill_args(list(argv), method="extracurricular", fixed_method=True)
        return settings.data.max_train_samples, settings.training.output_dir

    regression = (0, "outputs/extracurricular_regression")
    assert parsed("--seeds", "0", "--regression", "true") == regression
    assert parsed("--regression") == regression  # a bare boolean flag means true
    assert parsed("--regression", "false") == parsed() == (256, "outputs/extracurricular")
    config = tmp_path / "r.yaml"
    config.write_text("regression: true\n")
    assert parsed("--config", str(config)) == regression
    assert parsed("--regression", "true", "--output_dir", "mine", "--max_train_samples", "64") == (64, "mine")
