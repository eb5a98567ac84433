"""Teacher soft-label cache: storage and recovery by hand, exact views, cached == online losses, refusals."""
import copy
import math
import os
import re

import numpy as np
import pytest
import torch

from conftest import run_args
from hfkd import DistillationTrainer, cache_teacher_outputs, create_backbone, create_method
from hfkd.cache import TeacherCache, recover_topk_logits
from hfkd.cache.format import CacheMetadata, decode_logits, encode_logits
from hfkd.data.transforms import AugmentConfig, ImageClassificationDataset, create_image_transform
from hfkd.models.teacher import create_teacher

AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)


# -- storage ----------------------------------------------------------------------------------------
def test_topk_recovery_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    stored = encode_logits(z.unsqueeze(1), top_k=2, dtype="float32")
    s = math.exp(2) + math.exp(1) + 1 + math.exp(-1)
    assert stored["topk_indices"].tolist() == [[0, 1]]
    assert stored["logsumexp"][0, 0] == pytest.approx(math.log(s), abs=1e-6)
    logits = recover_topk_logits(torch.from_numpy(stored["topk_values"]), torch.from_numpy(stored["topk_indices"]),
                                 torch.from_numpy(stored["logsumexp"][:, 0]), 4)
    p = torch.softmax(logits, -1)[0].tolist()
    rest = (1 + math.exp(-1)) / s / 2  # the mass of classes 2 and 3, spread evenly over both
    assert p == pytest.approx([math.exp(2) / s, math.exp(1) / s, rest, rest], abs=1e-6)
    assert logits[0, :2].tolist() == [2.0, 1.0]  # the kept logits are the teacher's own: any temperature works


def test_topk_with_every_class_is_the_full_distribution():
    z = torch.randn(3, 2, 7)
    stored = {k: torch.from_numpy(v) for k, v in encode_logits(z, top_k=7, dtype="float32").items()}
    torch.testing.assert_close(torch.softmax(decode_logits(stored, 2, 7), -1), torch.softmax(z, -1))


def test_full_storage_float16_rounds_only():
    z = torch.randn(5, 2, 10) * 3
    full = {k: torch.from_numpy(v) for k, v in encode_logits(z, None, "float32").items()}
    assert torch.equal(decode_logits(full, 2, 10), z)
    half = {k: torch.from_numpy(v) for k, v in encode_logits(z, None, "float16").items()}
    assert half["logits"].dtype == torch.float16
    torch.testing.assert_close(decode_logits(half, 2, 10), z, atol=1e-2, rtol=1e-3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode_logits(z, None, "bfloat8")


# -- a small cache ----------------------------------------------------------------------------------
def _models(seed=0):
    from accelerate.utils import set_seed

    set_seed(seed)
    teachers = [create_backbone(n, num_classes=10, pretrained=False, image_size=32) for n in ("test_resnet", "test_convnext")]
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    return teachers, student


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits):
    teachers, student = _models()
    train = digits.train.select(range(48))
    folder = str(tmp_path_factory.mktemp("cache") / "c")
    cache_teacher_outputs(teachers, train, folder, student=student, augment=AUGMENT, num_views=1, seed=0,
                          batch_size=16)
    return {"teachers": teachers, "student": student, "train": train, "folder": folder}


def _args(tmp_path, **kw):
    return run_args(**{"output_dir": tmp_path / "run", "max_steps": 3, "per_device_train_batch_size": 16, "learning_rate": 0.05,
                                         "optim": "momentum", "lr_scheduler_type": "constant", "seed": 0,
                                         "use_cpu": True, **kw})


