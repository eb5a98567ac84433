"""Streamed train and eval splits (hfkd/data/stream.py, hfkd/training/streaming.py).

The data: 128 digits written as 4 Parquet shards of 32 (made here), streamed with ``load_stream``, so each
sample is keyed ``train-0000S-of-00004.parquet:ROW``.  The end-to-end runs start ``tests/scripts/stream_run.py``
(KD from a random test_resnet teacher, batch 8, blocks of 16 shuffled samples).
"""
import json
import logging
import os
import signal

import pytest
import torch

from conftest import run_args
from hfkd import DistillationTrainer, create_backbone
from hfkd.data import AugmentConfig
from hfkd.data.labels import FROM_OPTION
from hfkd.data.stream import KEY_COLUMN, StreamedImageDataset, key_id, load_stream, split_for_process
from hfkd.data.transforms import create_image_transform
from test_preemption import checkpoints, same_weights, student_weights

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "stream_run.py")
SHARDS, ROWS = 4, 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from hfkd.data import load_image_dataset

    folder = tmp_path_factory.mktemp("shards")
    train = load_image_dataset().train.select(range(SHARDS * ROWS))
    for s in range(SHARDS):
        train.select(range(s * ROWS, (s + 1) * ROWS)).to_parquet(str(folder / f"train-{s:05d}-of-{SHARDS:05d}.parquet"))
    return folder


def all_keys():
    return {key_id(f"train-{s:05d}-of-{SHARDS:05d}.parquet:{row}") for s in range(SHARDS) for row in range(ROWS)}


def reader(stream, **kw):
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    transform = create_image_transform(student.preprocess, True, AugmentConfig(scale=(0.5, 1.0), hflip=0.5))
    options = dict(key_columns=[KEY_COLUMN], batch_size=8, buffer_size=16, seed=3)
    return StreamedImageDataset(stream.shuffle(seed=3, buffer_size=1), transform, "image", "label", **{**options, **kw})


def batches(data, epoch):
    data.set_epoch(epoch)
    return list(data)


def test_a_position_continues_the_stream_bitwise_mid_block_and_at_an_epoch_end(shards):
    train = load_stream(str(shards))[0]["train"]
    full = batches(reader(train), 1)
    assert len(full) == SHARDS * ROWS // 8
    assert {i for b in full for i in b["index"].tolist()} == all_keys()  # the epoch: every sample once
    assert len({i for b in full for i in b["index"].tolist()}) == SHARDS * ROWS
    for stop in (2, 5, len(full) - 1):  # 16 samples (a block's end), 48 (mid-block: 8 of block 3), the last batch
        resumed = reader(train)
        resumed.start_at(full[stop]["stream_position"])
        rest = batches(resumed, 1)
        assert len(rest) == len(full) - stop - 1
        for a, b in zip(rest, full[stop + 1:]):
            assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["index"], b["index"])
    # another epoch: another order of shards and blocks, and other augmentations of the same samples
    other = batches(reader(train), 2)
    assert [b["index"].tolist() for b in other] != [b["index"].tolist() for b in full]


def test_the_augmentation_of_a_sample_depends_on_its_key_not_on_its_place(shards):
    train = load_stream(str(shards))[0]["train"]
    shuffled = {i: p for b in batches(reader(train, buffer_size=16), 0) for i, p in zip(b["index"].tolist(),
                                                                                       b["pixel_values"])}
    in_order = {i: p for b in batches(reader(train, buffer_size=1), 0) for i, p in zip(b["index"].tolist(),
                                                                                      b["pixel_values"])}
    assert shuffled.keys() == in_order.keys()
    assert all(torch.equal(shuffled[k], in_order[k]) for k in shuffled)


def test_two_processes_read_disjoint_whole_shards_that_make_the_epoch(shards, caplog):
    train = load_stream(str(shards))[0]["train"].shuffle(seed=0, buffer_size=1)
    with caplog.at_level(logging.WARNING):
        parts = [split_for_process(train, rank, 2) for rank in (0, 1)]
    assert "not a multiple" not in caplog.text
    for epoch in (0, 1):
        seen = []
        for part in parts:
            part.set_epoch(epoch)
            seen.append([row[KEY_COLUMN] for row in part])
        assert not set(seen[0]) & set(seen[1])
        assert {key_id(k) for k in seen[0] + seen[1]} == all_keys()
        assert {k.split(":")[0] for k in seen[0]}.isdisjoint({k.split(":")[0] for k in seen[1]})  # whole shards


def test_shards_that_do_not_divide_among_the_processes_are_named(shards, caplog):
    train = load_stream(str(shards))[0]["train"]
    with caplog.at_level(logging.WARNING):
        split_for_process(train, 0, 3)
    assert "4 shard(s), not a multiple of the 3 processes" in caplog.text and "6" in caplog.text


