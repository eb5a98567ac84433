"""The one output-folder check and lock (hfkd/output_dir.py) that the trainer and the commands use."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from hfkd.output_dir import (LOCK_FILE, OutputDirError, OutputDirLock, OutputDirLocked, check_output_dir,
                             remove_run_outputs, run_outputs)


def _fake_checkpoint(folder, step):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    return path


def _fake_student(folder):
    path = folder / "student"
    path.mkdir(parents=True)
    (path / "hfkd.json").write_text("{}")
    (path / ".hfkd-files.json").write_text(json.dumps({"files": ["hfkd.json"]}))
    return path


def _write_lock(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(), "job_id": None, **holder}
    (folder / LOCK_FILE).write_text(json.dumps(record))


def test_an_earlier_run_is_refused_with_the_ways_out(tmp_path):
    _fake_checkpoint(tmp_path, 4)
    with pytest.raises(OutputDirError) as e:
        check_output_dir(str(tmp_path))
    for way_out in ("new output_dir", "--resume_from_checkpoint latest", "--overwrite_output_dir", "checkpoint-4"):
        assert way_out in str(e.value)
    check_output_dir(str(tmp_path), resume=True)
    check_output_dir(str(tmp_path), overwrite=True)


def test_nested_outputs_are_found_only_when_asked(tmp_path):
    _fake_student(tmp_path / "baseline")
    check_output_dir(str(tmp_path))  # a trainer writing into tmp_path does not touch baseline/
    with pytest.raises(OutputDirError, match="baseline/student"):
        check_output_dir(str(tmp_path), nested=True)


def test_a_file_and_an_unwritable_parent_are_refused(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.write_text("not a folder")
    with pytest.raises(OutputDirError, match="not a folder"):
        check_output_dir(str(target))
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    # root may write into a 0555 folder, so the folder's refusal by the system is simulated where it is asked
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(read_only) else real_access(p, mode))
    with pytest.raises(OutputDirError, match=f"{read_only} is not writable"):
        check_output_dir(str(read_only / "run" / "deeper"))


def test_overwrite_removes_only_hfkds_own_outputs(tmp_path):
    checkpoint = _fake_checkpoint(tmp_path, 2)
    student = _fake_student(tmp_path)
    kept = _fake_student(tmp_path / "other")
    (kept / "notes.txt").write_text("the user's")  # a file the save did not write: the folder stays
    user_file = tmp_path / "my_notes.txt"
    user_file.write_text("mine")
    removed = remove_run_outputs(str(tmp_path), nested=True)
    assert sorted(removed) == sorted([str(checkpoint), str(student)])
    assert user_file.exists() and (kept / "notes.txt").exists()
    assert run_outputs(str(tmp_path), nested=True)["students"] == [str(kept)]


def test_a_live_run_holds_the_folder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=holder.pid)
        with pytest.raises(OutputDirLocked, match=f"pid {holder.pid}"):
            check_output_dir(str(tmp_path))
        with pytest.raises(OutputDirLocked):
            OutputDirLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    # its process is gone on this host: the lock is stale and is taken over
    lock = OutputDirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_requeued_job_takes_its_own_lock_from_another_host(tmp_path, monkeypatch):
    _write_lock(tmp_path, pid=1, host="another-node", job_id="4242")
    with pytest.raises(OutputDirLocked, match="job 4242"):
        OutputDirLock(str(tmp_path)).acquire()  # not this job: the other host's run may live
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    lock = OutputDirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["job_id"] == "4242"
    lock.release()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    outer = OutputDirLock(str(tmp_path)).acquire()
    inner = OutputDirLock(str(tmp_path)).acquire()
    check_output_dir(str(tmp_path))  # our own lock does not refuse us
    inner.release()
    assert (tmp_path / LOCK_FILE).exists()
    outer.release()
    assert not (tmp_path / LOCK_FILE).exists()


_TAKER = """
import os, sys, time
import hfkd.output_dir as od
folder, go = sys.argv[1], sys.argv[2]
warning = od.logger.warning
def slow_warning(*args, **kwargs):  # widens the moment between finding the lock stale and replacing it
    warning(*args, **kwargs)
    time.sleep(1.0)
od.logger.warning = slow_warning
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
try:
    od.OutputDirLock(folder).acquire()
    print("took", flush=True)
except od.OutputDirLocked:
    print("refused", flush=True)
time.sleep(4)  # alive while the others try
"""


@pytest.mark.slow
def test_runs_starting_together_on_a_stale_lock_take_it_one_at_a_time(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    _write_lock(tmp_path, pid=dead)  # a killed run's lock: every new run may take it over, but only one may win
    go = tmp_path / "go"
    takers = [subprocess.Popen([sys.executable, "-c", _TAKER, str(tmp_path), str(go)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    try:
        assert [p.stdout.readline().strip() for p in takers] == ["ready"] * 2
        go.write_text("")  # both try at once
        answers = {p.pid: p.stdout.readline().strip() for p in takers}
    finally:
        for p in takers:
            p.kill()
            p.wait()
    assert sorted(answers.values()) == ["refused", "took"]
    winner = [pid for pid, answer in answers.items() if answer == "took"]
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == winner[0]


def test_taking_the_lock_never_writes_through_a_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / f"{LOCK_FILE}.{os.getpid()}.tmp").symlink_to(outside)
    lock = OutputDirLock(str(run)).acquire()
    assert outside.read_text() == "mine"
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert sorted(os.listdir(run)) == []
