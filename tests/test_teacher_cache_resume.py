"""Teacher-cache generation is resumable (issue 23): killed midway, the same call keeps the finished shards,
computes the others, and the cache is bitwise the uninterrupted one, also on another number of processes."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from helpers.launch import run_two_processes
from helpers.models import tiny_student, tiny_teacher
from hfkd.cache.generate import PLAN_FILE
from hfkd.files import sha256

TESTS = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(TESTS, "scripts", "cache_killed.py")
_spec = importlib.util.spec_from_file_location("cache_killed", SCRIPT)
_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_script)
generate = _script.generate  # the very generation the killed script runs
SHARD = "data/data-{:05d}-of-00006.arrow"


def _files(folder):
    """Every file of a cache (but its card) with its sha256."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != "README.md":
                path = os.path.join(root, name)
                out[os.path.relpath(path, folder)] = sha256(path)
    return out


def _counted_teacher():
    teacher, calls = tiny_teacher(), [0]
    forward = teacher.forward

    def counted(*a, **kw):
        calls[0] += 1
        return forward(*a, **kw)
    teacher.forward = counted
    return teacher, calls


def _left(out):
    partial = out + ".partial"
    return {f for f in _files(partial) if f.startswith("data/")}


@pytest.mark.slow
def test_a_killed_generation_continues_to_the_bitwise_same_cache(tmp_path):
    reference = generate(str(tmp_path / "reference"), tiny_teacher(), tiny_student())
    shards = sorted(f for f in _files(reference) if f.startswith("data/"))
    assert shards == [SHARD.format(k) for k in range(6)], shards  # several size-capped shards
    assert all(os.path.getsize(os.path.join(reference, f)) <= _script.SHARD_CAP for f in shards)
    out = str(tmp_path / "cache")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HFKD_CACHE=str(tmp_path / "hfkd"),
               PYTHONPATH=os.pathsep.join([os.path.dirname(TESTS), TESTS, os.environ.get("PYTHONPATH", "")]))
    # 2 teacher calls per shard: the 7th is in shard 3, after shards 0-2 were written
    killed = subprocess.run([sys.executable, SCRIPT, out, "7"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(out)
    assert PLAN_FILE in os.listdir(out + ".partial")
    assert _left(out) == {SHARD.format(k) for k in range(3)}

    teacher, calls = _counted_teacher()
    generate(out, teacher, tiny_student())
    assert calls[0] == 6, "shards 0-2 were kept, shards 3-5 computed (2 calls each)"
    assert _files(out) == _files(reference)  # every shard and the manifest, bitwise
    assert not os.path.exists(out + ".partial")


@pytest.mark.slow
def test_two_processes_killed_midway_continue_on_two_or_one_process_to_the_one_process_cache(tmp_path):
    """Rank 1 killed in its 2nd shard (torchrun ends rank 0, which polls with it after every batch): the first
    shard of each rank is kept, on 2 processes as on 1."""
    env = {"HFKD_CACHE": str(tmp_path / "hfkd")}
    reference = _files(generate(str(tmp_path / "reference"), tiny_teacher(), tiny_student()))
    for resumed_on in (2, 1):
        out = str(tmp_path / f"cache{resumed_on}")
        # 6 shards: rank 0 takes 0-2, rank 1 takes 3-5, 2 teacher calls each; rank 1's 3rd call is in shard 4
        killed = run_two_processes(SCRIPT, out, "3", "1", env=env, check=False)
        assert killed.returncode != 0 and not os.path.exists(out)
        assert _left(out) == {SHARD.format(0), SHARD.format(3)}, killed.stderr[-3000:]
        if resumed_on == 2:
            resumed = run_two_processes(SCRIPT, out, "0", env=env)
            assert "CALLS rank 0: 4" in resumed.stdout and "CALLS rank 1: 4" in resumed.stdout, resumed.stdout[-2000:]
        else:  # was: the stopped generation's shards removed, everything computed again
            teacher, calls = _counted_teacher()
            generate(out, teacher, tiny_student())
            assert calls[0] == 8, "shards 0 and 3 kept, the other 4 computed"
        assert _files(out) == reference


def test_a_stopped_generation_of_other_teacher_weights_starts_again(tmp_path, monkeypatch):
    """The same command with a retrained teacher (same name, other weights) must not reuse the stopped shards."""
    from hfkd.cache import generate as generation

    out = str(tmp_path / "cache")
    real = generation._write_shard

    def stop_at_shard_1(path, columns):
        if path.endswith(SHARD.format(1)):
            raise KeyboardInterrupt  # not an Exception: no clean-up, the stage stays as after a kill
        return real(path, columns)
    monkeypatch.setattr(generation, "_write_shard", stop_at_shard_1)
    with pytest.raises(KeyboardInterrupt):
        generate(out, tiny_teacher(), tiny_student())
    assert _left(out) == {SHARD.format(0)}
    monkeypatch.setattr(generation, "_write_shard", real)

    retrained, calls = _counted_teacher()
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.01)
    generate(out, retrained, tiny_student())
    assert calls[0] == 12, "all 6 shards computed again with the retrained teacher"
    twin = tiny_teacher()
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01)
    assert _files(out) == _files(generate(str(tmp_path / "reference"), twin, tiny_student()))