def _losses(trainer):
    trainer.train()
    return [e for e in trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("method_name, kwargs", [("kd", {"temperature": 1.0, "alpha": 0.5}),
                                                 ("meal_v2", {"discriminator_reduction": 2})])
def test_cached_losses_equal_online(setup, tmp_path, method_name, kwargs):
    online = DistillationTrainer(copy.deepcopy(setup["student"]), setup["teachers"], create_method(method_name, **kwargs),
                                 _args(tmp_path / "online"), train_dataset=setup["train"], augment=AUGMENT)
    cached = DistillationTrainer(copy.deepcopy(setup["student"]), None, create_method(method_name, **kwargs),
                                 _args(tmp_path / "cached"), train_dataset=setup["train"], augment=AUGMENT,
                                 teacher_cache=setup["folder"])
    assert cached.teachers == []
    a, b = _losses(online), _losses(cached)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        keys = [k for k in x if k not in ("step", "epoch", "learning_rate")]
        assert keys and set(keys) == {k for k in y if k not in ("step", "epoch", "learning_rate")}
        for k in keys:
            assert y[k] == pytest.approx(x[k], abs=1e-6), k


def test_recreated_views_are_the_views_the_teachers_saw(setup):
    cache = TeacherCache(setup["folder"], draw_seed=7)
    train = setup["train"]
    transform = create_image_transform(setup["student"].preprocess, True, AUGMENT)
    online = ImageClassificationDataset(train, transform, "image", "label", seed=0)  # what generation made
    replay = ImageClassificationDataset(train, transform, "image", "label", seed=123)
    cache.attach(replay, setup["student"].preprocess)
    replay.set_epoch(5)  # R = 1: every epoch replays view 0, whatever the run's own seed and epoch
    rows = [replay[i] for i in range(len(train))]
    for i, row in enumerate(rows):
        assert torch.equal(row["pixel_values"], online[i]["pixel_values"]), i
        assert row["cache_view"] == 0
    # The teachers, run again on the re-created views, give the stored logits.
    x = torch.stack([r["pixel_values"] for r in rows])
    stored = cache.teacher_outputs({"cache_logits": torch.stack([r["cache_logits"] for r in rows])})
    for t, out in zip(setup["teachers"], stored):
        teacher = create_teacher(t, setup["student"].preprocess)
        torch.testing.assert_close(out.logits, teacher(x).logits, atol=1e-5, rtol=1e-5)


def test_views_are_drawn_without_replacement(setup, tmp_path):
    teachers, student = setup["teachers"], setup["student"]
    folder = str(tmp_path / "r4")
    train = setup["train"].select(range(8))
    cache_teacher_outputs(teachers, train, folder, student=student, augment=AUGMENT, num_views=4, seed=0,
                          top_k=3, dtype="float16")
    cache = TeacherCache(folder, draw_seed=1)
    for index in range(8):
        for block in range(3):
            assert sorted(cache.view_of(e, index) for e in range(4 * block, 4 * block + 4)) == [0, 1, 2, 3]
    draws = [[cache.view_of(e, i) for e in range(4)] for i in range(8)]
    assert len({tuple(d) for d in draws}) > 1  # images do not all follow the same order
    assert draws == [[TeacherCache(folder, draw_seed=1).view_of(e, i) for e in range(4)] for i in range(8)]  # resume
    meta = CacheMetadata.load(folder)
    assert (meta.num_views, meta.top_k, meta.dtype) == (4, 3, "float16")
    seed, extra = cache(2, 5)
    view = extra["cache_view"]
    transform = create_image_transform(student.preprocess, True, AUGMENT)
    ds = ImageClassificationDataset(train, transform, "image", "label", seed=0)
    ds.set_epoch(view)
    replay = ImageClassificationDataset(train, transform, "image", "label", view_provider=cache)
    replay.set_epoch(2)
    assert torch.equal(replay[5]["pixel_values"], ds[5]["pixel_values"])
    assert extra["cache_topk_values"].dtype == torch.float16 and extra["cache_topk_values"].shape == (6,)


def test_a_cache_that_does_not_fit_is_refused(setup, tmp_path, digits):
    folder, train, student = setup["folder"], setup["train"], setup["student"]

    def make(method="kd", data=train, model=student, augment=None, teachers=None, **kw):
        return DistillationTrainer(copy.deepcopy(model), teachers, create_method(method, **kw), _args(tmp_path),
                                   train_dataset=data, augment=augment, teacher_cache=folder)

    with pytest.raises(ValueError, match="another training split"):
        make(data=digits.train.select(range(1, 49)))
    with pytest.raises(ValueError, match="preprocessing"):
        make(model=create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=40))
    with pytest.raises(ValueError, match="augmented with"):
        make(augment=AugmentConfig(scale=(0.08, 1.0)))
    with pytest.raises(ValueError, match="feature maps"):
        make("feed")
    with pytest.raises(ValueError, match="builds new images every step"):
        make("extracurricular")  # its mixed images were never seen by the teachers that made the cache
    with pytest.raises(ValueError, match="either teachers or teacher_cache"):
        make(teachers=setup["teachers"])
    with pytest.raises(ValueError, match="at most 0 teacher"):
        make("supervised")
    with pytest.raises(FileNotFoundError, match="not an hfkd teacher cache"):
        DistillationTrainer(student, None, "kd", _args(tmp_path), train_dataset=train, teacher_cache=str(tmp_path))
    make(augment=AUGMENT)  # the matching augmentation is accepted


