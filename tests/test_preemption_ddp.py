"""Preemption and resume across numbers of processes and machines (2 CPU processes, gloo).

The run is ``tests/scripts/preempt_run.py``: PS-KD on 64 digits, batch 8 per process, 2 epochs.  Counting
the dataset indices every process trained on in each epoch shows that a resumed run neither skips nor
repeats a sample, also when the checkpoint was written by another number of processes.
"""
import collections
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from hfkd.training.checkpoint import verify_checkpoint
from test_preemption import SCRIPT, checkpoints, run_script, same_weights, student_weights


def two_processes(out_dir, *args, check=True):
    from helpers.launch import run_two_processes

    return run_two_processes(SCRIPT, str(out_dir), *args, check=check)


def samples_per_epoch(out_dir):
    """{epoch: Counter(dataset index -> times trained)} over every process of every run in ``out_dir``."""
    counts = collections.defaultdict(collections.Counter)
    for name in os.listdir(out_dir):
        if name.startswith("seen-"):
            for batch in json.loads((out_dir / name).read_text()):
                counts[batch["epoch"]].update(batch["index"])
    return counts


def assert_each_sample_once(out_dir):
    counts = samples_per_epoch(out_dir)
    assert sorted(counts) == [0, 1]
    for epoch, seen in counts.items():
        assert sorted(seen) == list(range(64)), f"epoch {epoch}: samples never trained on"
        repeated = {i: n for i, n in seen.items() if n != 1}
        assert not repeated, f"epoch {epoch}: samples trained on more than once {repeated}"


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    two_processes(out)
    return student_weights(out)


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_one_checkpoint_and_resumes(tmp_path, two_process_reference):
    """Only rank 1 gets SIGTERM; the all-reduce makes rank 0 stop at the same step; 2 -> 2 is bitwise, 2 -> 1 exact."""
    stopped = two_processes(tmp_path, "--at", "3", "--ranks", "1", "--tag", "first", check=False)
    assert stopped.returncode != 0
    for rank in (0, 1):  # both processes stopped at step 3 with the code of SIGTERM, after the save
        assert json.loads((tmp_path / f"exit-first-rank{rank}.json").read_text()) == {"code": 143, "step": 3}, \
            stopped.stderr[-4000:]
    assert checkpoints(tmp_path) == ["checkpoint-3"]
    verify_checkpoint(str(tmp_path / "run" / "checkpoint-3"))
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())
    assert (state["epoch"], state["samples_in_epoch"]) == (0, 48)
    one = tmp_path / "on_one_process"
    shutil.copytree(tmp_path, one)

    two_processes(tmp_path, "--resume", "--tag", "second")
    assert same_weights(student_weights(tmp_path), two_process_reference)
    assert_each_sample_once(tmp_path)

    resumed = run_script(one, "--resume", "--allow", "world_size", "--tag", "second")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_each_sample_once(one)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_at_the_exact_sample(tmp_path):
    """Checkpoint after 3 batches of 8 (24 samples): not a whole number of 2-process steps (16 samples)."""
    stopped = run_script(tmp_path, "--at", "3", "--tag", "first")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint-3" / "trainer_state.json").read_text())
    assert (state["epoch"], state["samples_in_epoch"]) == (0, 24)
    proc = two_processes(tmp_path, "--resume", "--allow", "world_size", "--tag", "second")
    assert "DONE 10 2" in proc.stdout  # 3 steps on 1 process, 3 to end epoch 0 on 2, 4 for epoch 1
    assert_each_sample_once(tmp_path)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_machines_of_one_process_train_bitwise_like_two_processes_on_one(tmp_path, two_process_reference):
    """accelerate launch --num_machines 2 on one host (rendezvous on 127.0.0.1, gloo)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               # One thread per process, as in the reference: more threads sum convolutions in another order.
               HFKD_KEEP_LAUNCHER_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           os.environ.get("PYTHONPATH", "")]))
    port = str(_free_port())
    machines = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--machine_rank",
         str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port,
         "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT, str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = []
    try:
        for machine in machines:
            outputs.append(machine.communicate(timeout=300))
    finally:
        for machine in machines:
            if machine.poll() is None:
                machine.kill()
    for machine, (out, err) in zip(machines, outputs):
        assert machine.returncode == 0, err[-4000:]
    assert "DONE 8 2" in outputs[0][0]  # the script prints from the main process only (machine rank 0)
    assert same_weights(student_weights(tmp_path), two_process_reference)
    assert_each_sample_once(tmp_path)
