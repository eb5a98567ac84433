"""Issue 20, "Real runs, not the demo": a user's data gets the library's defaults and the student's own
preprocessing, every check runs before the first step, and output folders are never silently replaced."""
import os
import pathlib
import time

import pytest
import yaml

from hfkd.cli import main as hfkd_main
from hfkd.cli.preset import demo_preset
from hfkd.cli.distill import main as distill_main
from hfkd.cli.distill import parse_distill_args, run_settings
from hfkd.cli.preflight import claim_output_dir
from hfkd.models.factory import create_backbone
from hfkd.cli.pipeline import result_row
from helpers.models import saved_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["--max_train_samples", "32", "--max_steps", "1", "--per_device_train_batch_size", "16",
        "--eval_strategy", "no", "--eval_teachers", "false", "--disable_tqdm", "true"]


@pytest.fixture
def photos(tmp_path):
    """A user's folder of photos: imagefolder layout, 2 classes, mixed sizes (500x375, 375x500, 640x480)."""
    from PIL import Image

    root = tmp_path / "photos"
    for c, colour in (("cat", (200, 120, 40)), ("dog", (40, 90, 200))):
        (root / c).mkdir(parents=True)
        for i, size in enumerate([(500, 375), (375, 500), (640, 480)] * 2):
            Image.new("RGB", size, colour).save(root / c / f"{i}.jpg")
    return str(root)


def _dry(argv, capsys):
    report = hfkd_main(["distill", *argv, "--dry_run"])
    return report, capsys.readouterr().out


