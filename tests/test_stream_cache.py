"""A teacher cache of a stream, keyed by sample key (hfkd/cache/generate.py ``_cache_stream``, hfkd/cache/lookup.py).

The data: 32 digits written as 4 Parquet shards of 8 (made here), streamed with ``load_stream`` (each sample keyed
``train-0000S-of-00004.parquet:ROW``); a random test_resnet teacher at 32 px.
"""
import json
import os

import numpy as np
import pytest
import torch

from conftest import run_args
from hfkd import DistillationTrainer, cache_teacher_outputs, create_backbone
from hfkd.cache.lookup import TeacherCache
from hfkd.data import AugmentConfig
from hfkd.data.stream import KEY_COLUMN, StreamedImageDataset, key_id, load_stream
from hfkd.data.transforms import create_image_transform

SHARDS, ROWS = 4, 8
AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5)


def write_shards(folder, digits, start=0, shards=SHARDS):
    os.makedirs(folder, exist_ok=True)
    train = digits.train.select(range(start, start + shards * ROWS))
    for s in range(shards):
        name = f"train-{s:05d}-of-{shards:05d}.parquet"
        train.select(range(s * ROWS, (s + 1) * ROWS)).to_parquet(os.path.join(folder, name))
    return str(folder)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits):
    return write_shards(tmp_path_factory.mktemp("shards"), digits)


def student():
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)


def teacher():
    torch.manual_seed(7)
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32).eval()


def make_cache(stream, folder, num_views=2, seed=3, **kw):
    return cache_teacher_outputs([teacher()], stream, str(folder), student=student(), augment=AUGMENT,
                                 num_views=num_views, seed=seed, batch_size=8, **kw)


@pytest.fixture(scope="module")
def keyed(shards, tmp_path_factory):
    return make_cache(load_stream(shards)[0]["train"], tmp_path_factory.mktemp("c") / "cache")


def test_the_cached_logits_of_each_sample_are_the_teachers_on_the_view_a_streamed_run_makes(shards, keyed):
    stream = load_stream(shards)[0]["train"]
    meta = json.load(open(os.path.join(keyed, "hfkd_cache.json")))
    assert meta["format_version"] == 4 and meta["sample_key_columns"] == [KEY_COLUMN]
    assert meta["num_samples"] == SHARDS * ROWS and set(meta["stream_files"]) == set(os.listdir(shards))
    cache = TeacherCache(keyed)
    model = teacher()
    transform = create_image_transform(student().preprocess, True, AUGMENT)
    # The training reader, shuffled as a training run shuffles: view v of a key is what it makes at epoch v.
    reader = StreamedImageDataset(stream.shuffle(seed=3, buffer_size=1), transform, "image", "label",
                                  key_columns=[KEY_COLUMN], batch_size=8, buffer_size=16, seed=3)
    seen = set()
    for view in range(2):
        reader.set_epoch(view)
        for batch in reader:
            with torch.no_grad():
                online = model(batch["pixel_values"]).logits
            for i, logits in zip(batch["index"].tolist(), online):
                row = cache.columns.row(cache.columns.position_of(i, view))
                torch.testing.assert_close(row["cache_logits"].view(-1), logits, rtol=0, atol=1e-5)
                seen.add((i, view))
    keys = {key_id(f"train-{s:05d}-of-{SHARDS:05d}.parquet:{r}") for s in range(SHARDS) for r in range(ROWS)}
    assert seen == {(k, v) for k in keys for v in range(2)}


def student_weights(trainer):
    return {k: v.detach().clone() for k, v in trainer._student_module().state_dict().items()}


def kd_run(stream, tmp_path, name, **kw):
    torch.manual_seed(0)
    args = run_args(tmp_path / name, **{"max_steps": 3, "per_device_train_batch_size": 8, "seed": 3,
                                        "stream_shuffle_buffer": 16, **kw.pop("args", {})})
    trainer = DistillationTrainer(student(), method="kd", args=args, train_dataset=stream, augment=AUGMENT, **kw)
    trainer.train()
    return trainer


