"""``hfkd benchmark``: its refusals, and a tiny run whose paired table is recomputed by hand from its predictions."""
import glob
import json
import math
import os

import numpy as np
import pytest

from hfkd.cli import benchmark, benchmarking
from hfkd.data.default import load_all_digits
from hfkd.stats import t_quantile


@pytest.mark.parametrize("argv, message", [
    (["--methods", "kdd"], "unknown method 'kdd'"),
    (["--methods", "supervised"], "the baseline every method is compared with"),
    (["--methods", "feed_seq"], "unknown method 'feed_seq'"),
    (["--methods", "extracurricular_regression", "--dataset", "./photos", "--student", "resnet18"],
     "embedded rotation demo"),
    (["--methods", "kd", "kd"], "names a method twice"),
    (["--seeds", "1", "1"], "repeats a seed"),
    (["--folds", "1"], "at least 2"),
    (["--labels_per_class", "-3"], ">= 0"),
])
def test_bad_arguments_are_refused_with_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.main(argv)
    assert message in str(e.value)


def test_a_users_teachers_are_not_used_over_folds_they_may_have_seen():
    args = benchmark.parse_benchmark_args(["--dataset", "./photos", "--student", "resnet18", "--teachers", "t"])
    with pytest.raises(ValueError, match="may have seen every fold's test images.*--split holdout"):
        benchmarking.check_teachers(args)
    benchmarking.check_teachers(benchmark.parse_benchmark_args(
        ["--dataset", "./photos", "--student", "resnet18", "--teachers", "t", "--split", "holdout"]))
    # self-distillation needs no teacher: k-fold is fine there
    benchmarking.check_teachers(benchmark.parse_benchmark_args(
        ["--dataset", "./photos", "--student", "resnet18", "--methods", "pskd"]))
    with pytest.raises(ValueError, match="trains the demo teachers on each fold"):
        benchmarking.check_teachers(benchmark.parse_benchmark_args(["--teachers", "t"]))


def _small_indices():
    labels = np.asarray(load_all_digits()["label"])
    return sorted(int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:6])


def _small_pool():
    """60 digits (6 per class), so that the tiny benchmark trains in seconds."""
    data = load_all_digits()
    return benchmarking.Pool(data.select(_small_indices()), "image", "label", [str(i) for i in range(10)],
                             "hfkd/digits"), 0


def _by_hand(folder, arm, seed, fold):
    (path,) = glob.glob(os.path.join(folder, "runs", f"seed{seed}", f"fold{fold}", f"{arm}-*", "predictions.npz"))
    saved = np.load(path)
    logits, labels = saved["logits"].astype(np.float64), saved["labels"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    nll = float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))
    bins = np.clip(np.ceil(confidence * 15).astype(int), 1, 15) - 1  # 15 bins (lo, hi]
    ece = sum(abs(confidence[bins == b].sum() - correct[bins == b].sum()) for b in range(15)) / len(labels)
    return {"eval_accuracy": float(correct.mean()), "eval_loss": nll, "eval_ece": float(ece)}