# -- 1. a user's data gets the library's defaults -----------------------------------------------------
def test_a_photo_folder_gets_the_librarys_defaults_and_the_students_own_preprocessing(photos, tmp_path, capsys):
    teacher = saved_model(tmp_path / "teacher", num_classes=2, label_names=["cat", "dog"])
    report, out = _dry(["--method", "kd", "--dataset", photos, "--student", "resnet18", "--student_pretrained",
                        "false", "--teachers", teacher, "--output_dir", str(tmp_path / "run")], capsys)
    settings = parse_distill_args(["--method", "kd", "--dataset", photos, "--student", "resnet18"])
    # resnet18's own pretrained configuration (timm knows it without downloading), not the demo's 32 px
    assert report["preprocess"]["input_size"] == [3, 224, 224]
    assert report["preprocess"]["interpolation"] in ("bilinear", "bicubic")
    assert report["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "224x224 px" in out and "demo preset (" not in out and report["demo_preset"] == {}
    assert "defaults: the library's own" in out
    # the settings dataclasses' defaults: checkpoints on, timm's flips on, AdamW 1e-3, no baseline
    assert settings.training.save_strategy == "steps" and settings.training.save_total_limit == 2
    assert settings.data.aug_hflip == 0.5 and settings.training.learning_rate == 1e-3
    assert settings.run.baseline is False and settings.model.image_size is None
    assert settings.model.student_pretrained is True  # a named student starts from its pretrained weights
    assert report["num_classes"] == 2 and report["problems"] == []


def test_a_named_student_without_cached_weights_offline_is_a_clear_error_before_anything_runs(photos, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        distill_main(["--method", "supervised", "--dataset", photos, "--student", "resnet18", "--output_dir", str(out)])
    message = str(exit_info.value.code)
    assert "student 'resnet18' cannot be loaded" in message and "--student_pretrained false" in message
    assert not out.exists()


def test_the_student_must_be_named_except_on_the_embedded_demo_data(photos):
    with pytest.raises(ValueError, match="--student is required on .*photos"):
        parse_distill_args(["--method", "kd", "--dataset", photos])
    with pytest.raises(SystemExit, match="--student is required"):
        hfkd_main(["cache", "--dataset", photos, "--teachers", "x"])
    assert parse_distill_args(["--method", "kd"]).model.student == "cifar_resnet8"  # the demo preset's


def test_no_dataset_runs_the_demo_preset_and_the_dry_run_says_what_it_set(capsys):
    report, out = _dry(["--method", "kd"], capsys)
    assert "demo preset (embedded hfkd/digits" in out and "image_size=32" in out
    assert report["demo_preset"]["image_size"] == 32 and report["preprocess"]["input_size"] == [3, 32, 32]
    # the demo's numbers come from the preset, unchanged: the same settings as before the issue
    s = parse_distill_args(["--method", "kd"])
    assert (s.model.image_size, s.training.learning_rate, s.training.weight_decay, s.training.num_train_epochs,
            s.training.save_strategy, s.data.aug_hflip, s.run.baseline) == (32, 1e-2, 0.05, 4, "no", 0.0, True)
    named = parse_distill_args(["--method", "kd", "--dataset", "hfkd/digits"])  # named, it is the same demo
    assert named.training == s.training and named.model == s.model


def test_the_preset_fills_only_what_was_not_given_on_the_demo_data():
    s = parse_distill_args(["--method", "kd", "--student", "test_resnet", "--learning_rate", "0.3"])
    assert s.training.learning_rate == 0.3 and s.model.student == "test_resnet" and s.model.image_size == 32
    assert "learning_rate" not in s.preset.applied and s.preset.applied["image_size"] == 32


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*_demo.yaml")), ids=lambda p: p.name)
def test_the_demo_yaml_files_spell_out_the_preset_exactly(config):
    """One source: each *_demo.yaml parses to exactly what the method's demo preset runs."""
    method = yaml.safe_load(config.read_text())["method"]
    spelled_out = parse_distill_args(["--config", str(config)])
    preset = parse_distill_args([], method=method, fixed_method=True)
    for group in ("model", "data", "training", "method_config", "run"):
        assert getattr(spelled_out, group) == getattr(preset, group), f"{config.name}: [{group}] differs"
    values = yaml.safe_load(config.read_text())
    fields = {f for group in spelled_out.groups() for f in vars(group)}
    for key, value in demo_preset(method).items():  # and it names every setting the preset sets
        if key not in fields:  # e.g. `baseline`, which `hfkd train` does not have
            continue
        assert values.get(key) == value, f"{config.name}: {key} is {values.get(key)!r}, the preset's {value!r}"


def test_help_says_where_the_defaults_come_from(capsys):
    with pytest.raises(SystemExit):
        hfkd_main(["distill", "--method", "kd", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Where the defaults come from" in out and "the demo preset's" in out and "--student is required" in out


# -- 2. every check before the first step -------------------------------------------------------------
def test_a_missing_teacher_folder_fails_within_seconds_with_nothing_trained_or_written(tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:  # the demo preset asks for a baseline, which would train first
        distill_main(["--method", "kd", "--student", "test_resnet", "--teachers", str(tmp_path / "missing"),
                      *FAST, "--output_dir", str(out)])
    assert time.monotonic() - start < 30
    message = str(exit_info.value.code)
    assert f"teacher '{tmp_path / 'missing'}' cannot be loaded: there is no folder" in message
    assert "nothing was trained" in message and not out.exists()


def test_the_dry_run_exits_non_zero_naming_each_teacher_that_cannot_be_loaded(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _dry(["--method", "kd", "--dataset", photos, "--student", "resnet18", "--student_pretrained", "false",
              "--teachers", "resnet50", "./nope"], capsys)
    message = str(exit_info.value.code)
    assert "teacher 'resnet50' cannot be loaded offline" in message
    assert "teacher './nope' cannot be loaded: there is no folder" in message
    assert "unknown (" not in message


def test_a_teacher_of_other_classes_is_refused_before_the_baseline(tmp_path):
    teacher = saved_model(tmp_path / "three", num_classes=3)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="predicts 3 classes but the student predicts 10"):
        distill_main(["--method", "kd", "--student", "test_resnet", "--teachers", teacher, *FAST,
                      "--output_dir", str(out)])
    assert not out.exists()


def test_with_an_empty_demo_cache_the_dry_run_says_the_demo_teachers_will_be_trained(capsys):
    report, out = _dry(["--method", "kd"], capsys)  # conftest gives every test an empty $HFKD_CACHE
    assert "demo teacher cifar_resnet20 is not in the cache yet" in out and "trained on first use" in out
    assert report["problems"] == [] and len(report["teachers"]) == 2


# -- 5. output folders ---------------------------------------------------------------------------------
def _earlier_run(folder, dataset):
    """An earlier run's saved baseline student in ``folder/baseline/student``, trained on ``dataset``."""
    return pathlib.Path(saved_model(folder / "baseline" / "student", metadata={"dataset": {"id": dataset}}))


def test_a_new_run_into_a_finished_runs_folder_is_refused_with_the_ways_out(tmp_path, photos):
    out = tmp_path / "run"
    earlier = _earlier_run(out, "photos")
    with pytest.raises(SystemExit) as exit_info:  # the digits run must not replace a run on other data
        distill_main(["--method", "kd", "--student", "test_resnet", "--teachers", "x", *FAST,
                      "--output_dir", str(out)])
    message = str(exit_info.value.code)
    assert "holds an earlier run (baseline/student)" in message
    for way_out in ("new output_dir", "--resume_from_checkpoint latest", "--overwrite_output_dir"):
        assert way_out in message
    assert (earlier / "hfkd.json").is_file()


def test_overwrite_output_dir_removes_only_hfkds_own_files_of_the_whole_run(tmp_path):
    out = tmp_path / "run"
    earlier = _earlier_run(out, "photos")
    (out / "notes.txt").write_text("mine")
    settings = parse_distill_args(["--method", "kd", "--student", "test_resnet", "--output_dir", str(out),
                                   "--overwrite_output_dir", "true"])
    lock = claim_output_dir(settings)
    try:
        assert not earlier.exists() and (out / "notes.txt").read_text() == "mine"
        assert (out / ".hfkd-run.lock").is_file()
    finally:
        lock.release()


def test_the_demo_preset_replaces_only_its_own_earlier_demo_run(tmp_path, capsys):
    out = tmp_path / "demo"
    _earlier_run(out, "hfkd/digits")
    s = parse_distill_args(["--method", "kd", "--output_dir", str(out)])
    assert s.training.overwrite_output_dir is True
    assert any("replacing the earlier demo run" in line for line in s.preset.describe())
    other = tmp_path / "other"
    _earlier_run(other, "photos")
    assert parse_distill_args(["--method", "kd", "--output_dir", str(other)]).training.overwrite_output_dir is False


@pytest.mark.slow
def test_a_second_demo_style_run_replaces_the_first_and_says_so(tmp_path, capsys):
    teacher = saved_model(tmp_path / "teacher")
    argv = ["--method", "kd", "--student", "test_resnet", "--teachers", teacher, *FAST,
            "--output_dir", str(tmp_path / "demo")]
    run_settings(parse_distill_args(argv))
    first = (tmp_path / "demo" / "student" / "hfkd.json").stat().st_mtime_ns
    capsys.readouterr()
    rows = run_settings(parse_distill_args(argv))
    assert "demo preset: replacing the earlier demo run" in capsys.readouterr().out
    assert (tmp_path / "demo" / "student" / "hfkd.json").stat().st_mtime_ns != first
    assert [r["role"] for r in rows][-2:] == ["student, no KD (baseline)", "student, kd"]


def test_a_teacher_is_named_by_its_hfkd_train_output_folder(tmp_path, capsys):
    run = tmp_path / "outputs" / "teacher"
    saved_model(run / "student")  # what `hfkd train --output_dir outputs/teacher` leaves
    backbone = create_backbone(str(run))
    assert result_row(backbone.name, "teacher 1", {}, None)["model"] == "teacher"
    report, out = _dry(["--method", "kd", "--student", "test_resnet", "--teachers", str(run)], capsys)
    assert report["teachers"][0]["name"] == "teacher" and "teacher teacher:" in out
    assert os.path.isdir(run / "student")


@pytest.mark.slow
def test_sequential_feed_trains_the_baseline_it_needs_as_generation_1s_teacher(tmp_path):
    """No baseline unless asked, except where a method needs one: FEED's generation 1 distils from it."""
    out = tmp_path / "feed"
    rows = run_settings(parse_distill_args(["--method", "feed", "--student", "test_resnet", "--baseline", "false",
                                            "--parallel", "false", "--generations", "1", *FAST,
                                            "--output_dir", str(out)]))
    assert [r["role"] for r in rows] == ["student, no KD (baseline)", "student, sequential FEED gen 1"]
    assert (out / "baseline" / "student" / "model.safetensors").is_file()
