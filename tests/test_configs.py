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
def test_every_config_names_its_method_so_hfkd_distill_runs_it(config):
    """`hfkd distill --config FILE` (no --method) runs the method of the recipe the file belongs to."""
    expected = "supervised" if _method(config) == "train" else _method(config)
    assert re.search(rf"^method: {expected}\b", config.read_text(encoding="utf-8"), re.M), config.name
    assert parse_distill_args(["--config", str(config)]).method == expected


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


def test_demo_networks_keep_spatial_maps_at_32_px():
    """The embedded demos use stride-1 CIFAR networks, so FEED transfers 8x8 maps, not the 1x1 of ImageNet stems."""
    from hfkd.cli.demo import DEMO_IMAGE_SIZE, DEMO_STUDENT, DEMO_TEACHERS

    assert DEMO_IMAGE_SIZE == 32
    student = describe_model(DEMO_STUDENT, 10)
    assert student["feature_map"] == (64, 8, 8)
    assert len(DEMO_TEACHERS) == 2
    for teacher in DEMO_TEACHERS:
        t = describe_model(teacher, 10)
        assert t["feature_map"][1:] == (8, 8) and t["params"] > 3 * student["params"]


def test_demo_cache_folders_name_the_settings_they_were_trained_with(monkeypatch, tmp_path):
    """A cached demo teacher is reused only with the settings it was trained with."""
    import hfkd.cli.demo as demo
    from hfkd.cli.demo import demo_student_path

    monkeypatch.setenv("HFKD_CACHE", str(tmp_path))
    teacher, init, student = (demo.demo_teacher_path("cifar_resnet20"), demo.demo_teacher_path(demo.DEMO_STUDENT),
                              demo_student_path())
    assert teacher.startswith(str(tmp_path)) and "cifar_resnet20-digits32-e6-lr0.01-seed0" in teacher
    monkeypatch.setattr(demo, "DEMO_LEARNING_RATE", 5e-3)
    monkeypatch.setitem(demo.DEMO_TEACHERS, "cifar_resnet20", 9)
    assert demo.demo_teacher_path("cifar_resnet20").endswith("cifar_resnet20-digits32-e9-lr0.005-seed0")
    assert demo.demo_teacher_path(demo.DEMO_STUDENT) != init
    assert demo_student_path() != student


@pytest.mark.parametrize("config,params,epochs", [
    ("pskd_preactresnet18_cifar100.yaml", "11,217,444", 300),
    ("bake_cifar_resnet18_cifar100.yaml", "11,217,444", 200),
    ("feed_resnet56_cifar100.yaml", "861,620", 164),
])
def test_paper_configs_dry_run(config, params, epochs, capsys):
    """``recipes/NAME.py --config ... --dry_run`` prints the settings, the student's size and the steps, trains nothing."""
    path = ROOT / "recipes" / "configs" / config
    with pytest.raises(SystemExit) as exit_info:  # the run could not start offline: the dry run exits non-zero
        distill(["--config", str(path), "--dry_run", "true"], method=_method(path), fixed_method=True)
    problems = str(exit_info.value.code)
    assert "dataset 'uoft-cs/cifar100' cannot be loaded" in problems
    out = capsys.readouterr().out
    assert "weight_decay_norm_and_bias = True" in out and "aug_preset = 'cifar'" in out
    assert params in out.replace("_", ",")
    # CIFAR-100 is not on this offline machine: the step count is given as its formula, with the papers' batch
    assert "128 images per optimizer step: ceil(N / 128) steps per epoch" in out and f"{epochs} epochs" in out
    assert "nothing was trained" in out
    assert "digits" not in out  # no demo teacher stands in for CIFAR-100 teachers
    assert "aug_scale is not used by aug_preset 'cifar'" in out
    if config.startswith("feed"):  # FEED needs teachers: the dry run says so, as the run would
        assert "no --teachers given: feed on uoft-cs/cifar100 needs teachers" in problems


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_cite_sources_inside_the_repository_or_upstream(config):
    text = config.read_text(encoding="utf-8")
    assert not re.search(r"shared[/]", text), f"{config.name} points outside the repository"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_a_config_starts_its_student_from_weights_that_exist(config):
    """Students start from their pretrained weights unless the config says student_pretrained: false (issue 20):
    a config of a network without published weights (hfkd's CIFAR networks) must say so."""
    model, *_ = _load(config)
    if model.student_pretrained and timm.is_model(model.student):
        cfg = timm.models.get_pretrained_cfg(model.student)
        assert cfg is not None and (cfg.hf_hub_id or cfg.url), \
            f"{config.name}: {model.student} has no pretrained weights; add student_pretrained: false"
