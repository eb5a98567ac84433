"""Multi-process: the results table is printed and written by the main process only."""
import json
import os

import pytest


@pytest.mark.slow
def test_results_are_written_once(tmp_path):
    from helpers.launch import run_two_processes

    proc = run_two_processes(os.path.join(os.path.dirname(__file__), "scripts", "results_ddp.py"), str(tmp_path))
    assert proc.stdout.count("RESULTS-TABLE") == 1, proc.stdout
    assert json.loads((tmp_path / "results.json").read_text()) == [{"rank": 0}]


def test_results_follow_the_launcher_rank_before_accelerate_starts(tmp_path, monkeypatch, capsys):
    from hfkd.pipeline import write_results

    monkeypatch.setenv("RANK", "1")
    write_results(str(tmp_path), "TABLE", [])
    assert "TABLE" not in capsys.readouterr().out and not os.listdir(tmp_path)