@pytest.mark.slow
def test_tiny_benchmark_table_is_the_paired_comparison_of_its_saved_predictions(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmarking, "load_pool", lambda args: _small_pool())
    monkeypatch.setattr(benchmarking, "DEMO_TEACHERS", {"cifar_resnet8": 1})  # one small teacher per fold
    out = str(tmp_path / "bench")
    argv = ["--methods", "kd", "--seeds", "3", "--folds", "2", "--max_steps", "2", "--labels_per_class", "2",
            "--output_dir", out]
    result = benchmark.main(argv)

    splits = json.load(open(os.path.join(out, "splits.json")))["3"]
    assert sorted(i for f in splits["folds"] for i in f) == list(range(60))  # every image tested once
    diffs = {}
    for fold in (0, 1):
        assert len(splits["labelled"][fold]) == 20  # 2 per class
        assert not set(splits["labelled"][fold]) & set(splits["folds"][fold])  # never a test image
        kd, base = _by_hand(out, "kd", 3, fold), _by_hand(out, "baseline", 3, fold)
        for metric in kd:
            diffs.setdefault(metric, []).append(kd[metric] - base[metric])
    saved = json.load(open(os.path.join(out, "benchmark.json")))
    assert saved["test_train_ratio"] == 1.0  # 2 folds: n_test / n_train = 1
    for metric, d in diffs.items():
        c = saved["comparison"]["kd"][metric]
        mean = (d[0] + d[1]) / 2
        # float32 logits in the run, float64 here
        assert c["mean"] == pytest.approx(mean, rel=1e-5, abs=1e-6)
        # J = 2 pairs: s^2 = (d0 - d1)^2 / 2, corrected variance (1/2 + 1) s^2, t quantile with 1 degree of freedom
        half = t_quantile(0.975, 1) * math.sqrt(1.5 * (d[0] - d[1]) ** 2 / 2)
        assert c["ci_low"] == pytest.approx(mean - half, rel=1e-5, abs=1e-6)
        assert c["ci_high"] == pytest.approx(mean + half, rel=1e-5, abs=1e-6)
        assert c["n"] == 2 and c["df"] == 1
    assert result["comparison"]["kd"]["eval_accuracy"]["mean"] == pytest.approx(sum(diffs["eval_accuracy"]) / 2)
    table = open(os.path.join(out, "benchmark.md")).read()
    assert f"{100 * sum(diffs['eval_accuracy']) / 2:+.2f}" in table and "| kd | no KD | 2 |" in table
    assert os.path.isfile(os.path.join(out, "benchmark.png"))

    # Run again: every run is reused; with one run's record gone, only that run trains again.
    predictions = sorted(glob.glob(os.path.join(out, "runs", "*", "*", "*", "predictions.npz")))
    assert len(predictions) == 4
    stamps = {p: os.stat(p).st_mtime_ns for p in predictions}
    capsys.readouterr()
    benchmark.main(argv)
    assert capsys.readouterr().out.count("reused") == 4
    assert {p: os.stat(p).st_mtime_ns for p in predictions} == stamps
    os.remove(os.path.join(os.path.dirname(predictions[0]), "run.json"))
    benchmark.main(argv)
    assert capsys.readouterr().out.count("reused") == 3
    assert json.load(open(os.path.join(out, "benchmark.json")))["comparison"]["kd"]["eval_accuracy"]["n"] == 2


def test_splits_and_equal_steps_on_the_digits():
    args = benchmark.parse_benchmark_args(["--seeds", "0", "1", "--labels_per_class", "20", "--max_folds", "2",
                                           "--equal_steps", "true"])
    labels = np.asarray(load_all_digits()["label"])
    splits = benchmarking.make_splits(args, labels, 0)
    assert [len(s) for s in splits.values()] == [2, 2]  # --max_folds: the first 2 of 5 folds
    first = splits[0][0]
    assert len(first.labelled) == 200 and set(first.labelled) <= set(first.train)
    assert len(first.train) + len(first.test) == 1797 and not set(first.train) & set(first.test)
    assert not np.array_equal(splits[0][0].test, splits[1][0].test)  # each seed its own folds
    assert benchmarking.test_train_ratio(args, splits) == 0.25
    # 4 epochs over 1,437 or 1,438 images are ~29 epochs over 200
    assert benchmarking.run_epochs(args, 4, first) == round(4 * len(first.train) / 200) == 29
    args.equal_steps = False
    assert benchmarking.run_epochs(args, 4, first) == 4
    with pytest.raises(SystemExit, match="max_folds"):
        benchmark.main(["--max_folds", "-1"])


def test_a_run_stopped_with_its_checkpoint_is_continued_not_refused(tmp_path, monkeypatch):
    # A SIGTERM (a scheduler's preemption) leaves checkpoint-N in the run's folder; the run again must resume from
    # it, since a fresh run there is refused ("holds an earlier run").
    from hfkd.output_dir import CHECKPOINT_PREFIX, CHECKPOINT_STATE_FILE

    args = benchmark.parse_benchmark_args(["--methods", "kd", "--seeds", "0", "--folds", "2", "--max_steps", "2",
                                           "--labels_per_class", "2", "--output_dir", str(tmp_path)])
    pool, _ = _small_pool()
    split = benchmarking.make_splits(args, pool.labels, 0)[0][0]
    settings = benchmarking.arm_settings(args, "kd", None, str(tmp_path), split)
    seen = []

    def stopped(method, student, teachers, data, training, data_args, save, task=None):
        seen.append((training.output_dir, training.resume_from_checkpoint))
        raise KeyboardInterrupt  # stands in for the stop

    monkeypatch.setattr(benchmarking, "run", stopped)
    with pytest.raises(KeyboardInterrupt):
        benchmarking.run_arm("baseline", settings, pool, split, [], str(tmp_path))
    out, resume = seen[-1]
    assert resume is None
    checkpoint = os.path.join(out, f"{CHECKPOINT_PREFIX}3")
    os.makedirs(checkpoint)
    open(os.path.join(checkpoint, CHECKPOINT_STATE_FILE), "w").write("{}")
    with pytest.raises(KeyboardInterrupt):
        benchmarking.run_arm("baseline", settings, pool, split, [], str(tmp_path))
    assert seen[-1] == (out, "latest")


