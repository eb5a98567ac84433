"""Run a script in 2 CPU processes with real DDP (gloo), from inside pytest.

torchrun in a subprocess, not a fork: forking a pytest process that already ran
multi-threaded torch deadlocks (docs/launch.md, "Testing").
"""
import os
import subprocess
import sys


def run_two_processes(script: str, *args: str, timeout: int = 300, env=None, check: bool = True
                      ) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment.update({"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GLOO_SOCKET_IFNAME": "lo",
                        "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                       environment.get("PYTHONPATH", "")])})
    environment.update(env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    proc = subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"2-process run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc
