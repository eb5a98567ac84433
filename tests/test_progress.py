"""What a run prints on the main process: a start banner, rounded metrics, the training time, where the student
was saved, and the command's total time."""
import re
import sys

import pytest
from helpers.models import tiny_student, tiny_teacher

import hfkd.cli.push  # noqa: F401 - the command the refusal test stands in
from hfkd import DistillationTrainer
from hfkd.cli import COMMANDS
from hfkd.cli import main as hfkd_main
from hfkd.training.callbacks import format_duration, metrics_text


def test_a_run_prints_its_banner_its_time_and_where_the_student_went(tmp_path, small_digits, capsys):
    from conftest import run_args

    args = run_args(tmp_path / "run", max_steps=2, per_device_train_batch_size=16)
    trainer = DistillationTrainer(tiny_student(), [tiny_teacher()], method="kd", args=args,
                                  train_dataset=small_digits.train, eval_dataset=small_digits.eval,
                                  dataset_info={"id": "hfkd/digits"})  # as the command passes it
    trainer.train()
    out = capsys.readouterr().out
    assert "   method: kd\n" in out
    assert f"     data: hfkd/digits: {len(small_digits.train):,} train, {len(small_digits.eval):,} eval\n" in out
    assert "   labels: 10 names from the dataset's label column\n" in out
    assert re.search(r"   device: cpu, 1 process\(es\), fp32\n", out)
    assert re.search(r"  student: test_resnet \([\d,]+ parameters\)\n", out)
    assert "teachers: test_convnext\n" in out
    assert "    steps: 1 epoch(s) x 16 steps = 2 optimizer steps\n" in out
    assert f"   output: {tmp_path / 'run'}\n" in out
    assert re.search(r"trained 2 optimizer steps in \d+\.\d s\n", out)
    folder = trainer.save_model()
    assert f"student saved to {folder}\n" in capsys.readouterr().out


def test_metrics_are_rounded_in_printed_logs():
    text = metrics_text({"eval_accuracy": 0.972222222, "eval_loss": 0.215312345, "eval_ece": 0.0187654,
                         "eval_runtime": 1.23456789, "epoch": 2, "note": "x", "flag": True})
    assert text == "top-1 (%) 97.22, NLL 0.215, ECE (%) 1.88, eval_runtime 1.235, epoch 2"


def test_durations_read_like_a_person_says_them():
    assert [format_duration(s) for s in (4.21, 185, 7620)] == ["4.2 s", "3 min 05 s", "2 h 07 min"]


def test_the_command_says_its_total_time(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "noop", "builtins:len")
    assert hfkd_main(["noop"]) == 0
    assert re.fullmatch(r"hfkd noop: done in \d+\.\d s\n", capsys.readouterr().out)


def test_a_dataset_without_a_name_is_called_in_memory(tmp_path, small_digits):
    from conftest import run_args

    from hfkd.training.callbacks import start_banner

    trainer = DistillationTrainer(tiny_student(), method="supervised", args=run_args(tmp_path / "run", max_steps=1),
                                  train_dataset=small_digits.train)
    trainer.state.num_epochs, trainer.state.max_steps, trainer.steps_per_epoch = 1, 1, 8
    banner = start_banner(trainer)
    assert "data: in-memory dataset: 256 train, no eval split" in banner and "teachers: none" in banner


def test_a_resume_refusal_is_one_message_not_a_traceback(monkeypatch, capsys):
    from hfkd.training.resume import ResumeRefused, check_same_run

    with pytest.raises(ResumeRefused, match="learning_rate: checkpoint 0.01, now 0.5"):
        check_same_run({"learning_rate": 0.01}, {"learning_rate": 0.5}, [], "out/checkpoint-4")

    def refuse(argv):
        check_same_run({"learning_rate": 0.01}, {"learning_rate": 0.5}, [], "out/checkpoint-4")

    monkeypatch.setattr(sys.modules["hfkd.cli.push"], "main", refuse)  # any command; push is the cheapest
    with pytest.raises(SystemExit) as exit_info:
        hfkd_main(["push", "x", "y"])
    message = str(exit_info.value.code)
    assert message.startswith("hfkd push: error: out/checkpoint-4 was written by a different run")
    assert "resume_allow_changes=['learning_rate']" in message

    def bug(argv):
        raise ValueError("a bug, not a refusal")

    monkeypatch.setattr(sys.modules["hfkd.cli.push"], "main", bug)
    with pytest.raises(ValueError, match="a bug"):  # anything else keeps its traceback
        hfkd_main(["push", "x", "y"])


def test_the_banner_names_a_teacher_cache_given_as_an_argument():
    """DistillationTrainer(teacher_cache=...) leaves args.teacher_cache unset: the banner names the cache it opened."""
    from types import SimpleNamespace

    from hfkd.training.callbacks import start_banner

    trainer = SimpleNamespace(
        args=SimpleNamespace(teacher_dtype=None, teacher_cache=None, output_dir="out", crops_per_image=1,
                           per_device_train_batch_size=2),
        accelerator=SimpleNamespace(mixed_precision="no", device="cpu", num_processes=1),
        state=SimpleNamespace(num_epochs=1, max_steps=2, global_step=0), steps_per_epoch=2, _streamed=False,
        dataset_info={"id": "hfkd/digits"}, eval_dataset=None, train_dataset=[0] * 4,
        method=SimpleNamespace(name="kd"), teachers=[], teacher_cache=SimpleNamespace(source="org/soft-labels"),
        student=SimpleNamespace(name="test_resnet", num_parameters=lambda: 10, label_names=None, num_classes=10),
        label_column="label", label_source=lambda: None)
    banner = start_banner(trainer)
    assert "teachers: teacher cache org/soft-labels" in banner and "None" not in banner