def test_pre_ensembled_cache(setup, tmp_path):
    folder = str(tmp_path / "ens")
    train = setup["train"]
    cache_teacher_outputs(setup["teachers"], train, folder, student=setup["student"], augment=AUGMENT, seed=0,
                          ensemble=True)
    with pytest.raises(ValueError, match="pre-ensembled at temperature 1"):
        DistillationTrainer(copy.deepcopy(setup["student"]), None, create_method("kd", temperature=4.0),
                            _args(tmp_path), train_dataset=train, teacher_cache=folder)
    # MEAL V2's target from the pre-ensembled cache is the online target (mean of T = 1 probabilities).
    full, ens = TeacherCache(setup["folder"]), TeacherCache(folder)
    rows = [(full(0, i)[1], ens(0, i)[1]) for i in range(8)]
    per_teacher = full.teacher_outputs({"cache_logits": torch.stack([r[0]["cache_logits"] for r in rows])})
    (mean,) = ens.teacher_outputs({"cache_logits": torch.stack([r[1]["cache_logits"] for r in rows])})
    from hfkd.losses import ensemble_probs

    torch.testing.assert_close(torch.softmax(mean.logits, -1), ensemble_probs([o.logits for o in per_teacher]))
    assert ens.teachers[0].name.startswith("ensemble of")


def test_two_processes_write_the_one_process_cache(tmp_path):
    """Each process writes its own shards (disjoint, 3 of the 6 each), and the cache is bitwise the 1-process one."""
    import importlib.util

    from helpers.ddp import two_teacher_setup
    from helpers.launch import run_two_processes

    script = os.path.join(os.path.dirname(__file__), "scripts", "cache_ddp.py")
    spec = importlib.util.spec_from_file_location("cache_ddp", script)
    cache_ddp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_ddp)
    ran = run_two_processes(script, str(tmp_path / "two"))
    # Two processes print at once, so their lines may run together ("...arrowWROTE rank 1: ..."): read by pattern.
    found = re.findall(r"WROTE rank (\d): (data/[\w/-]+?\.arrow)", ran.stdout)
    wrote = {rank: sorted(path for r, path in found if int(r) == rank) for rank in (0, 1)}
    shards = [f"data/data-{k:05d}-of-00006.arrow" for k in range(6)]
    assert wrote == {0: shards[:3], 1: shards[3:]}, ran.stdout[-2000:]
    train, _, teachers, student = two_teacher_setup()
    cache_ddp.make(str(tmp_path / "one"), teachers, train, student)

    def files(folder):
        return {rel: open(os.path.join(folder, rel), "rb").read() for rel in [*shards, "hfkd_cache.json"]}
    assert files(str(tmp_path / "one")) == files(str(tmp_path / "two"))
    assert sorted(os.listdir(tmp_path / "two" / "data")) == [s.split("/")[1] for s in shards]
    assert TeacherCache(str(tmp_path / "two")).columns.position.size == 96 * 2


test_two_processes_write_the_one_process_cache = pytest.mark.slow(test_two_processes_write_the_one_process_cache)


def test_fixed_labels_train_on_the_unaugmented_images(setup, tmp_path):
    folder, train, student = str(tmp_path / "fixed"), setup["train"].select(range(8)), setup["student"]
    with pytest.raises(ValueError, match="identical views"):
        cache_teacher_outputs(setup["teachers"], train, folder, student=student, augment=None, num_views=2)
    cache_teacher_outputs(setup["teachers"], train, folder, student=student, augment=None, seed=0)
    with pytest.raises(FileExistsError, match="never overwrites"):
        cache_teacher_outputs(setup["teachers"], train, folder, student=student, augment=None, seed=0)
    trainer = DistillationTrainer(copy.deepcopy(student), None, "kd", _args(tmp_path), train_dataset=train,
                                  teacher_cache=folder)
    plain = create_image_transform(student.preprocess, False)
    for epoch in (0, 3):
        trainer.train_dataset.set_epoch(epoch)
        row = trainer.train_dataset[2]
        assert torch.equal(row["pixel_values"], plain(train[2]["image"].convert("RGB")))


def test_resume_with_another_cache_is_refused(setup, tmp_path):
    """The cache is part of the run's signature: a checkpoint resumes only from the same stored outputs."""
    import shutil

    other = str(tmp_path / "other")  # same teachers and views, stored top-3: other soft labels
    cache_teacher_outputs(setup["teachers"], setup["train"], other, student=setup["student"], augment=AUGMENT,
                          num_views=1, seed=0, top_k=3, batch_size=16)
    moved = str(tmp_path / "moved")  # the same cache read from elsewhere is the same run
    shutil.copytree(setup["folder"], moved)

    def trainer(cache, **kw):
        return DistillationTrainer(copy.deepcopy(setup["student"]), None, create_method("kd"),
                                   _args(tmp_path, **{"save_strategy": "steps", "save_steps": 2, "max_steps": 2, **kw}),
                                   train_dataset=setup["train"], augment=AUGMENT, teacher_cache=cache)

    trainer(setup["folder"]).train()
    ckpt = str(tmp_path / "run" / "checkpoint-2")
    with pytest.raises(ValueError, match=r"(?s)different run.*teacher_cache"):
        trainer(other, resume_from_checkpoint=ckpt).train()
    with pytest.raises(ValueError, match=r"(?s)different run.*teacher_cache"):  # online teachers instead
        DistillationTrainer(copy.deepcopy(setup["student"]), setup["teachers"], create_method("kd"),
                            _args(tmp_path, save_strategy="steps", save_steps=2, max_steps=2,
                                  resume_from_checkpoint=ckpt),
                            train_dataset=setup["train"], augment=AUGMENT).train()
    trainer(moved, resume_from_checkpoint=ckpt, max_steps=3, resume_allow_changes=["max_steps"]).train()


