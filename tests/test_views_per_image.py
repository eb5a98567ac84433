"""K views per decode from a teacher cache (FKD's multi-crop): which views, their pixels and stored outputs."""
import random

import pytest
import torch

from hfkd import cache_teacher_outputs, create_backbone
from hfkd.cache.lookup import TeacherCache
from hfkd.data.augment import AugmentConfig
from hfkd.data.transforms import ImageClassificationDataset, create_image_transform, sample_seed

AUGMENT = AugmentConfig(scale=(0.25, 1.0), hflip=0.5, color_jitter=None)


@pytest.fixture(scope="module")
def cache_r4(tmp_path_factory, digits):
    torch.manual_seed(0)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    train = digits.train.select(range(6))
    folder = str(tmp_path_factory.mktemp("cache") / "r4")
    cache_teacher_outputs([teacher], train, folder, student=student, augment=AUGMENT, num_views=4, seed=0)
    return {"folder": folder, "train": train, "student": student, "teacher": teacher}


def test_one_view_per_image_draws_as_before(cache_r4):
    cache = TeacherCache(cache_r4["folder"], draw_seed=3)
    for index in range(6):
        for epoch in range(9):
            order = list(range(4))  # the one-view draw: a permutation per block of R epochs, one view per epoch
            random.Random(sample_seed(3, epoch // 4, index)).shuffle(order)
            assert cache.views_of(epoch, index, 1) == [cache.view_of(epoch, index)] == [order[epoch % 4]]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_views_are_distinct_and_not_repeated_within_a_block(cache_r4, k):
    cache = TeacherCache(cache_r4["folder"], draw_seed=1)
    per_block = 4 // k
    for index in range(6):
        for block in range(3):
            drawn = [v for e in range(block * per_block, (block + 1) * per_block) for v in cache.views_of(e, index, k)]
            assert len(drawn) == per_block * k == len(set(drawn))
    again = TeacherCache(cache_r4["folder"], draw_seed=1)  # a resumed run draws the same
    assert all(again.views_of(e, i, k) == cache.views_of(e, i, k) for e in range(5) for i in range(6))


def test_more_views_than_stored_is_refused(cache_r4):
    with pytest.raises(ValueError, match="5 views per image, but the teacher cache stores 4.*num_views >= 5"):
        TeacherCache(cache_r4["folder"]).views_of(0, 0, 5)


def test_a_batch_has_k_views_of_each_image_with_their_stored_outputs(cache_r4):
    train, preprocess = cache_r4["train"], cache_r4["student"].preprocess
    cache = TeacherCache(cache_r4["folder"], draw_seed=2)
    transform = create_image_transform(preprocess, True, AUGMENT)
    views = ImageClassificationDataset(train, transform, "image", "label", seed=9, views_per_image=2)
    cache.attach(views, preprocess)
    online = ImageClassificationDataset(train, transform, "image", "label", seed=0)  # what generation made
    views.set_epoch(3)
    rows = views.__getitems__([4, 1, 5])
    assert [r["index"] for r in rows] == [4, 4, 1, 1, 5, 5]
    for n, index in enumerate([4, 1, 5]):
        pair = rows[2 * n:2 * n + 2]
        assert [r["cache_view"] for r in pair] == cache.views_of(3, index, 2)
        for row in pair:
            view = row["cache_view"]
            online.set_epoch(view)  # stored view v is the view an online run with the cache's seed sees at epoch v
            assert torch.equal(row["pixel_values"], online[index]["pixel_values"])
            assert row["labels"] == int(train[index]["label"])
            stored = cache.columns.row(int(cache.columns.position[index * 4 + view]))  # that view's stored row
            assert torch.equal(torch.as_tensor(row["cache_logits"]), torch.as_tensor(stored["cache_logits"]))
    assert not torch.equal(torch.as_tensor(rows[0]["cache_logits"]), torch.as_tensor(rows[1]["cache_logits"]))


def test_k_views_without_stored_views_are_refused(digits):
    transform = create_image_transform(create_backbone("test_efficientnet", num_classes=10, pretrained=False,
                                                           image_size=32).preprocess,
                                       True, AUGMENT)
    views = ImageClassificationDataset(digits.train.select(range(4)), transform, "image", "label", views_per_image=2)
    with pytest.raises(ValueError, match="views_per_image=2 needs stored views.*teacher cache"):
        views.__getitems__([0, 1])
    with pytest.raises(ValueError, match="views_per_image must be an integer >= 1"):
        ImageClassificationDataset(digits.train.select(range(4)), transform, "image", "label", views_per_image=0)


# -- the trainer: crops_per_image ------------------------------------------------------------------------------
def _trainer(cache_r4, tmp_path, name, cache=True, method="kd", **kw):
    import copy

    from conftest import run_args
    from hfkd import DistillationTrainer, create_method

    settings = dict(max_steps=4, per_device_train_batch_size=4, crops_per_image=2, learning_rate=0.05,
                    optim="momentum", lr_scheduler_type="constant", seed=0, use_cpu=True)
    args = run_args(tmp_path / name, **{**settings, **kw})
    return DistillationTrainer(copy.deepcopy(cache_r4["student"]), None, create_method(method), args,
                               train_dataset=cache_r4["train"], augment=None if cache else AUGMENT,
                               teacher_cache=cache_r4["folder"] if cache else None)


def test_the_batch_size_counts_views(cache_r4, tmp_path):
    trainer = _trainer(cache_r4, tmp_path, "run")
    batches = list(trainer._train_loader())
    assert [len(b["labels"]) for b in batches] == [4, 4, 4]  # 6 images x 2 views, 2 images per batch of 4 views
    assert sorted(i for b in batches for i in b["index"].tolist()) == sorted(list(range(6)) * 2)
    for b in batches:
        assert b["index"][0] == b["index"][1] and b["cache_view"][0] != b["cache_view"][1]


def test_crops_per_image_is_refused_where_it_cannot_work(cache_r4, tmp_path):
    with pytest.raises(ValueError, match="crops_per_image=2 .* needs a teacher cache.*'supervised'"):
        _trainer(cache_r4, tmp_path, "a", cache=False, method="supervised")
    with pytest.raises(ValueError, match="crops_per_image=8, but the teacher cache stores 4 view"):
        _trainer(cache_r4, tmp_path, "b", crops_per_image=8, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match="must be a multiple of crops_per_image"):
        _trainer(cache_r4, tmp_path, "c", per_device_train_batch_size=5)


def test_a_resumed_run_trains_on_the_same_views(cache_r4, tmp_path):
    straight = _trainer(cache_r4, tmp_path, "straight", max_steps=5)  # across the epoch boundary (3 steps)
    straight.train()
    stopped = _trainer(cache_r4, tmp_path, "resumed", max_steps=5, save_strategy="steps", save_steps=2)
    stopped.train()
    resumed = _trainer(cache_r4, tmp_path, "resumed", max_steps=5,
                       resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))
    resumed.train()
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"(?s)different run.*crops_per_image"):
        _trainer(cache_r4, tmp_path, "resumed", max_steps=5, crops_per_image=1, per_device_train_batch_size=4,
                 resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2")).train()


# -- every view trained on is the view its stored outputs were computed on ------------------------------------
def _recording(trainer):
    """The trainer, keeping a copy of every batch it trains on (pixels, image, stored view and stored logits)."""
    trainer.trained = []
    step = trainer._train_step

    def recorded(batch):
        trainer.trained.append({k: batch[k].detach().clone() for k in ("pixel_values", "index", "cache_view",
                                                                       "cache_logits")})
        return step(batch)

    trainer._train_step = recorded
    return trainer


def _assert_teacher_gives_the_stored_logits(cache_r4, batches):
    from hfkd.models.teacher import bind_teacher

    teacher = bind_teacher(cache_r4["teacher"], cache_r4["student"].preprocess, 10, None).eval()
    for batch in batches:
        online = teacher(batch["pixel_values"]).logits  # the frozen teacher run on the very views trained on
        assert torch.allclose(online, batch["cache_logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("spread", [True, False])
def test_every_trained_view_is_the_stored_view_across_blocks_and_a_resume(cache_r4, tmp_path, spread):
    # R = 4 stored views, K = 2: a block of R // K = 2 epochs; 6 images, 2 per loaded batch: 3 steps an epoch.
    # 8 steps run into epoch 2 (past the block boundary between epochs 1 and 2); the resume starts mid-epoch 1
    # (step 4, inside a group of two batches when spread) and crosses the block boundary.
    settings = dict(max_steps=8, spread_crops=spread)
    straight = _recording(_trainer(cache_r4, tmp_path, f"straight{spread}", **settings))
    straight.train()
    _assert_teacher_gives_the_stored_logits(cache_r4, straight.trained)
    per_epoch = [straight.trained[e * 3:(e + 1) * 3] for e in range(3)]
    for epoch in per_epoch[:2]:  # an epoch trains every image on K = 2 distinct views
        pairs = sorted((int(i), int(v)) for b in epoch for i, v in zip(b["index"], b["cache_view"]))
        assert [i for i, _ in pairs] == sorted(list(range(6)) * 2) and len(set(pairs)) == 12
    for index in range(6):  # the block's two epochs deal all R = 4 views of each image, each once
        views = [int(v) for b in per_epoch[0] + per_epoch[1] for i, v in zip(b["index"], b["cache_view"]) if i == index]
        assert sorted(views) == [0, 1, 2, 3]
    cache = TeacherCache(cache_r4["folder"], draw_seed=0)
    for epoch, batches in enumerate(per_epoch):
        for b in batches:
            assert all(int(v) in cache.views_of(epoch, int(i), 2) for i, v in zip(b["index"], b["cache_view"]))
    if spread:  # a batch holds one view of each of its 4 images
        assert all(len(set(b["index"].tolist())) == 4 for b in straight.trained[:2])

    stopped = _trainer(cache_r4, tmp_path, f"resumed{spread}", save_strategy="steps", save_steps=4, **settings)
    stopped.train()
    resumed = _recording(_trainer(cache_r4, tmp_path, f"resumed{spread}", resume_from_checkpoint=str(
        tmp_path / f"resumed{spread}" / "checkpoint-4"), **settings))
    resumed.train()
    assert len(resumed.trained) == 4
    for a, b in zip(straight.trained[4:], resumed.trained):
        assert all(torch.equal(a[k], b[k]) for k in a)
    _assert_teacher_gives_the_stored_logits(cache_r4, resumed.trained)
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_inside_a_group_resumes_only_in_its_layout(cache_r4, tmp_path):
    stopped = _trainer(cache_r4, tmp_path, "layout", max_steps=8, save_strategy="steps", save_steps=4)
    stopped.train()  # step 4: epoch 1, after the first of a group of two batches
    other = dict(max_steps=8, per_device_train_batch_size=8, resume_allow_changes=["per_device_train_batch_size"])
    with pytest.raises(ValueError, match=r"stopped inside a group of 2 batches.*Resume on 1 process\(es\) with batch 4"):
        _trainer(cache_r4, tmp_path, "layout", resume_from_checkpoint=str(tmp_path / "layout" / "checkpoint-4"),
                 **other).train()
    stopped = _trainer(cache_r4, tmp_path, "layout2", max_steps=8, save_strategy="steps", save_steps=5)
    stopped.train()  # step 5: epoch 1, at a group's end: any layout continues it
    _trainer(cache_r4, tmp_path, "layout2", resume_from_checkpoint=str(tmp_path / "layout2" / "checkpoint-5"),
             **other).train()


def test_views_are_dealt_view_by_view_over_a_group():
    from hfkd.data.views import spread_views

    # 5 loaded batches of 2 images x 3 views (rows image-major: image i's views 3i, 3i+1, 3i+2), K = 3
    rows = torch.arange(30)
    loaded = [{"labels": rows[6 * b:6 * b + 6], "index": rows[6 * b:6 * b + 6] // 3} for b in range(5)]
    dealt = [b["labels"].tolist() for b in spread_views(loaded, 3)]
    assert dealt[:3] == [[0, 3, 6, 9, 12, 15], [1, 4, 7, 10, 13, 16], [2, 5, 8, 11, 14, 17]]  # one view of each
    assert dealt[3:] == [[18, 21, 24, 27, 19, 22], [25, 28, 20, 23, 26, 29]]  # the last group: 2 batches
    assert [b["labels"].tolist() for b in spread_views(loaded, 3, skip=2)] == dealt[2:]
    assert sorted(sum(dealt, [])) == rows.tolist()
    # gpu_decode's batches carry the images' bytes as a list (default_collate keeps them so): dealt alike
    encoded = [dict(b, image_bytes=[bytes([int(i)]) for i in b["labels"]]) for b in loaded]
    for batch in spread_views(encoded, 3):
        assert batch["image_bytes"] == [bytes([int(i)]) for i in batch["labels"]]


def test_an_item_with_k_views_is_all_k_views(cache_r4):
    train, preprocess = cache_r4["train"], cache_r4["student"].preprocess
    cache = TeacherCache(cache_r4["folder"], draw_seed=2)
    views = ImageClassificationDataset(train, create_image_transform(preprocess, True, AUGMENT), "image", "label",
                                       views_per_image=3)
    cache.attach(views, preprocess)
    views.set_epoch(1)
    item, batch = views[4], views.__getitems__([4])
    assert [row["cache_view"] for row in item] == cache.views_of(1, 4, 3)
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(item, batch))


def test_the_start_banner_counts_views_and_images(cache_r4, tmp_path, capsys):
    _trainer(cache_r4, tmp_path, "banner", max_steps=1, disable_tqdm=True).train()
    out = capsys.readouterr().out
    assert "batches of 4 views = 2 images x 2 views per decode" in out and "an epoch: 6 images, 12 views" in out


def test_the_dry_run_counts_views_and_images(capsys):
    from hfkd.cli.distill import parse_distill_args, run_settings

    argv = ["--method", "kd", "--student", "test_resnet", "--max_train_samples", "64", "--num_train_epochs", "2",
            "--per_device_train_batch_size", "16", "--crops_per_image", "4", "--teacher_cache", "ORG/soft-labels",
            "--dry_run"]
    with pytest.raises(SystemExit):  # offline, the Hub cache cannot be opened: the counts are printed first
        run_settings(parse_distill_args(argv))
    out = capsys.readouterr().out
    assert "64 training images (256 views per epoch), 1 process(es): 16 optimizer steps per epoch, 32 in total" in out
    assert "a batch of 16 views loads 4 images, each image's views dealt to consecutive batches" in out


def test_the_dry_run_lists_views_per_decode_without_a_cache(tmp_path, capsys):
    from helpers.models import saved_model

    from hfkd.cli.distill import parse_distill_args, run_settings

    teacher = saved_model(tmp_path / "test_convnext")
    argv = ["--method", "kd", "--student", "test_resnet", "--max_train_samples", "64", "--teachers", teacher,
            "--per_device_train_batch_size", "16", "--crops_per_image", "2", "--output_dir", str(tmp_path / "o"),
            "--dry_run"]
    with pytest.raises(SystemExit) as stopped:  # the check the trainer would make at its start, listed now
        run_settings(parse_distill_args(argv))
    assert "crops_per_image=2 trains each decoded image on 2 views" in str(stopped.value.code)
    assert "needs a teacher cache" in str(stopped.value.code)
