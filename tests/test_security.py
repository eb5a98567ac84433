"""Security cases of issue 21: no token in anything written, escaped card text, no remote code, no pickles."""
import json
import os

import pytest
import torch

import hfkd.training.args as training_args
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
    # The tracker is faked below (init_trackers): tensorboard itself need not be installed.
    monkeypatch.setattr(training_args, "tracker_problems", lambda report_to: [])
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


# -- remote code: never run unless asked, never prompted for -------------------------------------------
_CUSTOM_CONFIG = '''
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "hfkd-tiny-custom"

    def __init__(self, image_size=16, num_channels=3, **kwargs):
        self.image_size, self.num_channels = image_size, num_channels
        super().__init__(**kwargs)
'''
_CUSTOM_MODEL = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .configuration_tiny import TinyConfig

RAN = []  # the test reads it: this code ran


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        RAN.append(True)
        self.head = torch.nn.Linear(config.num_channels, config.num_labels)
        self.post_init()

    def forward(self, pixel_values, output_hidden_states=False, **kwargs):
        return ImageClassifierOutputWithNoAttention(logits=self.head(pixel_values.mean((2, 3))))
'''


def _custom_code_folder(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "configuration_tiny.py").write_text(_CUSTOM_CONFIG)
    (folder / "modeling_tiny.py").write_text(_CUSTOM_MODEL)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "hfkd-tiny-custom", "num_labels": 10, "image_size": 16,
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                     "AutoModelForImageClassification": "modeling_tiny.TinyModel"}}))
    return str(folder)


def test_a_teacher_with_its_own_code_is_refused_without_a_prompt(tmp_path, monkeypatch):
    from hfkd.models.teacher import create_teacher

    folder = _custom_code_folder(tmp_path)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")  # a user saying yes
    with pytest.raises(ValueError, match=r"own Python code.*auto_map.*--trust_remote_code"):
        create_teacher(folder, num_classes=10, pretrained=False)
    assert asked == []  # transformers never asked "Do you wish to run the custom code? [y/N]"


def test_trust_remote_code_opts_in(tmp_path, monkeypatch):
    from hfkd.models.teacher import create_teacher

    folder = _custom_code_folder(tmp_path)
    monkeypatch.setattr("builtins.input", lambda prompt="": pytest.fail(f"prompted: {prompt}"))
    teacher = create_teacher(folder, num_classes=10, pretrained=False, trust_remote_code=True)
    assert type(teacher.backbone.model).__name__ == "TinyModel"
    assert teacher(torch.randn(2, 3, 16, 16)).logits.shape == (2, 10)


def test_trust_remote_code_is_a_model_option_of_the_command_line():
    from hfkd.cli.arguments import DataArguments, ModelArguments
    from hfkd.cli.parser import parse_args

    (model, _), _ = parse_args((ModelArguments, DataArguments), ["--trust_remote_code", "--allow_pickle_weights"])
    assert model.trust_remote_code and model.allow_pickle_weights
    (model, _), _ = parse_args((ModelArguments, DataArguments), [])
    assert not model.trust_remote_code and not model.allow_pickle_weights


# -- pickled teacher weights ------------------------------------------------------------------------
def _pickled_folder(tmp_path, student, name="teacher"):
    """A saved model whose weights were turned into pytorch_model.bin (as many downloaded checkpoints are)."""
    import hfkd
    from safetensors.torch import load_file

    folder = hfkd.save_student(student, str(tmp_path / name))
    weights = os.path.join(folder, "model.safetensors")
    torch.save(load_file(weights), os.path.join(folder, "pytorch_model.bin"))
    os.remove(weights)
    return folder


def _vit():
    from transformers import ViTConfig

    torch.manual_seed(0)
    return create_backbone(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, num_labels=10))


@pytest.mark.parametrize("make", [_student, _vit], ids=["timm", "transformers"])
def test_pickled_teacher_weights_are_refused_unless_allowed(tmp_path, make):
    from hfkd.models.teacher import create_teacher

    original = make().eval()
    folder = _pickled_folder(tmp_path, original)
    with pytest.raises(ValueError, match=r"only pickled weights \['pytorch_model.bin'\].*safetensors(.|\n)*"
                                         r"--allow_pickle_weights") as e:
        create_teacher(folder, num_classes=10)
    assert "st.save_file(" in str(e.value)  # the one-line conversion command
    teacher = create_teacher(folder, num_classes=10, allow_pickle_weights=True)  # torch's weights_only load
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(teacher(x).logits, original(x).logits, atol=1e-5)


@pytest.mark.slow
def test_the_conversion_command_in_the_message_works(tmp_path):
    import re
    import shlex
    import subprocess
    import sys

    from hfkd.models.teacher import create_teacher

    original = _student().eval()
    folder = _pickled_folder(tmp_path, original)
    with pytest.raises(ValueError) as e:
        create_teacher(folder, num_classes=10)
    command = re.search(r"\n  (cd .* && python -c .*)\n", str(e.value)).group(1)  # the one line to run
    subprocess.run(command.replace("python -c", f"{shlex.quote(sys.executable)} -c", 1), shell=True, check=True)
    teacher = create_teacher(folder, num_classes=10)  # safetensors now: loaded without the opt-in
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(teacher(x).logits, original(x).logits, atol=1e-6)


def test_a_timm_hub_teacher_without_safetensors_is_refused(tmp_path, hub):
    """timm falls back to a Hub repository's pytorch_model.bin (weights_only unpickler): refused unless allowed."""
    from hub_server import Repo

    import hfkd
    from hfkd.models.teacher import create_teacher

    original = _student().eval()
    folder = hfkd.save_student(original, str(tmp_path / "saved"))
    files = {f: open(os.path.join(folder, f), "rb").read() for f in ("config.json", "model.safetensors")}
    pickled = tmp_path / "pytorch_model.bin"
    from safetensors.torch import load_file

    torch.save(load_file(os.path.join(folder, "model.safetensors")), pickled)
    for repo_id, weights in (("acme/pickled", {"pytorch_model.bin": pickled.read_bytes()}),
                             ("acme/safe", {"model.safetensors": files["model.safetensors"]})):
        repo = hub.state.repos[repo_id] = Repo(repo_id)
        repo.refs["main"] = hub.state.new_commit(repo, {"config.json": files["config.json"], **weights}, "upload")
    with pytest.raises(ValueError, match=r"(?s)has no model.safetensors on the Hub.*hf download acme/pickled "
                                         r"--local-dir pickled && cd pickled && python -c .*--allow_pickle_weights"):
        create_teacher("hf-hub:acme/pickled", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    for teacher in (create_teacher("hf-hub:acme/pickled", num_classes=10, allow_pickle_weights=True),
                    create_teacher("hf-hub:acme/safe", num_classes=10)):
        with torch.no_grad():
            assert torch.allclose(teacher(x).logits, original(x).logits, atol=1e-5)