def test_lineage_and_cards_name_a_local_cache_without_its_path(setup, tmp_path, monkeypatch):
    """issue 15's rule: what is published with a student (or a cache) names local folders, never locates them."""
    import json

    from hfkd.cache.card import render_dataset_card

    where = str(tmp_path / "home" / "someone")
    folder = os.path.join(where, "digits_cache")
    command = f"python recipes/cache_teachers.py --teachers {where}/teacher_a --output_dir={folder} --num_views 1"
    cache_teacher_outputs(setup["teachers"], setup["train"], folder, student=setup["student"], augment=AUGMENT,
                          num_views=1, seed=0, batch_size=16, command=command)
    monkeypatch.chdir(where)  # a relative folder, as on the command line
    trainer = DistillationTrainer(copy.deepcopy(setup["student"]), None, create_method("kd"),
                                  _args(tmp_path, max_steps=1), train_dataset=setup["train"], augment=AUGMENT,
                                  teacher_cache="digits_cache")
    trainer.train()
    out = trainer.save_model(str(tmp_path / "student"))
    lineage = json.load(open(os.path.join(out, "hfkd.json"), encoding="utf-8"))
    student_card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert lineage["teacher_cache"]["source"] == "digits_cache"
    assert lineage["teacher_cache"]["command"] == ("python recipes/cache_teachers.py --teachers teacher_a "
                                                   "--output_dir=digits_cache --num_views 1")
    assert "read from the teacher cache `digits_cache`" in student_card
    dataset_card = render_dataset_card(CacheMetadata.load(folder), folder, repo_id="ORG/NAME")
    for text in (json.dumps(lineage), student_card, dataset_card):
        assert where not in text and str(tmp_path) not in text


def test_generation_never_writes_into_existing_folders(setup, tmp_path):
    """The cache's folder and its two staging folders must be new: a folder that is there is refused, untouched."""
    for suffix in ("", ".partial", ".staging"):
        target = tmp_path / f"cache{len(suffix)}"
        occupied = tmp_path / f"cache{len(suffix)}{suffix}"
        occupied.mkdir()
        (occupied / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match="never overwrites"):
            cache_teacher_outputs(setup["teachers"], setup["train"], str(target), student=setup["student"],
                                  augment=AUGMENT, num_views=1, seed=0, batch_size=16)
        assert sorted(p.name for p in occupied.iterdir()) == ["notes.txt"]
        assert (occupied / "notes.txt").read_text() == "mine"


def test_a_teacher_aligned_by_name_keeps_its_alignment_in_the_cache(setup, tmp_path):
    """Generation keeps a teacher that create_teacher aligned by label name, as the trainer does."""
    train, student = setup["train"], setup["student"]
    names = train.features["label"].names
    torch.manual_seed(3)
    backbone = create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32,
                               label_names=list(reversed(names)))  # the digits' classes in reverse order
    teacher = create_teacher(backbone, student.preprocess, 10, names, align_labels_by_name=True)
    folder = str(tmp_path / "aligned")
    cache_teacher_outputs([teacher], train, folder, student=student, augment=AUGMENT, num_views=1, seed=0,
                          batch_size=16)
    cache = TeacherCache(folder, draw_seed=0)
    replay = ImageClassificationDataset(train, create_image_transform(student.preprocess, True, AUGMENT),
                                        "image", "label", seed=0)
    cache.attach(replay, student.preprocess)
    rows = [replay[i] for i in range(8)]
    x = torch.stack([r["pixel_values"] for r in rows])
    (stored,) = cache.teacher_outputs({"cache_logits": torch.stack([r["cache_logits"] for r in rows])})
    with torch.no_grad():
        aligned, raw = teacher(x).logits, create_teacher(backbone, student.preprocess)(x).logits  # raw: no alignment
    torch.testing.assert_close(stored.logits, aligned, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stored.logits, raw.flip(-1), atol=1e-5, rtol=1e-5)  # stored in the student's order