def test_each_recipe_entry_trains_what_its_workflow_trains(monkeypatch, tmp_path):
    """Which runs each entry makes, from which teachers, with which settings (the runs themselves replaced)."""
    calls = []

    def fake_run_arm(arm, settings, pool, split, teachers, folder, *, name=None, task=None, keep_student=False,
                     save_student=False):
        name = name or arm
        calls.append({"arm": arm, "name": name, "teachers": list(teachers), "task": task, "keep": keep_student,
                      "save": save_student,
                      "batch": settings.training.per_device_train_batch_size, "epochs": settings.training.num_train_epochs,
                      "lr": settings.training.learning_rate, "source": pool.source})
        return {"output_dir": os.path.join(folder, name), "key": name, "metrics": {}}

    monkeypatch.setattr(benchmarking, "run_arm", fake_run_arm)
    monkeypatch.setattr(benchmarking, "fold_regression_teachers", lambda args, pool, split, task: ["regression_t"])
    monkeypatch.setattr(benchmarking, "rotated_pool", lambda angle: benchmarking.Pool(None, "image", "angle", None,
                                                                                       "rotated"))
    args = benchmark.parse_benchmark_args(["--seeds", "0", "--output_dir", str(tmp_path)])
    pool = benchmarking.Pool(load_all_digits(), "image", "label", [str(i) for i in range(10)], "hfkd/digits")
    split = benchmarking.make_splits(args, pool.labels, 0)[0][0]
    fold = benchmarking.Fold(args, pool, split, {"cifar_resnet20": "t20", "cifar_wrn16_2": "wrn"})

    rows = benchmarking.bake_entry(fold)
    base, bake = calls
    assert not base["save"] and not fold.save_students  # kd and meal_v2 only: no entry reads a shared run's student
    # imagenet protocol, M = 1: the baseline at half BAKE's batch and learning rate, the same epochs; no teachers
    assert (base["arm"], bake["arm"]) == ("baseline", "bake") and bake["teachers"] == base["teachers"] == []
    assert base["batch"] * 2 == bake["batch"] == 128 and base["lr"] * 2 == pytest.approx(bake["lr"])
    assert base["epochs"] == bake["epochs"] == round(8 * len(split.train) / 50)
    assert [r[0] for r in rows] == ["bake"] and rows[0][3] == "no KD (imagenet protocol)"

    calls.clear()
    rows = benchmarking.feed_sequential_entry(fold)
    base, gen1, gen2 = calls
    assert base["arm"] == "baseline" and base["keep"]  # generation 1's teacher: the baseline's saved student
    assert gen1["teachers"] == [os.path.join(str(tmp_path), "baseline", "student")] and gen1["keep"]
    assert gen2["teachers"] == [os.path.join(str(tmp_path), "feed_sequential1", "student")] and not gen2["keep"]
    assert [r[0] for r in rows] == ["feed_sequential (generation 1)", "feed_sequential (generation 2)"]
    assert all(r[2]["key"] == "baseline" for r in rows)

    calls.clear()
    benchmarking.extracurricular_entry(fold)
    base, el = calls
    assert el["teachers"] == ["t20"]  # its demo's one teacher, the fold's ResNet-20
    # the demo's 6 epochs over 256 images at batch 32 kept as the same images seen: 6 x 256 / 50 epochs
    assert el["epochs"] == base["epochs"] == round(6 * 256 / 50) and el["batch"] == 32

    calls.clear()
    rows = benchmarking.regression_entry(fold)
    base, el = calls
    assert el["teachers"] == ["regression_t"] and base["teachers"] == []
    assert base["task"] is el["task"] and el["task"].target_scale == 45.0 and el["source"] == "rotated"
    # the regression demo trains on all training images: its steps over the whole training part
    assert el["epochs"] == round(6 * len(split.train) / 50)
    assert rows[0][0] == "extracurricular_regression"

    # compress: the kd run's student (saved), pruned once, recovered by KD from the fold's teachers and by plain
    # fine-tuning, each for the compression demo's 4 epochs kept as the same steps
    # with compress (or feed_sequential) in --methods every shared run saves its student, so that the entry that
    # needs it does not train the run again in its folder
    fold.args.methods = ["kd", "compress"]
    assert fold.save_students
    calls.clear()
    recoveries, pruned_from = [], []
    monkeypatch.setattr(benchmarking, "from_pretrained", lambda path: pruned_from.append(path) or "kd student")
    monkeypatch.setattr(benchmarking, "prune_backbone", lambda student, config: (f"pruned {student}", {}))

    class Trained:
        teacher_metrics = {}
        state = type("State", (), {"global_step": 1, "train_runtime": 0.0})

        @staticmethod
        def predict():
            import torch
            return {"logits": torch.eye(10)[:3], "labels": torch.tensor([0, 1, 0])}

    def fake_recover(pruned, data, teachers, method, training, augment):
        recoveries.append((pruned, list(teachers), method, training.num_train_epochs))
        os.makedirs(training.output_dir)  # as the trainer does
        return Trained()

    monkeypatch.setattr(benchmarking, "recover", fake_recover)
    rows = benchmarking.compress_entry(fold)
    (kd,) = calls
    assert kd["arm"] == "kd" and kd["keep"] and kd["teachers"] == ["t20", "wrn"]
    assert pruned_from == [os.path.join(str(tmp_path), "kd", "student")]  # one pruning for both recoveries
    epochs = round(4 * len(split.train) / 50)
    assert recoveries == [("pruned kd student", ["t20", "wrn"], "kd", epochs),
                          ("pruned kd student", [], "supervised", epochs)]
    assert rows[0][0] == "compress (KD recovery)" and rows[0][1]["method"] == "kd"
    assert rows[0][2]["method"] == "supervised" and rows[0][3] == "plain fine-tuning after pruning"


