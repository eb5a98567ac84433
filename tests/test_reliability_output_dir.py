"""The output folder, end to end with the trainer: a second live run is refused, a folder that cannot take the
run is refused before the first step (with checkpoints off too)."""
import errno
import logging
import os
import subprocess
import sys

import pytest

import hfkd.output_dir as output_dir_module
from conftest import run_args
from hfkd import DistillationTrainer
from helpers.models import tiny_student

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "hold_output_dir.py")


def _trainer(out, data, **overrides):
    return DistillationTrainer(tiny_student(), method="supervised", args=run_args(out, **overrides),
                               train_dataset=data.train.select(range(64)))


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_lives(tmp_path, small_digits, caplog):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, SCRIPT, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []  # the run prints its banner and progress before "ready"
        while not lines or lines[-1] not in ("ready", ""):
            lines.append(first.stdout.readline().strip() if len(lines) < 200 else "")
        assert lines[-1] == "ready", f"the first run did not start: {lines[-5:]}"
        checkpoint = out / "checkpoint-2"
        before = {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()}
        # seed 2, saving every 3 steps and keeping one checkpoint: its rotation would delete checkpoint-2
        for resume in (None, "latest"):
            with pytest.raises(FileExistsError, match=f"in use by another run \\(pid {first.pid} on "):
                _trainer(out, small_digits, seed=2, max_steps=3, save_strategy="steps", save_steps=3,
                         save_total_limit=1, resume_from_checkpoint=resume)
        assert {p.name: p.stat().st_mtime_ns for p in checkpoint.iterdir()} == before
    finally:
        first.kill()
        first.wait()
    # the first run is gone (killed: its lock stays behind, stale): the folder is free again, its checkpoint kept
    with pytest.raises(FileExistsError, match="holds an earlier run \\(checkpoint-2\\)"):
        _trainer(out, small_digits, seed=2, max_steps=3)
    with caplog.at_level(logging.WARNING):
        trainer = _trainer(out, small_digits, max_steps=3, resume_from_checkpoint="latest")
    assert any(f"its process {first.pid} on this host is gone" in r.getMessage() for r in caplog.records)
    trainer.output_lock.release()


@pytest.mark.parametrize("save_strategy", ["no", "steps"])
def test_an_output_dir_that_is_a_file_is_refused_before_the_first_step(tmp_path, small_digits, save_strategy):
    out = tmp_path / "run"
    out.write_text("a file")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        _trainer(out, small_digits, max_steps=5, save_strategy=save_strategy, save_steps=5)
    assert out.read_text() == "a file"


@pytest.mark.parametrize("save_strategy", ["no", "steps"])
@pytest.mark.parametrize("how", ["permissions", "read-only mount"])
def test_a_read_only_output_dir_is_refused_before_the_first_step(tmp_path, small_digits, monkeypatch, save_strategy,
                                                                 how):
    out = tmp_path / "run"
    out.mkdir()
    if how == "permissions":
        # root writes into a 0555 folder anyway, so the system's answer for it is simulated where it is asked
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(out) else access(p, mode))
        expected = f"{out} is not writable by this user"
    else:
        def read_only(*args, dir=None, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(output_dir_module.tempfile, "TemporaryFile", read_only)
        expected = f"{out} refuses new files \\(Read-only file system\\)"
    with pytest.raises(FileExistsError, match=expected):
        _trainer(out, small_digits, max_steps=5, save_strategy=save_strategy, save_steps=5)
    assert os.listdir(out) == []