def test_kd_from_the_keyed_cache_equals_kd_with_the_teacher_online(shards, tmp_path):
    stream = load_stream(shards)[0]["train"]
    cache = make_cache(stream, tmp_path / "r1", num_views=1)  # one view: epoch 0's, which the online run sees
    online = kd_run(stream, tmp_path, "online", teachers=[teacher()])
    cached = kd_run(stream, tmp_path, "cached", teacher_cache=cache)
    a, b = student_weights(online), student_weights(cached)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # a worker process decodes the batches and looks the views up in the cache: the same run
    workers = student_weights(kd_run(stream, tmp_path, "workers", teacher_cache=cache,
                                     args={"dataloader_num_workers": 1}))
    assert all(torch.equal(b[k], workers[k]) for k in b)
    assert any(not torch.equal(v, w) for v, w in zip(a.values(), student_weights(kd_run(
        stream, tmp_path, "fresh", teachers=[teacher()], args={"max_steps": 1})).values()))  # the runs trained


def test_a_cache_of_another_stream_or_of_a_loaded_split_is_refused(shards, keyed, tmp_path, digits):
    other = load_stream(write_shards(tmp_path / "other", digits, start=64))[0]["train"]  # same names, other rows
    with pytest.raises(ValueError, match="generated from another stream.*hfkd cache --streaming true"):
        kd_run(other, tmp_path, "x", teacher_cache=keyed)
    fewer = load_stream(write_shards(tmp_path / "fewer", digits, shards=2))[0]["train"]
    with pytest.raises(ValueError, match="generated from another stream"):
        kd_run(fewer, tmp_path, "y", teacher_cache=keyed)
    loaded = digits.train.select(range(32))
    with pytest.raises(ValueError, match="generated from a stream.*--streaming true"):
        kd_run(loaded, tmp_path, "z", teacher_cache=keyed)
    by_row = cache_teacher_outputs([teacher()], loaded, str(tmp_path / "rows"), student=student(), augment=AUGMENT,
                                   num_views=1, seed=3, batch_size=8)
    with pytest.raises(ValueError, match="by row of a loaded .*hfkd cache --streaming true"):
        kd_run(load_stream(shards)[0]["train"], tmp_path, "w", teacher_cache=by_row)
    with pytest.raises(ValueError, match="keyed by the columns"):
        kd_run(load_stream(shards)[0]["train"], tmp_path, "v", teacher_cache=keyed, args={"sample_key_column": "label"})


def test_a_sample_whose_key_is_not_in_the_cache_is_refused_at_its_batch(tmp_path, digits):
    from datasets import Value

    def keyed_stream(ids):
        data = digits.train.select(range(len(ids))).add_column("id", ids)
        return data.cast_column("id", Value("string")).to_iterable_dataset(num_shards=2)

    ids = [str(i) for i in range(16)]
    cache = make_cache(keyed_stream(ids), tmp_path / "c", num_views=1, sample_key_column="id")
    # A stream from elsewhere (no files to compare): same columns and shards, one sample not in the cache.
    changed = keyed_stream(ids[:15] + ["new-sample"])
    refused = "streamed sample 'new-sample' .*not in the teacher cache.*hfkd cache --streaming"
    with pytest.raises(ValueError, match=refused):
        kd_run(changed, tmp_path, "run", teacher_cache=cache, args={"sample_key_column": "id", "max_steps": 4})
    kd_run(keyed_stream(ids), tmp_path, "same", teacher_cache=cache, args={"sample_key_column": "id", "max_steps": 2})


def test_a_cache_whose_keys_repeat_is_refused_on_open(tmp_path, digits):
    data = digits.train.select(range(16)).add_column("id", ["a"] * 2 + [str(i) for i in range(14)])
    cache = make_cache(data.to_iterable_dataset(num_shards=2), tmp_path / "c", num_views=1, sample_key_column="id")
    with pytest.raises(ValueError, match="key columns do not identify one sample each"):
        _ = TeacherCache(cache).columns


