"""Security cases of issue 21: no token in anything written, escaped card text, no remote code, no pickles."""
import json
import os

import pytest
import torch

from conftest import FAKE_TOKEN, run_args
from hfkd import DistillationTrainer, create_backbone


def _student():
    torch.manual_seed(0)
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)


def _files_holding(folder, needle: str):
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            path = os.path.join(root, name)
            if needle in name or (os.path.isfile(path) and needle.encode() in open(path, "rb").read()):
                found.append(os.path.relpath(path, folder))
    return found


# -- redaction of everything written --------------------------------------------------------------
def test_a_token_in_an_argument_is_in_no_file_written(tmp_path, small_digits, monkeypatch):
    """run_name holding a token: the checkpoints, the lineage, the card and the trackers' config never hold it."""
    args = run_args(tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=1,
                    run_name=f"exp-{FAKE_TOKEN}", report_to=["tensorboard"])
    trainer = DistillationTrainer(_student(), method="supervised", args=args, train_dataset=small_digits.train,
                                  eval_dataset=small_digits.eval)
    seen = {}

    def init_trackers(project_name, config=None, init_kwargs=None):  # what a tracker would be given
        seen.update(project_name=project_name, config=config)

    monkeypatch.setattr(trainer.accelerator, "init_trackers", init_trackers)
    monkeypatch.setattr(trainer.accelerator, "log", lambda *a, **k: None)
    trainer.train()
    trainer.save_model()
    assert os.path.isfile(tmp_path / "run" / "checkpoint-2" / "trainer_state.json")
    assert _files_holding(tmp_path / "run", FAKE_TOKEN) == []
    assert FAKE_TOKEN not in json.dumps(seen) and seen["config"]["run_name"] == "exp-<redacted>"
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["args"]["run_name"] == "exp-<redacted>"  # redacted, not dropped


def test_results_files_are_redacted(tmp_path):
    from hfkd.cli.pipeline import write_results

    write_results(str(tmp_path), f"| model |\n|---|\n| {FAKE_TOKEN} |", [{"model": FAKE_TOKEN, "top1": 0.5}])
    assert _files_holding(tmp_path, FAKE_TOKEN) == []
    assert json.loads((tmp_path / "results.json").read_text())[0]["top1"] == 0.5
