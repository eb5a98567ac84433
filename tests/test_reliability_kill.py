"""kill -9 at chosen moments, then resume with "latest": the final student is bitwise the uninterrupted one."""
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "kill_resume.py")


def _run(out_dir, kill_point="none", resume="latest"):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, SCRIPT, str(out_dir), kill_point, resume], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out / "student" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", ["step:3", "checkpoint_state:4", "checkpoint_manifest:6", "save_write",
                                        "save_swap"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, reference, kill_point):
    killed = _run(tmp_path, kill_point)
    assert killed.returncode == -9, f"the run was not killed at {kill_point}: {killed.stderr[-2000:]}"
    assert not os.path.exists(tmp_path / "student" / "model.safetensors")  # never a half-written save
    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "DONE 8" in resumed.stdout
    weights = load_file(str(tmp_path / "student" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert all((weights[k] == reference[k]).all() for k in reference), "resumed weights differ from the reference"
    # what the killed writer left is gone; only complete checkpoints and the student remain
    leftovers = [n for d in (tmp_path, tmp_path / "run") for n in os.listdir(d) if n.startswith(".")]
    assert not leftovers, leftovers
