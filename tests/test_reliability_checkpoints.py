"""Checkpoints: a manifest verified on resume, fallback to the newest intact one, and the same-run check."""
import logging
import os
import shutil

import pytest
import torch

import hfkd
from conftest import run_args
from hfkd import DistillationTrainer, create_backbone
from hfkd.data import AugmentConfig
from hfkd.training.checkpoint import MANIFEST_FILE, CheckpointError, verify_checkpoint

# the scheduler is registered for checkpointing, so Accelerate writes it as custom_checkpoint_0
FILES = ["model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl", "trainer_state.json",
         "method_state.safetensors"]


def _args(out, **kw):
    return run_args(**{"output_dir": out, "max_steps": 4, "save_strategy": "steps", "save_steps": 2, "save_total_limit": None,
                            "seed": 0, **kw})


def _trainer(data, out, train=None, **kw):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    return DistillationTrainer(student, method=hfkd.create_method("pskd"), args=_args(out, **kw),
                               train_dataset=data.train if train is None else train,
                               augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_digits):
    """A PS-KD run (it has method state) with checkpoint-2 and checkpoint-4, and its final weights."""
    out = tmp_path_factory.mktemp("run")
    trainer = _trainer(small_digits, out)
    trainer.train()
    return out, {k: v.clone() for k, v in trainer.unwrapped_student().state_dict().items()}


def _damage(path, how):
    size = os.path.getsize(path)
    if how == "delete":
        os.remove(path)
    elif how == "empty":
        open(path, "wb").close()
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    else:  # zero 4 KB in place: same size, different content
        with open(path, "r+b") as f:
            f.seek(max(0, size // 2 - 2048))
            f.write(b"\0" * min(4096, size))
        assert os.path.getsize(path) == size


@pytest.mark.parametrize("how", ["truncate", "empty", "delete", "zero4k"])
@pytest.mark.parametrize("name", FILES)
def test_each_damaged_file_is_named(tmp_path, run_dir, name, how):
    ckpt = str(tmp_path / "checkpoint-4")
    shutil.copytree(run_dir[0] / "checkpoint-4", ckpt)
    verify_checkpoint(ckpt)  # intact
    _damage(os.path.join(ckpt, name), how)
    with pytest.raises(CheckpointError, match=f"checkpoint-4 is damaged: {name} (is missing|has)"):
        verify_checkpoint(ckpt)


def test_damaged_manifest_is_named(tmp_path, run_dir):
    ckpt = str(tmp_path / "checkpoint-4")
    shutil.copytree(run_dir[0] / "checkpoint-4", ckpt)
    _damage(os.path.join(ckpt, MANIFEST_FILE), "truncate")
    with pytest.raises(CheckpointError, match=f"{MANIFEST_FILE} is damaged"):
        verify_checkpoint(ckpt)


def test_latest_falls_back_to_the_newest_intact_checkpoint(tmp_path, run_dir, small_digits, caplog):
    out = tmp_path / "run"
    shutil.copytree(run_dir[0], out)
    _damage(str(out / "checkpoint-4" / "model.safetensors"), "zero4k")  # same size: only the checksum sees it
    with pytest.raises(CheckpointError, match="checkpoint-4 is damaged: model.safetensors has the right size"):
        _trainer(small_digits, out, resume_from_checkpoint=str(out / "checkpoint-4")).train()
    resumed = _trainer(small_digits, out, resume_from_checkpoint="latest")
    with caplog.at_level(logging.WARNING, logger="hfkd.training.checkpoint"):
        resumed.train()
    assert "skipping" in caplog.text and "checkpoint-4" in caplog.text and "model.safetensors" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint-2" in caplog.text
    weights = resumed.unwrapped_student().state_dict()
    assert all(torch.equal(weights[k], run_dir[1][k]) for k in weights)  # bitwise the uninterrupted run


def test_resume_refuses_another_run_and_lists_each_difference(tmp_path, run_dir, small_digits):
    out = tmp_path / "run"
    shutil.copytree(run_dir[0], out)
    ckpt = str(out / "checkpoint-2")
    with pytest.raises(ValueError, match=r"(?s)different run.*learning_rate: checkpoint 0.003, now 0.01.*"
                                         r"per_device_train_batch_size: checkpoint 32, now 16.*seed: checkpoint 0, now 1"
                                         r".*resume_allow_changes="):
        _trainer(small_digits, out, resume_from_checkpoint=ckpt, learning_rate=0.01, per_device_train_batch_size=16,
                 seed=1).train()
    with pytest.raises(ValueError, match=r"(?s)dataset: checkpoint .*train_samples: checkpoint 256, now 200"):
        _trainer(small_digits, out, train=small_digits.train.select(range(200)), resume_from_checkpoint=ckpt).train()
    with pytest.raises(ValueError, match=r"max_steps: checkpoint 4, now 6"):
        _trainer(small_digits, out, resume_from_checkpoint=ckpt, max_steps=6).train()
    with pytest.raises(ValueError, match=r"method_hparams: checkpoint .*'alpha_T': 0.8"):
        torch.manual_seed(0)
        DistillationTrainer(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32),
                            method=hfkd.create_method("pskd", alpha_T=0.5), train_dataset=small_digits.train,
                            args=_args(out, resume_from_checkpoint=ckpt)).train()
    with pytest.raises(ValueError, match="unknown fields \\['batch'\\]"):
        _trainer(small_digits, out, resume_from_checkpoint=ckpt, resume_allow_changes=["batch"]).train()


def test_allowed_and_output_only_changes_resume(tmp_path, run_dir, small_digits):
    out = tmp_path / "run"
    shutil.copytree(run_dir[0], out)
    longer = _trainer(small_digits, out, resume_from_checkpoint=str(out / "checkpoint-4"), max_steps=5,
                      resume_allow_changes=["max_steps"])
    assert longer.train().global_step == 5
    out2 = tmp_path / "run2"
    shutil.copytree(run_dir[0], out2)
    # logging, saving and evaluation settings never block a resume
    other = _trainer(small_digits, out2, resume_from_checkpoint="latest", logging_steps=3, save_steps=5,
                     save_total_limit=1, eval_strategy="steps", report_to=[])
    assert other.train().global_step == 4
