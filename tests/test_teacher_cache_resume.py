"""Teacher-cache generation is resumable (issue 23): killed midway, the same call keeps the finished views,
computes the others, and the cache is bitwise the uninterrupted one."""
import os
import subprocess
import sys

import pytest
import torch

from hfkd.cache.generate import PLAN_FILE
from hfkd.files import sha256

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TESTS, "scripts"))
from cache_killed import generate  # noqa: E402  (the generation the killed script runs)
from helpers.models import tiny_student, tiny_teacher  # noqa: E402

SCRIPT = os.path.join(TESTS, "scripts", "cache_killed.py")


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
