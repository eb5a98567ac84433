"""Push a distilled student to a local Hub-protocol server with the real huggingface_hub client,
then load it back in a fresh process with plain timm, plain transformers and hfkd."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import FAKE_TOKEN

REPO = "hfkd-tests/kd-student"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, small_digits):
    """A tiny student distilled from a tiny teacher for a few steps, saved by the trainer, and its logits."""
    from hfkd import DistillationArguments, DistillationTrainer, create_backbone

    out = tmp_path_factory.mktemp("distilled")
    data = small_digits
    teacher = create_backbone("test_resnet", num_classes=data.num_classes, pretrained=False, image_size=32)
    student = create_backbone("test_convnext", num_classes=data.num_classes, pretrained=False, image_size=32)
    args = DistillationArguments(output_dir=str(out / "run"), max_steps=3, per_device_train_batch_size=32,
                                 logging_steps=1, eval_strategy="steps", eval_steps=3, save_strategy="no",
                                 use_cpu=True, disable_tqdm=True, push_to_hub=True, hub_model_id=REPO)
    trainer = DistillationTrainer(student, [teacher], "kd", args, train_dataset=data.train,
                                  eval_dataset=data.eval.select(range(32)))
    trainer.train()
    folder = trainer.save_model(baseline_metrics={"eval_accuracy": 0.1, "eval_top5_accuracy": 0.5})
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = trainer.unwrapped_student().eval()
    with torch.no_grad():
        logits = model(x).logits
    np.save(out / "input.npy", x.numpy())
    np.save(out / "logits.npy", logits.numpy())
    return trainer, folder, out


def _snapshot(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


_LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    repo, data_dir = sys.argv[1], sys.argv[2]
    x = torch.from_numpy(np.load(data_dir + "/input.npy"))
    expected = torch.from_numpy(np.load(data_dir + "/logits.npy"))
    out = {}

    import timm
    model = timm.create_model("hf-hub:" + repo, pretrained=True).eval()
    with torch.no_grad():
        out["timm"] = torch.allclose(model(x), expected, atol=1e-5)
    out["timm_labels"] = list(model.pretrained_cfg["label_names"])
    out["timm_input_size"] = list(timm.data.resolve_model_data_config(model)["input_size"])

    from transformers import AutoImageProcessor, AutoModelForImageClassification
    hf = AutoModelForImageClassification.from_pretrained(repo).eval()
    with torch.no_grad():
        out["transformers"] = torch.allclose(hf(pixel_values=x).logits, expected, atol=1e-5)
    out["transformers_id2label"] = {str(k): v for k, v in hf.config.id2label.items()}
    out["processor"] = type(AutoImageProcessor.from_pretrained(repo)).__name__

    from huggingface_hub import ModelCard
    card = ModelCard.load(repo)
    out["card_library"] = card.data.library_name
    out["card_results"] = [(r.metric_type, r.metric_value) for r in card.data.eval_results]
    out["hfkd_imported_before"] = "hfkd" in sys.modules

    import hfkd
    student = hfkd.from_pretrained(repo)
    with torch.no_grad():
        out["hfkd"] = torch.allclose(student(x).logits, expected, atol=1e-5)
    out["hfkd_eval_mode"] = not student.training
    out["hfkd_method"] = student.lineage["method"]["name"]
    print("RESULT" + json.dumps(out))
""")


def test_push_then_load_in_fresh_process(hub, distilled, caplog, capfd):
    trainer, folder, data_dir = distilled
    before = _snapshot(folder)
    with caplog.at_level(logging.DEBUG):
        info = trainer.push_to_hub()
    assert info.oid == hub.repo(REPO).refs["main"]
    assert hub.commits_made(REPO) == 1  # one commit for the whole folder
    remote = hub.repo(REPO).files("main")
    assert {"config.json", "model.safetensors", "hfkd.json", "README.md"} <= set(remote)
    assert not any(p.endswith((".bin", ".pth", ".pt")) for p in remote)
    assert remote["model.safetensors"] == before["model.safetensors"]
    # The card was re-rendered for the real repository id before the upload (and locally).
    assert f'hf-hub:{REPO}' in remote["README.md"].decode()
    assert FAKE_TOKEN in [h.split(" ", 1)[-1] for h in hub.state.auth_headers if h]  # the token was used...

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, REPO, str(data_dir)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["hfkd_imported_before"] is False  # timm and transformers loaded it without hfkd
    assert result["timm"] and result["transformers"] and result["hfkd"]
    labels = [str(n) for n in trainer.label_names]
    assert result["timm_labels"] == labels
    assert result["transformers_id2label"] == {str(i): n for i, n in enumerate(labels)}
    assert result["timm_input_size"] == [3, 32, 32]
    assert result["processor"] == "TimmWrapperImageProcessor"
    assert result["card_library"] == "timm"
    metrics = dict(result["card_results"])
    assert metrics["accuracy"] == pytest.approx(trainer.state.log_history[-1]["eval_accuracy"], abs=1e-6)
    assert result["hfkd_eval_mode"] and result["hfkd_method"] == "kd"

    # ...but never written or logged.
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err, proc.stdout, proc.stderr):
        assert FAKE_TOKEN not in text
    for root, _, files in os.walk(folder):
        for f in files:
            assert FAKE_TOKEN.encode() not in open(os.path.join(root, f), "rb").read()


def test_private_branch_and_pull_request(hub, distilled):
    from hfkd.hub import push_to_hub

    _, folder, _ = distilled
    repo = "hfkd-tests/private-student"
    push_to_hub(folder, repo, private=True, revision="experiment")
    assert hub.repo(repo).private
    assert "model.safetensors" in hub.repo(repo).files("experiment")
    assert "model.safetensors" not in hub.repo(repo).files("main")  # the branch, not main, got the commit

    info = push_to_hub(folder, repo, create_pr=True, commit_message="Propose the student")
    assert info.pr_num == 1
    assert "model.safetensors" in hub.repo(repo).files("refs/pr/1")
    assert "model.safetensors" not in hub.repo(repo).files("main")  # a PR leaves main alone


@pytest.mark.parametrize("status, words", [(500, ["HTTP 500", "server", "not an authentication"]),
                                           (401, ["HTTP 401", "authentication", "HF_TOKEN"])])
def test_failed_push_is_clear_and_keeps_the_local_save(hub, distilled, status, words, caplog, capfd):
    from hfkd.hub import HubPushError

    trainer, folder, _ = distilled
    before = _snapshot(folder)
    hub.fail(status)
    with caplog.at_level(logging.DEBUG), pytest.raises(HubPushError) as err:
        trainer.push_to_hub()
    message = str(err.value)
    assert err.value.status_code == status
    for w in words:
        assert w in message
    assert f"hfkd.push_to_hub({os.path.abspath(folder)!r}, {REPO!r})" in message  # the retry command
    assert f"hf upload {REPO}" in message
    assert _snapshot(folder) == before  # the local save is intact
    captured = capfd.readouterr()
    for text in (message, caplog.text, captured.out, captured.err):
        assert FAKE_TOKEN not in text

    hub.heal()  # the retry the message suggests works
    from hfkd import push_to_hub

    push_to_hub(folder, REPO)
    assert "model.safetensors" in hub.repo(REPO).files("main")


def test_push_refuses_an_incomplete_folder(tmp_path, hub):
    from hfkd import push_to_hub

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a complete saved student"):
        push_to_hub(str(tmp_path), REPO)
    assert REPO not in hub.state.repos  # nothing was created for a half-saved folder
