"""Every config in recipes/configs loads through the recipe's own argument dataclasses, and the paper configs say
what the official code does."""
import pathlib
import re

import pytest
import timm

from hfkd.cli.distill import main as distill
from hfkd.cli.distill import parse_distill_args
from hfkd.models.cifar import describe_model
from hfkd.training.args import DistillationArguments

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
RECIPES = {"pskd": "pskd", "bake": "bake", "feed": "feed", "meal": "meal_v2", "kd": "kd", "train": "train",
           "extracurricular": "extracurricular"}


def _method(config: pathlib.Path) -> str:
    return RECIPES[config.name.split("_")[0]]


def _load(config: pathlib.Path):
    """The settings groups a recipe parses from ``config``: model, data, training, method config, run options."""
    name = _method(config)
    if name == "train":
        settings = parse_distill_args(["--config", str(config)], method="supervised", fixed_method=True)
    else:
        settings = parse_distill_args(["--config", str(config)], method=name, fixed_method=True)
    return settings.model, settings.data, settings.training, settings.method_config, settings.run


def test_there_are_configs():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_loads_with_the_recipes_dataclasses(config):
    model, data, args, *_ = _load(config)
    assert data.augment() is not None  # the augmentation fields are valid together
    for name in [model.student, *model.teachers]:
        assert timm.is_model(name) or "/" in name, f"{config.name}: {name} is neither a timm name nor a Hub id"


@pytest.mark.parametrize("config,student,params", [
    ("pskd_preactresnet18_cifar100.yaml", "cifar_preact_resnet18", 11_217_444),
    ("bake_cifar_resnet18_cifar100.yaml", "cifar_resnet18", 11_217_444),
    ("feed_resnet56_cifar100.yaml", "cifar_resnet56_ft", 861_620),
])
def test_cifar_configs_use_the_papers_networks_and_details(config, student, params):
    model, data, args, method, _ = _load(ROOT / "recipes" / "configs" / config)
    assert model.student == student and describe_model(student, 100)["params"] == params
    assert data.aug_preset == "cifar" and data.aug_crop_padding == 4 and data.aug_color_jitter is None
    assert args.weight_decay_norm_and_bias and args.lr_scheduler_type == "multistep" and args.lr_step_per_epoch
    assert args.max_grad_norm == 0 and args.per_device_train_batch_size == 128


def test_bake_imagenet_config_has_the_pycls_schedule_and_syncbn():
    _, data, args, bake, _ = _load(ROOT / "recipes" / "configs" / "bake_resnet50_imagenet.yaml")
    assert (args.warmup_epochs, args.warmup_start_factor, args.lr_step_per_epoch) == (5, 0.1, True)
    assert args.sync_batchnorm and args.weight_decay_norm_and_bias and data.aug_pca_lighting == 0.1
    assert bake.intra_class_images == 1 and bake.global_ensemble


def test_every_config_named_in_the_repository_exists():
    named = set()
    for path in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("recipes/*.py"), *ROOT.glob("hfkd/**/*.py"),
                 *CONFIGS]:
        named |= set(re.findall(r"recipes/configs/([\w.-]+\.ya?ml)", path.read_text(encoding="utf-8")))
    missing = sorted(n for n in named if not (ROOT / "recipes" / "configs" / n).exists() and "*" not in n)
    assert not missing, f"configs named but absent: {missing}"


def test_feed_demo_networks_are_checked_and_cifar_networks_have_spatial_maps(capsys):
    from hfkd.workflows.feed import CIFAR_DEMO_STUDENT, CIFAR_DEMO_TEACHERS

    with pytest.raises(SystemExit):
        distill(["--demo_networks", "imagenet"], method="feed", fixed_method=True)
    assert "demo_networks" in capsys.readouterr().err
    student = describe_model(CIFAR_DEMO_STUDENT, 10)
    assert student["feature_map"] == (64, 8, 8)
    for teacher in CIFAR_DEMO_TEACHERS:
        t = describe_model(teacher, 10)
        assert t["feature_map"] == (64, 8, 8) and t["params"] > student["params"]


@pytest.mark.parametrize("config,params", [
    ("pskd_preactresnet18_cifar100.yaml", "11,217,444"),
    ("bake_cifar_resnet18_cifar100.yaml", "11,217,444"),
    ("feed_resnet56_cifar100.yaml", "861,620"),
])
def test_paper_configs_dry_run(config, params, capsys):
    """``recipes/NAME.py --config ... --dry_run`` prints the settings, the student's size and the steps, trains nothing."""
    path = ROOT / "recipes" / "configs" / config
    distill(["--config", str(path), "--dry_run", "true"], method=_method(path), fixed_method=True)
    out = capsys.readouterr().out
    assert "weight_decay_norm_and_bias = True" in out and "aug_preset = 'cifar'" in out
    assert params in out.replace("_", ",")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_cite_sources_inside_the_repository_or_upstream(config):
    text = config.read_text(encoding="utf-8")
    assert not re.search(r"shared[/]", text), f"{config.name} points outside the repository"