def trainer_on(stream, tmp_path, method="kd", teachers=1, evaluation=None, **overrides):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    teacher = [create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)] * teachers
    args = run_args(tmp_path / "out", **{"max_steps": 2, "per_device_train_batch_size": 8, **overrides})
    return DistillationTrainer(student, teachers=teacher, method=method, args=args, train_dataset=stream,
                               eval_dataset=evaluation)


def test_what_a_stream_cannot_do_is_refused_before_training_with_the_fix(shards, tmp_path, digits):
    train = load_stream(str(shards))[0]["train"]
    with pytest.raises(ValueError) as e:
        trainer_on(train, tmp_path, max_steps=-1)
    assert "set max_steps" in str(e.value)
    with pytest.raises(ValueError) as e:
        trainer_on(train, tmp_path, method="pskd", teachers=0)
    assert "method 'pskd' cannot train from a stream" in str(e.value) and "bank" in str(e.value)
    with pytest.raises(ValueError) as e:
        trainer_on(train, tmp_path, method="bake", teachers=0, verify_images=True)
    assert "method 'bake'" in str(e.value) and "verify_images reads every image" in str(e.value)  # all at once
    with pytest.raises(ValueError) as e:  # a teacher cache keyed by sample key is used: tests/test_stream_cache.py
        trainer_on(train, tmp_path, crops_per_image=2)
    assert "crops_per_image=2: a stream's reader makes one view per decoded image" in str(e.value)
    assert "hfkd cache" not in str(e.value)  # its own reason, not the map-style "make a cache"
    # a stream with no key: datasets' own stream of a split (its rows carry no file or row)
    keyless = digits.train.select(range(64)).to_iterable_dataset(num_shards=2)
    with pytest.raises(ValueError) as e:
        trainer_on(keyless, tmp_path)
    assert "no stable sample key" in str(e.value) and "sample_key_column" in str(e.value)
    with pytest.raises(ValueError) as e:
        trainer_on(keyless, tmp_path, sample_key_column="id")
    assert "'id' is not a column" in str(e.value)


def test_a_named_key_column_keys_a_stream_passed_in_python(tmp_path, digits):
    data = digits.train.select(range(48))
    data = data.add_column("id", [f"img{i}" for i in range(48)])
    trainer = trainer_on(data.to_iterable_dataset(num_shards=2), tmp_path, sample_key_column="id")
    trainer.train()
    assert trainer.state.global_step == 2
    trainer.save_model()
    card = (tmp_path / "out" / "student" / "README.md").read_text()
    assert "streamed (its size not counted)" in card and "? training" not in card


def test_a_streamed_eval_split_is_evaluated_once_like_the_same_split_in_memory(shards, tmp_path, digits):
    train = load_stream(str(shards))[0]["train"]
    evaluation = digits.eval.select(range(40))
    trainer = trainer_on(train, tmp_path, evaluation=evaluation.to_iterable_dataset(num_shards=2))
    streamed = trainer.evaluate()
    in_memory = trainer.evaluate(evaluation)
    assert streamed["eval_samples"] == 40
    for k in ("eval_accuracy", "eval_loss", "eval_top5_accuracy"):
        assert streamed[k] == pytest.approx(in_memory[k], abs=1e-6)


