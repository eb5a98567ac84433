"""FSDP (issue 23): a launch that asks for FSDP and gets something else from Accelerate is refused up front.

Accelerate shards only on GPUs; on CPU processes `accelerate launch --use_fsdp` silently prepares DDP.
"""
import os
import subprocess
import sys

import pytest
from accelerate.utils import DistributedType

from hfkd import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Acc:
    def __init__(self, distributed_type, processes=2):
        self.distributed_type, self.num_processes = distributed_type, processes


@pytest.mark.parametrize("chosen", [DistributedType.MULTI_CPU, DistributedType.NO, DistributedType.MULTI_GPU])
def test_fsdp_asked_but_not_run_is_refused(monkeypatch, chosen):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match=f"Accelerate runs {chosen.value} on 2 process.*drop --use_fsdp"):
        launch.check_fsdp(_Acc(chosen))


def test_fsdp_run_or_not_asked_passes(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    launch.check_fsdp(_Acc(DistributedType.FSDP))
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    launch.check_fsdp(_Acc(DistributedType.MULTI_CPU))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    launch.check_fsdp(_Acc(DistributedType.MULTI_CPU))


@pytest.mark.slow
def test_accelerate_launch_use_fsdp_on_cpu_is_refused_before_training(tmp_path):
    """The real launcher: 2 CPU processes with --use_fsdp --fsdp_version 2 (Accelerate would prepare DDP)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               GLOO_SOCKET_IFNAME="lo", HFKD_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(ROOT, "tests", "scripts", "fsdp_asked.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--use_fsdp", "--fsdp_version", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", script, str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert "PREPARED" not in proc.stdout, proc.stdout  # before the fix: "PREPARED MULTI_CPU DistributedDataParallel"
    assert proc.returncode != 0
    assert "Accelerate runs MULTI_CPU on 2 process(es)" in proc.stderr, proc.stderr[-4000:]
