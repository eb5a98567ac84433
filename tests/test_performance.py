"""Speed work must not change results: pinned augmentation, EMA math and resume, channels_last,
teacher_dtype, data-loader workers with exact resume, torch_compile."""
import os
import random
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import hfkd
from conftest import run_args
from hfkd import DistillationArguments, DistillationTrainer, TrainerCallback, create_backbone
from hfkd.data import AugmentConfig
from hfkd.data.transforms import ImageClassificationDataset, create_image_transform, sample_seed
from hfkd.cli.demo import DEMO_AUGMENT
from tests.helpers.models import tiny_student, tiny_teacher


@contextmanager
def _reference_seeded_rng(seed):
    """The previous per-sample seeding (save, seed, transform, restore around every sample), kept as the reference."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _reference_pixels(split, transform, seed, epoch, index):
    image = split[int(index)]["image"].convert("RGB")
    with _reference_seeded_rng(sample_seed(seed, epoch, index)):
        return transform(image)


# Python random (crop, RandAugment), torch (flip, jitter, erasing) and NumPy (RandAugment picks its ops with np.random.choice)
_HEAVY = AugmentConfig(scale=(0.3, 1.0), hflip=0.5, color_jitter=0.4, auto_augment="rand-m9-mstd0.5", re_prob=0.5)


@pytest.mark.parametrize("augment", [DEMO_AUGMENT, _HEAVY], ids=["demo", "heavy"])
def test_augmentation_pixels_match_the_reference_seeding(small_digits, augment):
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    transform = create_image_transform(student.preprocess, True, augment)
    ds = ImageClassificationDataset(small_digits.train, transform, "image", "label", seed=42)
    indices = [0, 7, 100, 255, 3]
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        batch = ds.__getitems__(indices)
        for row, index in zip(batch, indices):
            ref = _reference_pixels(small_digits.train, transform, 42, epoch, index)
            assert torch.equal(row["pixel_values"], ref), (epoch, index)
            assert torch.equal(ds[index]["pixel_values"], ref)
            assert row["index"] == index and row["labels"] == small_digits.train[index]["label"]
    # the training RNG is left exactly as it was
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    # and the pins can fail: another epoch draws other pixels
    ds.set_epoch(1)
    assert not torch.equal(ds[100]["pixel_values"], _reference_pixels(small_digits.train, transform, 42, 0, 100))


def _args(tmp_path, name="run", **kw):
    return run_args(**{"output_dir": tmp_path / name, **kw})


def _trainer(tmp_path, data, name="run", teachers=True, **kw):
    return DistillationTrainer(tiny_student(), [tiny_teacher()] if teachers else [], method="kd" if teachers else "supervised",
                               args=_args(tmp_path, name, **kw), train_dataset=data.train, eval_dataset=data.eval,
                               augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=0.3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataloader_persistent_workers=True), "needs dataloader_num_workers > 0"),
    (dict(model_ema_decay=1.0), "model_ema_decay"),
    (dict(model_ema_as_student=True), "needs model_ema=True"),
    (dict(teacher_dtype="int8"), "teacher_dtype must be one of"),
    (dict(dataloader_num_workers=-1), "dataloader_num_workers"),
])
def test_speed_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationArguments(**kwargs)


class _StudentStates(TrainerCallback):
    def __init__(self):
        self.states = []

    def on_step_end(self, trainer):
        # on_step_end runs after the EMA update of the same step
        self.states.append({k: v.detach().clone() for k, v in trainer.unwrapped_student().state_dict().items()})


def test_ema_update_matches_the_formula(tmp_path, small_digits):
    decay = 0.6
    watch = _StudentStates()
    trainer = _trainer(tmp_path, small_digits, max_steps=4, model_ema=True, model_ema_decay=decay,
                       model_ema_warmup=False)
    trainer.callbacks.add(watch)
    trainer.train()
    expected = dict(watch.states[0])  # step 1: the EMA starts as a copy of the student
    for state in watch.states[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v
                    for k, v in state.items()}
    got = trainer.model_ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, rtol=1e-5, atol=1e-6), k
    student = trainer.unwrapped_student().state_dict()
    assert any(not torch.allclose(got[k], student[k]) for k in student if student[k].is_floating_point())
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_ema_accuracy"] <= 1.0 and "eval_accuracy" in metrics


def test_ema_resumes_exactly_and_can_be_saved_as_the_student(tmp_path, small_digits):
    kw = dict(max_steps=6, save_strategy="steps", save_steps=3, save_total_limit=None, model_ema=True,
              model_ema_decay=0.9, model_ema_as_student=True)
    full = _trainer(tmp_path, small_digits, "full", **kw)
    full.train()
    ckpt = os.path.join(str(tmp_path / "full"), "checkpoint-3")
    assert not [f for f in os.listdir(ckpt) if f.startswith("custom_checkpoint_1")]  # tensors, not a pickle
    resumed = _trainer(tmp_path, small_digits, "resumed", resume_from_checkpoint=ckpt, **kw)
    resumed.train()
    a, b = full.model_ema.module.state_dict(), resumed.model_ema.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    _trainer(tmp_path, small_digits, "plain", max_steps=3, save_strategy="steps", save_steps=3).train()
    plain_ckpt = os.path.join(str(tmp_path / "plain"), "checkpoint-3")
    with pytest.raises(ValueError, match="different run(.|\n)*model_ema"):  # turning EMA on changes the run
        _trainer(tmp_path, small_digits, "plain", max_steps=6, model_ema=True, resume_from_checkpoint=plain_ckpt).train()
    with pytest.raises(ValueError, match="holds no EMA weights"):  # allowed, but there is no EMA to restore
        _trainer(tmp_path, small_digits, "plain", max_steps=6, model_ema=True, resume_from_checkpoint=plain_ckpt,
                 resume_allow_changes=["model_ema", "max_steps"]).train()
    out = full.save_model(str(tmp_path / "student"))
    from safetensors.torch import load_file

    saved = load_file(os.path.join(out, "model.safetensors"))
    ema = full.model_ema.module.model.state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in saved)


def test_channels_last_gives_the_same_outputs_and_is_used(tmp_path, small_digits):
    model = create_backbone("mobilenetv3_small_050", num_classes=10, pretrained=False, image_size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x).logits
    model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last)).logits
    assert torch.allclose(ref, out, atol=1e-5)
    trainer = _trainer(tmp_path, small_digits, max_steps=2, channels_last=True)
    trainer.train()
    conv = next(p for p in trainer.unwrapped_student().parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


class _InputDtypes:
    def __init__(self, module):
        self.dtypes = []
        module.register_forward_pre_hook(lambda m, args: self.dtypes.append(args[0].dtype))


def test_teacher_dtype_is_used(tmp_path, small_digits):
    expected = torch.bfloat16
    trainer = _trainer(tmp_path, small_digits, max_steps=2, teacher_dtype="bf16")
    backbone = trainer.teachers[0].backbone
    # the first conv's input, and the dtype its weights compute in
    stem = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    inputs = _InputDtypes(stem)
    outputs = []
    stem.register_forward_hook(lambda m, a, out: outputs.append(out.dtype))
    trainer.train()
    assert inputs.dtypes and set(inputs.dtypes) == {expected} and set(outputs) == {expected}
    assert next(backbone.parameters()).dtype == expected
    x = torch.randn(3, 3, 32, 32)
    out = trainer.teachers[0](x)
    assert out.logits.dtype == torch.float32 and not out.logits.is_inference()
    ref = tiny_teacher().eval()(x).logits
    assert torch.allclose(out.logits, ref, atol=0.1, rtol=0.05)  # bf16 rounding, not another model


def test_fp32_teacher_ignores_the_students_autocast():
    from hfkd.models import Teacher

    teacher = Teacher(tiny_teacher())
    stem = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
    outputs = []
    stem.register_forward_hook(lambda m, a, out: outputs.append(out.dtype))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        teacher(x)  # control: without teacher_dtype the teacher follows autocast
        teacher.set_compute_dtype(torch.float32)
        logits = teacher(x).logits
    assert outputs == [torch.bfloat16, torch.float32]
    assert torch.allclose(logits, teacher(x).logits)


def test_torch_compile_flag_compiles_in_place(tmp_path, small_digits):
    """Compiling takes 30-70 s per shape on a 2-core CPU, too slow here: check the flag path only.
    benchmarks/trainer_overhead.py --options compile runs it for real."""
    trainer = _trainer(tmp_path, small_digits, max_steps=1, torch_compile=True, torch_compile_teachers=True)
    trainer._setup_training()
    keys = set(tiny_student().state_dict())
    assert trainer.student.model._compiled_call_impl is not None
    assert trainer.teachers[0].backbone.model._compiled_call_impl is not None
    assert set(trainer.student.state_dict()) == keys  # checkpoints and saved students are unchanged


@pytest.mark.slow
def test_workers_train_and_resume_bitwise_like_no_workers(tmp_path, small_digits):
    # 8 batches per epoch; checkpoint-11 is in the middle of epoch 1, so persistent workers must see
    # set_epoch(1) and the resumed run must re-create them mid-epoch.
    kw = dict(max_steps=13, save_strategy="steps", save_steps=11, save_total_limit=None)
    ref = _trainer(tmp_path, small_digits, "w0", **kw)
    ref.train()
    full = _trainer(tmp_path, small_digits, "w2", dataloader_num_workers=2, dataloader_persistent_workers=True, **kw)
    full.train()
    resumed = _trainer(tmp_path, small_digits, "w2r", dataloader_num_workers=2, dataloader_persistent_workers=True,
                       resume_from_checkpoint=os.path.join(str(tmp_path / "w2"), "checkpoint-11"), **kw)
    resumed.train()
    a = ref.unwrapped_student().state_dict()
    for other in (full, resumed):
        b = other.unwrapped_student().state_dict()
        assert not [k for k in a if not torch.equal(a[k], b[k])]


def test_epoch_reaches_persistent_workers(small_digits):
    from torch.utils.data import DataLoader

    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    ds = ImageClassificationDataset(small_digits.train.select(range(8)), create_image_transform(
        student.preprocess, True, AugmentConfig()), "image", "label", seed=0).share_epoch()
    loader = DataLoader(ds, batch_size=4, num_workers=1, persistent_workers=True)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.append(torch.cat([b["pixel_values"] for b in loader]))
    for epoch in range(2):
        ds.set_epoch(epoch)
        assert torch.equal(seen[epoch], torch.stack([ds[i]["pixel_values"] for i in range(8)]))
    assert not torch.equal(seen[0], seen[1])


def test_an_image_already_in_the_mode_is_not_copied():
    """The decoded image goes to the transform as it is; converting an RGB image to RGB copied it (~3 % of a
    224-px sample, benchmarks/data_path.py)."""
    from PIL import Image

    from hfkd.data.checks import _image

    rgb, gray = Image.new("RGB", (8, 6), (1, 2, 3)), Image.new("L", (8, 6), 7)
    assert _image(rgb, None, 0, "image", "RGB") is rgb
    converted = _image(gray, None, 0, "image", "RGB")
    assert converted.mode == "RGB" and converted.getpixel((0, 0)) == (7, 7, 7)