def run_script(shards, out_dir, *args, timeout=600):
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, SCRIPT, str(shards), str(out_dir), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def seen(out_dir):
    """{(tag, rank): [(epoch, key ids)]} of every run in ``out_dir``."""
    found = {}
    for name in os.listdir(out_dir):
        if name.startswith("seen-"):
            _, tag, rank = name[:-5].split("-")
            found[tag, rank] = [(b["epoch"], [int(i) for i in b["index"]]) for b in json.loads((out_dir / name).read_text())]
    return found


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_bitwise(shards, tmp_path):
    """20 steps of 8 = 160 samples: past the 128 of the first epoch.  SIGTERM at step 7 (56 samples: mid-block)."""
    reference = tmp_path / "reference"
    reference.mkdir()
    done = run_script(shards, reference, "--max_steps", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    first_epoch = [i for epoch, ids in seen(reference)["run", "rank0"] if epoch == 0 for i in ids]
    assert sorted(first_epoch) == sorted(all_keys())

    stopped = run_script(shards, tmp_path, "--max_steps", "20", "--at", "7", "--tag", "first")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert checkpoints(tmp_path) == ["checkpoint-7"]
    state = json.loads((tmp_path / "run" / "checkpoint-7" / "trainer_state.json").read_text())
    position = state["stream"]["positions"][0]
    assert state["stream"]["world_size"] == 1 and (position["epoch"], position["block"], position["offset"]) == (0, 3, 8)
    resumed = run_script(shards, tmp_path, "--max_steps", "20", "--resume", "--tag", "second")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = seen(tmp_path)
    assert runs["first", "rank0"] + runs["second", "rank0"] == seen(reference)["run", "rank0"]
    assert same_weights(student_weights(tmp_path), student_weights(reference))


@pytest.mark.slow
def test_two_processes_train_on_disjoint_shards_that_make_the_epoch_and_resume_bitwise(shards, tmp_path):
    """2 processes x batch 8: 8 steps per epoch (2 whole shards each); 12 steps cross into the second epoch.  The
    reference run also evaluates on a streamed eval split of 37 digits."""
    from helpers.launch import run_two_processes

    reference = tmp_path / "reference"
    reference.mkdir()
    done = run_two_processes(SCRIPT, str(shards), str(reference), "--max_steps", "12", "--eval", "37")
    evaluated = json.loads(done.stdout.split("EVAL ", 1)[1].splitlines()[0])  # a streamed eval split, 2 processes
    assert evaluated["eval_samples"] == 37  # each sample once: Accelerate's padding of the last batch is dropped
    runs = seen(reference)
    first = [[i for epoch, ids in runs["run", rank] if epoch == 0 for i in ids] for rank in ("rank0", "rank1")]
    assert len(first[0]) == len(first[1]) == SHARDS * ROWS // 2
    assert not set(first[0]) & set(first[1])
    assert set(first[0]) | set(first[1]) == all_keys()

    stopped = run_two_processes(SCRIPT, str(shards), str(tmp_path), "--max_steps", "12", "--at", "5", "--tag",
                                "first", check=False)
    assert stopped.returncode != 0 and checkpoints(tmp_path) == ["checkpoint-5"], stopped.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["stream"]["world_size"] == 2 and len(state["stream"]["positions"]) == 2
    # on 1 process the stream's parts are other parts: refused, naming the way out
    refused = run_script(shards, tmp_path, "--max_steps", "12", "--resume", "--allow", "world_size", "--tag", "one")
    assert refused.returncode != 0 and "Resume on 2 process(es)" in refused.stderr, refused.stderr[-3000:]
    run_two_processes(SCRIPT, str(shards), str(tmp_path), "--max_steps", "12", "--resume", "--tag", "second")
    resumed = seen(tmp_path)
    for rank in ("rank0", "rank1"):
        assert resumed["first", rank] + resumed["second", rank] == runs["run", rank]
    assert same_weights(student_weights(tmp_path), student_weights(reference))


def test_load_image_dataset_streams_a_folder_of_shards_with_its_validation_split(shards, tmp_path, digits):
    from hfkd.data import load_image_dataset

    folder = tmp_path / "with_validation"
    folder.mkdir()
    for name in os.listdir(shards):
        os.symlink(shards / name, folder / name)
    digits.eval.select(range(20)).to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    data = load_image_dataset(str(folder), streaming=True)
    assert data.streamed and data.eval_split == "validation" and data.label_names == digits.label_names
    assert sum(1 for _ in data.eval) == 20 and data.train.num_shards == SHARDS
    with pytest.raises(ValueError, match="drop --streaming"):
        load_image_dataset(streaming=True)


def test_save_strategy_epoch_on_a_stream_saves_at_the_end_of_the_run(shards, tmp_path):
    train = load_stream(str(shards))[0]["train"]
    trainer = trainer_on(train, tmp_path, save_strategy="epoch", max_steps=3)
    trainer.train()
    assert sorted(n for n in os.listdir(tmp_path / "out") if n.startswith("checkpoint-")) == ["checkpoint-3"]


def _webdataset_shards(folder, shards=2, per_shard=8):
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                image = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(image, format="JPEG")
                for extension, data in (("jpg", image.getvalue()), ("cls", str(i % 3).encode())):
                    member = tarfile.TarInfo(f"s{s}_{i:04d}.{extension}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return {key_id(f"train-{s:05d}.tar/s{s}_{i:04d}") for s in range(shards) for i in range(per_shard)}


def test_webdataset_shards_are_keyed_by_shard_and_key_and_their_integer_classes_named(tmp_path):
    from hfkd.data import load_image_dataset

    keys = _webdataset_shards(tmp_path / "wds")
    with pytest.raises(ValueError, match=r"label_names=\[\.\.\.\]"):
        load_image_dataset(str(tmp_path / "wds"), streaming=True)
    data = load_image_dataset(str(tmp_path / "wds"), streaming=True, label_names=["a", "b", "c"])
    assert (data.image_column, data.label_column, data.label_names) == ("jpg", "cls", ["a", "b", "c"])
    assert data.label_source == FROM_OPTION  # the one option that names classes, streamed or not
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=3, pretrained=False, image_size=32)
    trainer = DistillationTrainer(student, method="supervised", train_dataset=data.train,
                                  args=run_args(tmp_path / "out", max_steps=2, per_device_train_batch_size=8))
    assert trainer.train_dataset.key_columns == ["__url__", "__key__"]
    trainer.train_dataset.set_epoch(0)
    assert {i for b in trainer.train_dataset for i in b["index"].tolist()} == keys
    trainer.train()
    assert trainer.state.global_step == 2


def test_an_unreadable_streamed_image_is_named_by_its_key_or_skipped(tmp_path, digits):
    from datasets import Image

    from hfkd.data.checks import BadImageError

    rows = digits.train.select(range(16)).cast_column("image", Image(decode=False)).to_list()
    rows[5]["image"] = {"bytes": b"not an image", "path": None}
    from datasets import Dataset

    folder = tmp_path / "bad"
    folder.mkdir()
    Dataset.from_list(rows, features=digits.train.features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    train = load_stream(str(folder))[0]["train"]
    with pytest.raises(BadImageError, match=r"streamed sample 'train-00000-of-00001.parquet:5' .*UnidentifiedImageError.*on_bad_image='skip'"):
        batches(reader(train), 0)
    skipping = reader(train, on_bad_image="skip")
    kept = [i for b in batches(skipping, 0) for i in b["index"].tolist()]
    assert len(kept) == 15 and key_id("train-00000-of-00001.parquet:5") not in kept
    assert skipping.skipped == ["train-00000-of-00001.parquet:5"]
    trainer = DistillationTrainer(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32),
                                  method="supervised", train_dataset=train,
                                  args=run_args(tmp_path / "out", max_steps=2, per_device_train_batch_size=8,
                                                on_bad_image="skip", sample_key_column=KEY_COLUMN))
    trainer.train()
    skipped = trainer.lineage()["bad_images"]["train"]["skipped"]
    assert skipped == [{"row": key_id("train-00000-of-00001.parquet:5"),
                        "file": "sample train-00000-of-00001.parquet:5"}]


def test_gradient_accumulation_on_a_stream_counts_batches_across_epochs(shards, tmp_path):
    train = load_stream(str(shards))[0]["train"]
    # 128 samples = 16 batches of 8 per epoch; 10 steps of 2 batches = 20 batches: into the second epoch
    trainer = trainer_on(train, tmp_path, max_steps=10, gradient_accumulation_steps=2)
    trainer.train()
    assert trainer.state.global_step == 10 and (trainer.state.epoch, trainer.state.batches_in_epoch) == (1, 4)


def test_the_command_streams_shards_and_its_dry_run_lists_what_a_stream_refuses(shards, tmp_path, capsys):
    from hfkd.cli import main as hfkd_main

    common = ["--student", "test_resnet", "--student_pretrained", "false", "--image_size", "32", "--dataset",
              str(shards), "--streaming", "true", "--output_dir", str(tmp_path / "never"), "--dry_run"]
    with pytest.raises(SystemExit) as stop:
        hfkd_main(["distill", "--method", "pskd", *common])
    out = capsys.readouterr()
    assert stop.value.code != 0
    text = out.out + out.err + str(stop.value.code)  # the problems are the exit message
    assert "method 'pskd' cannot train from a stream" in text and "set max_steps (--max_steps N)" in text
    from helpers.models import saved_model

    teacher = saved_model(tmp_path / "test_convnext")
    report = hfkd_main(["distill", "--method", "kd", "--teachers", teacher, "--max_steps", "30", *common])
    assert report["total_steps"] == 30 and report["train_images"] is None
    assert "a streamed train split, 1 process(es): 30 optimizer steps" in capsys.readouterr().out
    assert not (tmp_path / "never").exists()


def test_worker_processes_make_the_same_batches_and_positions(shards, tmp_path):
    train = load_stream(str(shards))[0]["train"]
    alone = batches(reader(train), 1)
    workers = reader(train, num_workers=2)
    together = batches(workers, 1)
    assert len(together) == len(alone)
    for a, b in zip(together, alone):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["index"], b["index"])
        assert a["stream_position"] == b["stream_position"]
    workers.start_at(alone[5]["stream_position"])  # a resume with workers continues where the batch left off
    rest = batches(workers, 1)
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(rest, alone[6:]))
    assert len(rest) == len(alone) - 6
    trainer = trainer_on(train, tmp_path, dataloader_num_workers=2)  # the trainer passes its workers on
    assert trainer.train_dataset.num_workers == 2
    trainer.train()
    assert trainer.state.global_step == 2
