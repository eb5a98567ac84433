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
    (["--methods", "bake"], "its own workflow"),
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


def _small_pool():
    """60 digits (6 per class), so that the tiny benchmark trains in seconds."""
    data = load_all_digits()
    labels = np.asarray(data["label"])
    keep = sorted(int(i) for c in range(10) for i in np.flatnonzero(labels == c)[:6])
    return benchmarking.Pool(data.select(keep), "image", "label", [str(i) for i in range(10)], "hfkd/digits"), 0


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
    assert f"{100 * sum(diffs['eval_accuracy']) / 2:+.2f}" in table and "| kd | 2 |" in table
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

    def stopped(method, student, teachers, data, training, data_args, save):
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
