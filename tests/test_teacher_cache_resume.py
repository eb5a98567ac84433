"""Teacher-cache generation is resumable (issue 23): killed midway, the same call keeps the finished views,
computes the others, and the cache is bitwise the uninterrupted one."""
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


@pytest.mark.slow
def test_a_killed_generation_continues_to_the_bitwise_same_cache(tmp_path):
    reference = generate(str(tmp_path / "reference"), tiny_teacher(), tiny_student())
    out = str(tmp_path / "cache")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HFKD_CACHE=str(tmp_path / "hfkd"),
               PYTHONPATH=os.pathsep.join([os.path.dirname(TESTS), TESTS, os.environ.get("PYTHONPATH", "")]))
    # 4 teacher calls per view: the 7th is in view 1, after view 0's shard was written
    killed = subprocess.run([sys.executable, SCRIPT, out, "7"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(out)
    partial = out + ".partial"
    left = os.listdir(partial)
    assert PLAN_FILE in left and "rank00000-view00000" in left and "rank00000-view00001" not in left, left

    teacher, calls = _counted_teacher()
    generate(out, teacher, tiny_student())
    assert calls[0] == 8, "view 0 was kept, views 1 and 2 computed (4 calls each)"
    assert _files(out) == _files(reference)
    assert not os.path.exists(partial)


@pytest.mark.slow
def test_two_processes_killed_midway_continue_to_the_one_process_cache(tmp_path):
    """Rank 1 killed in view 1 (torchrun ends rank 0): both ranks' view-0 shards are kept, the rest computed."""
    out = str(tmp_path / "cache")
    env = {"HFKD_CACHE": str(tmp_path / "hfkd")}
    # 16 images per process, batch 8: 2 teacher calls per view; rank 1's 3rd call is in view 1
    killed = run_two_processes(SCRIPT, out, "3", "1", env=env, check=False)
    assert killed.returncode != 0 and not os.path.exists(out)
    left = os.listdir(out + ".partial")
    assert {"rank00000-view00000", "rank00001-view00000"} <= set(left) and "rank00001-view00001" not in left, left
    resumed = run_two_processes(SCRIPT, out, "0", env=env)
    assert "CALLS rank 0: 4" in resumed.stdout and "CALLS rank 1: 4" in resumed.stdout, resumed.stdout[-2000:]
    reference = _files(generate(str(tmp_path / "reference"), tiny_teacher(), tiny_student()))
    # The rows bitwise; state.json (and the manifest holding its hash) carries datasets' fingerprint of how
    # the shards were merged, which differs between 1 and 2 processes also without a kill.
    data = {k: v for k, v in _files(out).items() if k.endswith(".arrow")}
    assert data and data == {k: v for k, v in reference.items() if k.endswith(".arrow")}


def test_a_stopped_generation_of_other_teacher_weights_starts_again(tmp_path, monkeypatch):
    """The same command with a retrained teacher (same name, other weights) must not reuse the stopped shards."""
    from hfkd.cache import generate as generation

    out = str(tmp_path / "cache")
    real = generation._teacher_view

    def stop_at_view_1(*a, **kw):
        if a[6] == 1:  # the view
            raise KeyboardInterrupt  # not an Exception: no clean-up, the stage stays as after a kill
        return real(*a, **kw)
    monkeypatch.setattr(generation, "_teacher_view", stop_at_view_1)
    with pytest.raises(KeyboardInterrupt):
        generate(out, tiny_teacher(), tiny_student())
    assert os.path.isdir(os.path.join(out + ".partial", "rank00000-view00000"))
    monkeypatch.setattr(generation, "_teacher_view", real)

    retrained, calls = _counted_teacher()
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.01)
    generate(out, retrained, tiny_student())
    assert calls[0] == 12, "all 3 views computed again with the retrained teacher"
    twin = tiny_teacher()
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01)
    assert _files(out) == _files(generate(str(tmp_path / "reference"), twin, tiny_student()))