def test_hfkd_cache_caches_a_stream_of_shards_by_key(shards, tmp_path):
    from helpers.models import saved_model
    from hfkd.cli import main as hfkd_main

    out = tmp_path / "cache"
    hfkd_main(["cache", "--student", "test_resnet", "--student_pretrained", "false", "--image_size", "32",
               "--teachers", saved_model(tmp_path / "test_convnext"), "--dataset", shards, "--streaming", "true",
               "--num_views", "1", "--batch_size", "8", "--output_dir", str(out)])
    meta = json.load(open(out / "hfkd_cache.json"))
    assert meta["sample_key_columns"] == [KEY_COLUMN] and meta["num_samples"] == SHARDS * ROWS
    assert all(f.startswith("data/process-00000/") for f in meta["files"])
    assert "Keyed by sample key" in (out / "README.md").read_text()
    assert not os.path.exists(str(out) + ".partial")
    np.testing.assert_equal(np.sort(TeacherCache(str(out)).columns.keys),
                            np.sort([key_id(f"train-{s:05d}-of-{SHARDS:05d}.parquet:{r}")
                                     for s in range(SHARDS) for r in range(ROWS)]))


def rows_by_key(folder):
    columns = TeacherCache(folder).columns
    order = columns.position  # rows sorted by (key id, view)
    return columns.keys, np.concatenate(columns.chunks["logits"])[order]


@pytest.mark.slow
def test_two_processes_cache_their_own_shards_and_make_the_one_process_cache(shards, keyed, tmp_path):
    from helpers.launch import run_two_processes

    script = os.path.join(os.path.dirname(__file__), "scripts", "stream_cache_ddp.py")
    run_two_processes(script, shards, str(tmp_path / "two"))
    files = json.load(open(tmp_path / "two" / "hfkd_cache.json"))["files"]
    assert {f.split("/")[1] for f in files} == {"process-00000", "process-00001"}  # each process its own shards
    keys, logits = rows_by_key(str(tmp_path / "two"))
    one_keys, one_logits = rows_by_key(keyed)
    np.testing.assert_array_equal(keys, one_keys)
    np.testing.assert_allclose(logits, one_logits, rtol=0, atol=1e-6)


def test_a_stopped_generation_over_a_stream_restarts_from_the_start(shards, keyed, tmp_path):
    from hfkd.files import mark_writer

    stage = tmp_path / "cache.partial"
    (stage / "data" / "process-00000" / "00000").mkdir(parents=True)
    (stage / "data" / "process-00000" / "00000" / "data-00000.arrow").write_bytes(b"half a shard")
    mark_writer(str(stage))  # left by an hfkd generation of this process: hfkd's own stage
    folder = make_cache(load_stream(shards)[0]["train"], tmp_path / "cache")
    assert not stage.exists()
    keys, logits = rows_by_key(folder)
    one_keys, one_logits = rows_by_key(keyed)
    np.testing.assert_array_equal(keys, one_keys)
    np.testing.assert_array_equal(logits, one_logits)


def test_webdataset_shards_have_the_same_identity_every_time_they_are_loaded(tmp_path):
    """The identity a cache (and a checkpoint) records: it once held the text of WebDataset's open archive readers,
    which differs from one load of the same shards to the next, so a cache of them refused its own stream."""
    from test_streaming import _webdataset_shards

    from hfkd.data import load_image_dataset
    from hfkd.data.stream import describe, shard_files

    _webdataset_shards(tmp_path / "wds")

    def load():
        return load_image_dataset(str(tmp_path / "wds"), streaming=True, label_names=["a", "b", "c"]).train

    assert describe(load()) == describe(load())
    assert sorted(shard_files(load())) == sorted(os.listdir(tmp_path / "wds"))
