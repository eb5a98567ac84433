"""Preemption: a signal writes a checkpoint at the next step boundary and exits with 128 + its number.

The end-to-end runs start ``tests/scripts/preempt_run.py`` (64 digits, PS-KD, batch 8, 2 epochs = 16 steps
on one process) in a subprocess that signals itself; multi-process runs are in test_preemption_ddp.py.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from hfkd.preemption import Preempted, Preemption, exit_code
from hfkd.training.checkpoint import verify_checkpoint

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "preempt_run.py")


def run_script(out_dir, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, SCRIPT, str(out_dir), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def student_weights(out_dir):
    return load_file(os.path.join(str(out_dir), "run", "student", "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def checkpoints(out_dir):
    return sorted(n for n in os.listdir(os.path.join(str(out_dir), "run")) if n.startswith("checkpoint-"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run_script(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return student_weights(out)


def test_a_signal_only_sets_a_flag_that_is_agreed_and_gives_the_exit_code():
    before = signal.getsignal(signal.SIGUSR1)
    with Preemption() as preemption:
        assert not preemption.requested()
        os.kill(os.getpid(), signal.SIGUSR1)  # the process is not ended: the handler only sets the flag
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
        assert preemption.requested()
        stop = preemption.stop("out/checkpoint-5")
    assert isinstance(stop, Preempted) and isinstance(stop, SystemExit)
    assert stop.code == exit_code(signal.SIGUSR1) == 138
    assert "SIGUSR1" in str(stop) and "checkpoint-5" in str(stop)
    assert signal.getsignal(signal.SIGUSR1) is before  # handlers are given back
    assert exit_code(signal.SIGTERM) == 143 and exit_code(signal.SIGINT) == 130


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT", "SIGUSR1"])
def test_a_signal_writes_a_checkpoint_at_the_step_reached_and_resuming_is_bitwise(tmp_path, reference, signame):
    signum = getattr(signal, signame)
    stopped = run_script(tmp_path, "--signal", signame, "--at", "5")  # no periodic checkpoint (save_steps=1000)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert checkpoints(tmp_path) == ["checkpoint-5"]
    verify_checkpoint(str(tmp_path / "run" / "checkpoint-5"))
    state = json.loads((tmp_path / "run" / "checkpoint-5" / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["samples_in_epoch"]) == (5, 0, 40)
    if signum != signal.SIGTERM:
        return  # resuming is the same for every signal: once is enough
    resumed = run_script(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "DONE 16 1" in resumed.stdout
    assert same_weights(student_weights(tmp_path), reference), "the resumed run differs from the uninterrupted one"


@pytest.mark.slow
def test_more_signals_during_the_save_do_not_disturb_it(tmp_path, reference):
    stopped = run_script(tmp_path, "--at", "6", "--again")  # SIGTERM, then SIGTERM and SIGINT inside the save
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert checkpoints(tmp_path) == ["checkpoint-6"]
    verify_checkpoint(str(tmp_path / "run" / "checkpoint-6"))
    assert not [n for n in os.listdir(tmp_path / "run") if n.startswith(".tmp")]
    resumed = run_script(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(student_weights(tmp_path), reference)


@pytest.mark.slow
def test_a_signal_during_evaluation_stops_it_and_checkpoints(tmp_path, reference):
    stopped = run_script(tmp_path, "--at", "4", "--in_eval")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert checkpoints(tmp_path) == ["checkpoint-4"]
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert not [e for e in state["log_history"] if "eval_accuracy" in e]  # the interrupted evaluation is not logged
    resumed = run_script(tmp_path, "--resume", "--in_eval")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(student_weights(tmp_path), reference)  # evaluation does not change the trajectory
