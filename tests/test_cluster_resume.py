"""Resuming on a cluster, in one process: positions a method's own batches cannot reproduce are refused,
a requeued job resumes into its folder past its old lock, and teacher-cache generation stops on a signal."""
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import run_args
from helpers.models import tiny_student
from hfkd import DistillationTrainer, cache_teacher_outputs, create_backbone
from hfkd.output_dir import LOCK_FILE, OutputDirLocked
from hfkd.preemption import Preempted


def _train(digits, out, method, batch_size, resume=False, allow=(), seen=None, **kw):
    args = run_args(out, per_device_train_batch_size=batch_size, num_train_epochs=1, save_strategy="steps",
                    save_steps=1, resume_from_checkpoint="latest" if resume else None,
                    resume_allow_changes=list(allow), seed=0, **kw)
    trainer = DistillationTrainer(tiny_student(), method=method, args=args, train_dataset=digits.train.select(range(32)))
    if seen is not None:
        prepare = trainer.method.prepare_batch

        def recording(batch):
            seen.update(batch["index"].tolist())
            return prepare(batch)
        trainer.method.prepare_batch = recording
    return trainer


def test_a_position_a_methods_own_batches_cannot_reproduce_is_refused(tmp_path, digits):
    # 1 step of 4 images: 4 samples into the epoch; BAKE's class-aware batches of 8 cannot start there.
    _train(digits, tmp_path / "bake", "bake", 4, max_steps=1).train()
    resumed = _train(digits, tmp_path / "bake", "bake", 8, resume=True,
                     allow=["per_device_train_batch_size", "max_steps"])
    with pytest.raises(ValueError, match=r"stopped 4 samples into epoch 0.*'bake' draws its own batches"):
        resumed.train()


def test_the_default_order_continues_at_the_exact_sample_with_another_batch_size(tmp_path, digits):
    seen = collections.Counter()
    _train(digits, tmp_path / "kd", "pskd", 4, max_steps=1, seen=seen).train()
    resumed = _train(digits, tmp_path / "kd", "pskd", 8, resume=True, allow=["per_device_train_batch_size", "max_steps"],
                     seen=seen)
    resumed.train()
    assert sorted(seen) == list(range(32)) and set(seen.values()) == {1}, seen  # 4 + 28 samples, each once
    assert resumed.state.epoch == 1 and resumed.method.seen.all()  # the PS-KD bank carried over and is complete


def _lock(folder, pid, job_id):
    record = {"pid": pid, "host": socket.gethostname(), "start": time.time(), "job_id": job_id}
    (folder / LOCK_FILE).write_text(json.dumps(record))


def test_a_requeued_job_resumes_into_its_folder_while_its_old_lock_is_there(tmp_path, digits, monkeypatch):
    for name in ("HFKD_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    out = tmp_path / "run"
    first = _train(digits, out, "pskd", 8, max_steps=2)
    first.train()
    first.output_lock.release()
    # The job's first run lives on as another process (as on the node the scheduler took back).
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, old.pid, "4242")
        monkeypatch.setenv("SLURM_JOB_ID", "5151")
        with pytest.raises(OutputDirLocked):  # another job: its run may be alive
            _train(digits, out, "pskd", 8, resume=True, allow=["max_steps"], max_steps=3)
        monkeypatch.setenv("SLURM_JOB_ID", "4242")
        requeued = _train(digits, out, "pskd", 8, resume=True, allow=["max_steps"], max_steps=3)  # the same job, requeued
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert requeued.train().global_step == 3
    finally:
        old.kill()
        old.wait()


def test_teacher_cache_generation_stops_at_a_signal_and_the_same_call_continues(tmp_path, digits):
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    forward = teacher.forward

    def signalled_forward(*a, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # only sets the flag: generation stops before the next batch
        return forward(*a, **kw)
    teacher.forward = signalled_forward
    out = tmp_path / "cache"
    with pytest.raises(Preempted) as stop:
        cache_teacher_outputs([teacher], digits.train.select(range(32)), str(out), student=tiny_student(),
                              batch_size=8)
    assert stop.value.code == 143
    assert not os.path.exists(out)  # no cache appears before it is complete
    assert not [n for n in os.listdir(str(out) + ".partial") if n.startswith("rank")]  # no view was finished
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    teacher.forward = forward
    assert os.path.isdir(cache_teacher_outputs([teacher], digits.train.select(range(32)), str(out),
                                               student=tiny_student(), batch_size=8))
    assert not os.path.exists(str(out) + ".partial")


@pytest.mark.parametrize("processes,start", [(1, 0), (1, 3), (2, 8), (2, 12), (3, 5), (4, 25)])
def test_the_rest_of_an_epoch_is_shared_out_without_a_gap_or_a_repeat(processes, start):
    from hfkd.data.samplers import RemainingEpochBatchSampler

    order = list(range(100, 130))  # 30 samples
    shards = [list(RemainingEpochBatchSampler(order, start, 4, processes, rank)) for rank in range(processes)]
    assert len({len(s) for s in shards}) == 1, "every process must take part in every step"
    assert all(len(s) == len(RemainingEpochBatchSampler(order, start, 4, processes, 0)) for s in shards)
    seen = [i for step in zip(*shards) for batch in step for i in batch]
    tail = (len(order) - start) % (4 * processes)
    if tail == 0 or tail >= processes:
        assert seen == order[start:], "each remaining sample once, in the global order"
    else:  # fewer samples in the last step than processes: the processes without one repeat the last sample
        assert seen[:len(order) - start] == order[start:] and set(seen[len(order) - start:]) == {order[-1]}
        assert len(seen) - (len(order) - start) == processes - tail
    kept = [i for step in zip(*(RemainingEpochBatchSampler(order, start, 4, processes, r, drop_last=True)
                                for r in range(processes))) for batch in step for i in batch]
    assert kept == order[start:start + (len(order) - start) // (4 * processes) * 4 * processes]


def test_a_tail_shorter_than_the_processes_repeats_only_what_it_must():
    from hfkd.data.samplers import RemainingEpochBatchSampler

    shards = [list(RemainingEpochBatchSampler(list(range(10)), 9, 4, 2, rank)) for rank in range(2)]
    assert shards == [[[9]], [[9]]]  # one sample left, two processes: both must step
