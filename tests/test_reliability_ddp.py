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
