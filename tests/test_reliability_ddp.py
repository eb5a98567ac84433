"""Multi-process: the results table is printed and written by the main process only."""
import json
import os

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after", "before"])
def test_results_are_written_once(tmp_path, when):
    """Once, by rank 0, whether Accelerate's state was set up by the run (after) or not yet (before)."""
    from helpers.launch import run_two_processes

    proc = run_two_processes(os.path.join(os.path.dirname(__file__), "scripts", "results_ddp.py"), str(tmp_path),
                             when)
    assert proc.stdout.count("RESULTS-TABLE") == 1, proc.stdout
    assert json.loads((tmp_path / "results.json").read_text()) == [{"rank": 0}]


@pytest.mark.slow
def test_a_checkpoint_waits_for_every_process_to_write_its_part(tmp_path):
    """Rank 1 starts writing its random states a second late (tests/scripts/checkpoint_slow_rank.py, DDP).

    Before, the main process listed and renamed the folder without waiting: rank 1's random states were missing
    from the checkpoint (under FSDP, where every process writes shards, rank 1 failed: "Parent directory
    .tmp-checkpoint-3 does not exist")."""
    from helpers.launch import run_two_processes
    from hfkd.training.checkpoint import verify_checkpoint

    run_two_processes(os.path.join(os.path.dirname(__file__), "scripts", "checkpoint_slow_rank.py"), str(tmp_path))
    for step in (1, 2):
        path = tmp_path / "run" / f"checkpoint-{step}"
        verify_checkpoint(str(path))
        assert "random_states_1.pkl" in json.loads((path / "checkpoint_manifest.json").read_text())["files"]
    assert not [p for p in os.listdir(tmp_path / "run") if p.startswith(".tmp-")]