def test_every_named_entry_has_its_runner():
    from hfkd.cli.benchmark_entries import WORKFLOW_ENTRIES

    assert set(WORKFLOW_ENTRIES) <= set(benchmarking.ENTRIES)
    assert set(benchmarking.ENTRIES) - set(WORKFLOW_ENTRIES) <= set(benchmark.list_methods())


def test_saved_regression_outputs_are_measured_as_the_trainer_evaluates_them():
    import torch
    from accelerate import Accelerator

    from hfkd.tasks import RegressionTask

    task = RegressionTask(num_targets=1, target_scale=45.0)
    generator = torch.Generator().manual_seed(0)
    outputs, targets = torch.randn(7, 2, generator=generator), 45 * torch.randn(7, 1, generator=generator)
    batches = [{"pixel_values": outputs[:4], "labels": targets[:4]}, {"pixel_values": outputs[4:], "labels": targets[4:]}]
    evaluated = task.evaluate(Accelerator(cpu=True), batches, lambda x: x)
    saved = benchmarking.regression_prediction_metrics(task)(outputs.numpy(), targets.numpy())
    assert set(saved) == {"eval_mae", "eval_rmse", "eval_loss"}
    for key, value in saved.items():
        assert value == pytest.approx(evaluated[key], rel=1e-6)
    # and by hand: the mean is the first output, in units of 45 degrees
    assert saved["eval_mae"] == pytest.approx(float((outputs[:, 0] * 45 - targets[:, 0]).abs().mean()), rel=1e-5)


def _hand_mae(folder, name, seed, fold):
    (path,) = glob.glob(os.path.join(folder, "runs", f"seed{seed}", f"fold{fold}", f"{name}-*", "predictions.npz"))
    saved = np.load(path)
    return float(np.mean(np.abs(saved["logits"][:, 0].astype(np.float64) * 45.0 - saved["labels"].reshape(-1))))


