"""DistillationTrainer: validation, learning, frozen teachers, exact resume, CLI parsing."""
import os

import pytest
import torch

import hfkd
from conftest import run_args
from hfkd import DistillationArguments, DistillationTrainer, TrainerCallback, create_backbone
from hfkd.data import AugmentConfig
from tests.helpers.models import tiny_student, tiny_teacher


def _args(tmp_path, **kw):
    return run_args(**{"output_dir": tmp_path / "run", **kw})


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    (dict(num_train_epochs=0, max_steps=-1), "num_train_epochs > 0 or max_steps"),
    (dict(mixed_precision="fp8"), "mixed_precision"),
    (dict(lr_scheduler_type="multistep"), "lr_milestones"),
    (dict(warmup_ratio=1.5), "warmup_ratio"),
    (dict(push_to_hub=True), "hub_model_id"),
])
def test_nonsense_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationArguments(**kwargs)


def test_bad_setups_fail_before_training(tmp_path, small_digits):
    args = _args(tmp_path)
    with pytest.raises(ValueError, match="unknown method 'nope'; available methods: .*kd"):
        DistillationTrainer(tiny_student(), [tiny_teacher()], method="nope", args=args, train_dataset=small_digits.train)
    with pytest.raises(ValueError, match="does not take \\['temprature'\\]"):
        hfkd.create_method("kd", temprature=2.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        hfkd.create_method("kd", temperature=-1.0)
    with pytest.raises(ValueError, match="needs at least 1 teacher"):
        DistillationTrainer(tiny_student(), [], method="kd", args=args, train_dataset=small_digits.train)
    with pytest.raises(ValueError, match="teacher .* predicts 7 classes but the student predicts 10"):
        DistillationTrainer(tiny_student(), [create_backbone("test_resnet", num_classes=7, pretrained=False)],
                            method="kd", args=args, train_dataset=small_digits.train)
    with pytest.raises(ValueError, match="the dataset has 10 classes but the student .* predicts 3"):
        DistillationTrainer(create_backbone("test_resnet", num_classes=3, pretrained=False), method="supervised",
                            args=args, train_dataset=small_digits.train)
    with pytest.raises(ValueError, match="no label column"):
        DistillationTrainer(tiny_student(), method="supervised", args=args,
                            train_dataset=small_digits.train.remove_columns("label"))


class _Watch(TrainerCallback):
    def __init__(self):
        self.losses, self.teacher_modes, self.teacher_grads = [], [], []

    def on_log(self, trainer, logs):
        if "loss" in logs:
            self.losses.append(logs["loss"])

    def on_step_end(self, trainer):
        for t in trainer.teachers:
            self.teacher_modes.append(t.training or t.backbone.training or t.backbone.model.training)
            self.teacher_grads.append(any(p.requires_grad or p.grad is not None for p in t.parameters()))


def test_kd_training_loss_falls_teacher_stays_frozen(tmp_path, small_digits):
    teacher = tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    watch = _Watch()
    trainer = DistillationTrainer(tiny_student(), [teacher], method=hfkd.create_method("kd", temperature=2.0, alpha=0.5),
                                  args=_args(tmp_path, max_steps=24), train_dataset=small_digits.train,
                                  eval_dataset=small_digits.eval, callbacks=[watch],
                                  augment=AugmentConfig(scale=(0.8, 1.0), hflip=0.0, color_jitter=None))
    trainer.train()
    assert len(watch.losses) == 24
    assert sum(watch.losses[-4:]) / 4 < 0.8 * sum(watch.losses[:4]) / 4
    assert not any(watch.teacher_modes) and not any(watch.teacher_grads)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= metrics["eval_top5_accuracy"] <= 1.0
    assert metrics["eval_samples"] == len(small_digits.eval)


def _resume_run(tmp_path, small_digits, name, **kw):
    args = _args(tmp_path, output_dir=str(tmp_path / name), max_steps=10, save_strategy="steps", save_steps=3,
                 save_total_limit=None, **kw)
    trainer = DistillationTrainer(tiny_student(), [tiny_teacher()], method="kd", args=args, train_dataset=small_digits.train,
                                  augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=0.3))
    trainer.train()
    return trainer


def test_mid_epoch_resume_is_bitwise_exact(tmp_path, small_digits):
    # 256 samples / 32 = 8 batches per epoch; checkpoint-3 is in the middle of epoch 0
    full = _resume_run(tmp_path, small_digits, "full")
    ckpt = os.path.join(str(tmp_path / "full"), "checkpoint-3")
    assert os.path.isfile(os.path.join(ckpt, "trainer_state.json"))
    assert not [d for d in os.listdir(tmp_path / "full") if d.startswith(".tmp")]  # atomic: no leftovers
    resumed = _resume_run(tmp_path, small_digits, "resumed", resume_from_checkpoint=ckpt)
    a = full.unwrapped_student().state_dict()
    b = resumed.unwrapped_student().state_dict()
    assert resumed.state.global_step == full.state.global_step == 10
    diffs = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diffs, f"resume differs in {diffs[:5]}"


def test_resume_negative_control(tmp_path, small_digits):
    """Without the saved state the run differs: the exactness test above can fail."""
    full = _resume_run(tmp_path, small_digits, "full2")
    other = _resume_run(tmp_path, small_digits, "other", seed=7)
    a, b = full.unwrapped_student().state_dict(), other.unwrapped_student().state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_save_model_writes_native_student_only(tmp_path, small_digits):
    trainer = DistillationTrainer(tiny_student(), [tiny_teacher()], method="kd", args=_args(tmp_path, max_steps=2),
                                  train_dataset=small_digits.train)
    trainer.train()
    out = trainer.save_model(str(tmp_path / "student"))
    files = os.listdir(out)
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    import timm

    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(2, 3, 32, 32)
    student = trainer.unwrapped_student().eval()
    assert torch.allclose(loaded.eval()(x), student(x).logits, atol=1e-5)


def test_world_size_guard(monkeypatch):
    from hfkd.launch import check_launch

    class One:
        num_processes = 1

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1"):
        check_launch(One())


def test_cli_yaml_and_overrides(tmp_path):
    from hfkd.cli.arguments import DataArguments, ModelArguments
    from hfkd.cli.parser import parse_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("student: resnet18\nlearning_rate: 0.01\nteachers: [a, b]\nlr_scheduler_type: multistep\n"
                   "lr_milestones: [101]\n")
    (m, d, a), _ = parse_args((ModelArguments, DataArguments, DistillationArguments),
                              ["--config", str(cfg), "--learning_rate", "0.02"], preset={"output_dir": "x"})
    assert m.student == "resnet18" and m.teachers == ["a", "b"]
    assert a.learning_rate == 0.02 and a.lr_milestones == [101] and a.output_dir == "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lerning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown keys \\['lerning_rate'\\]"):
        parse_args((ModelArguments, DataArguments, DistillationArguments), ["--config", str(bad)])


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical(tmp_path):
    from helpers.launch import run_two_processes

    script = os.path.join(os.path.dirname(__file__), "scripts", "train_ddp.py")
    proc = run_two_processes(script, str(tmp_path))
    assert "RANKS_IDENTICAL True" in proc.stdout, proc.stdout[-2000:]
    assert "WORLD 2" in proc.stdout