@pytest.mark.slow
def test_tiny_recipe_entries_table_is_computed_from_their_saved_predictions(tmp_path, monkeypatch):
    from hfkd.data.rotated_digits import load_all_rotated_digits

    pool, _ = _small_pool()
    rotated = benchmarking.Pool(load_all_rotated_digits().select(_small_indices()), "image", "angle", None, "rotated")
    monkeypatch.setattr(benchmarking, "load_pool", lambda args: (pool, 0))
    monkeypatch.setattr(benchmarking, "rotated_pool", lambda angle: rotated)
    monkeypatch.setattr(benchmarking, "DEMO_TEACHERS", {"cifar_resnet8": 1})
    monkeypatch.setattr(benchmarking, "REGRESSION_TEACHERS", {"cifar_resnet8": 1})
    monkeypatch.setenv("HFKD_CACHE", str(tmp_path / "cache"))
    out = str(tmp_path / "bench")
    result = benchmark.main(["--methods", "compress", "extracurricular_regression", "--seeds", "1", "--folds", "2",
                             "--max_steps", "2", "--labels_per_class", "2", "--output_dir", out])
    comparison = result["comparison"]
    top1 = [_by_hand(out, "compress_kd", 1, f)["eval_accuracy"] - _by_hand(out, "compress_supervised", 1, f)[
        "eval_accuracy"] for f in (0, 1)]
    assert comparison["compress (KD recovery)"]["eval_accuracy"]["mean"] == pytest.approx(sum(top1) / 2, abs=1e-9)
    assert comparison["compress (KD recovery)"]["compared_with"] == "plain fine-tuning after pruning"
    mae = [_hand_mae(out, "extracurricular_regression", 1, f) - _hand_mae(out, "baseline_regression", 1, f)
           for f in (0, 1)]
    c = comparison["extracurricular_regression"]["eval_mae"]
    assert c["mean"] == pytest.approx(sum(mae) / 2, rel=1e-4)
    half = t_quantile(0.975, 1) * math.sqrt(1.5 * (mae[0] - mae[1]) ** 2 / 2)
    assert c["ci_high"] - c["mean"] == pytest.approx(half, rel=1e-4)
    table = open(os.path.join(out, "benchmark.md")).read()
    assert "| compress (KD recovery) | plain fine-tuning after pruning | 2 |" in table
    assert "| extracurricular_regression | no KD | 2 |" in table and "MAE (°)" in table


def test_the_rotated_pool_is_the_digits_in_their_kfold_order():
    from hfkd.data.rotated_digits import load_all_rotated_digits

    digits = load_all_digits()
    nearly_upright = load_all_rotated_digits(max_angle=1e-3)
    assert len(nearly_upright) == len(digits) == 1797
    for i in (0, 1, 900, 1796):  # image i is digit i, turned by a negligible angle
        a, b = (np.asarray(x["image"].convert("RGB"), dtype=np.float64) for x in (digits[i], nearly_upright[i]))
        assert np.abs(a - b).mean() < 1.0
    angles = np.asarray(load_all_rotated_digits()["angle"])
    assert np.abs(angles).max() <= 45 and angles.std() > 20  # one draw in [-45, 45] per image
    assert np.array_equal(angles, np.asarray(load_all_rotated_digits()["angle"]))  # the same draw every time


def test_help_answers_without_loading_torch():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys\nfrom hfkd.cli import main\ntry:\n    main(['benchmark', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nprint('torch loaded' if 'torch' in sys.modules else 'torch not loaded')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in ("--methods", "--seeds", "--folds", "--split", "--labels_per_class", "feed_sequential", "compress"):
        assert option in proc.stdout
    assert proc.stdout.strip().endswith("torch not loaded")


def test_a_teacher_trained_by_the_benchmark_is_keyed_by_its_place_in_the_folder(tmp_path):
    inside = str(tmp_path / "bench" / "runs" / "seed0" / "fold0" / "baseline-abc" / "student")
    assert benchmarking._portable(inside, str(tmp_path / "bench")) == os.path.join(
        "runs", "seed0", "fold0", "baseline-abc", "student")
    # the same run in a moved folder has the same name; a teacher from elsewhere keeps its path
    moved = str(tmp_path / "moved" / "runs" / "seed0" / "fold0" / "baseline-abc" / "student")
    assert benchmarking._portable(moved, str(tmp_path / "moved")) == benchmarking._portable(inside, str(tmp_path / "bench"))
    assert benchmarking._portable("/cache/demo_teachers/t", str(tmp_path / "bench")) == "/cache/demo_teachers/t"
    assert benchmarking._portable("hf-hub:org/model", str(tmp_path / "bench")) == "hf-hub:org/model"
