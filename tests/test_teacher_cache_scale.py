"""A teacher cache at scale (issue 23): size-capped shards, at most MAX_FILES_PER_FOLDER entries per folder, and a
large cache pushed to the Hub in several resumable commits and loaded back by its id."""
import os

import numpy as np
import pytest

from helpers.models import tiny_student, tiny_teacher
from hfkd import cache_teacher_outputs
from hfkd.cache import TeacherCache
from hfkd.cache.format import CacheMetadata, estimated_bytes_per_view, shard_path
from hfkd.cache.generate import SHARD_HEADER_BYTES, parse_shard_size
from hfkd.data.transforms import AugmentConfig

AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)
ROW = estimated_bytes_per_view(1, 10, None, "float32")  # one teacher, 10 full float32 logits


@pytest.fixture(scope="module")
def setup(digits):
    return {"teacher": tiny_teacher(), "student": tiny_student(), "train": digits.train.select(range(32))}


def _make(setup, folder, **kw):
    return cache_teacher_outputs([setup["teacher"]], setup["train"], str(folder), student=setup["student"],
                                 augment=AUGMENT, num_views=2, seed=0, batch_size=8, command="hfkd cache (test)", **kw)


def _rows(folder):
    """Every stored (index, view) row's logits, whatever the layout."""
    cache = TeacherCache(folder)
    return {(i, v): cache.columns.row(int(cache.columns.position[i * 2 + v]))["cache_logits"].numpy().tobytes()
            for i in range(32) for v in range(2)}


def test_shard_paths_nest_past_the_folder_limit():
    assert shard_path(3, 40) == "data/data-00003-of-00040.arrow"
    assert shard_path(3, 40, per_folder=40) == "data/data-00003-of-00040.arrow"
    assert shard_path(3, 41, per_folder=40) == "data/00000/data-00003-of-00041.arrow"
    assert shard_path(40, 41, per_folder=40) == "data/00001/data-00040-of-00041.arrow"
    assert shard_path(123456, 10 ** 6, per_folder=100) == "data/00012/00034/data-0123456-of-1000000.arrow"


def test_no_folder_holds_more_than_the_limit(setup, tmp_path, monkeypatch):
    reference = _make(setup, tmp_path / "one-shard")  # default max_shard_size: one shard
    assert sorted(CacheMetadata.load(reference).files) == ["data/data-00000-of-00001.arrow"]
    monkeypatch.setattr("hfkd.cache.format.MAX_FILES_PER_FOLDER", 5)
    cap = SHARD_HEADER_BYTES + ROW  # one row per shard: 64 shards, 5 per folder at most -> two levels of folders
    folder = _make(setup, tmp_path / "tiny", max_shard_size=cap)
    listed = CacheMetadata.load(folder).files
    assert len(listed) == 64 and all(entry["size"] <= cap for entry in listed.values())
    on_disk = set()
    for root, dirs, files in os.walk(folder):
        assert len(dirs) + len(files) <= 5, (root, dirs, files)  # was: 64 files in one folder
        on_disk |= {os.path.relpath(os.path.join(root, f), folder) for f in files}
    assert on_disk == set(listed) | {"hfkd_cache.json", "README.md"}
    assert "data/00002/00000/data-00050-of-00064.arrow" in listed
    assert _rows(folder) == _rows(reference)  # the same rows, bitwise, in any layout


@pytest.mark.parametrize("size, message", [
    ("lots", "max_shard_size must be a number of bytes or a size such as '500MB'"),
    ("200GB", "under the Hub's 200 GB per file"),
    (SHARD_HEADER_BYTES, r"holds no row: a row takes 68 bytes"),
])
def test_a_bad_shard_size_is_refused_before_the_teachers_run(setup, tmp_path, size, message):
    with pytest.raises(ValueError, match=message):
        _make(setup, tmp_path / "cache", max_shard_size=size)
    assert os.listdir(tmp_path) == []


def test_hfkd_cache_refuses_a_bad_shard_size_before_loading_anything(tmp_path, monkeypatch):
    import hfkd.cli.cache
    from hfkd.cache.generate import DEFAULT_MAX_SHARD_SIZE
    from hfkd.cli import main as hfkd_main
    from hfkd.cli.arguments import CacheArguments

    assert CacheArguments().max_shard_size == DEFAULT_MAX_SHARD_SIZE

    def no_data(*a, **kw):
        raise AssertionError("the data was loaded before the settings were checked")
    monkeypatch.setattr(hfkd.cli.cache, "load_data", no_data)
    # was: a traceback after the data and the teachers were loaded
    with pytest.raises(SystemExit, match=r"hfkd cache: error: max_shard_size must be .* got '300GB'"):
        hfkd_main(["cache", "--output_dir", str(tmp_path / "cache"), "--max_shard_size", "300GB"])


# -- pushing a large cache ---------------------------------------------------------------------------------------
REPO = "hfkd-tests/sharded-soft-labels"


def test_commit_batches_cap_files_and_bytes():
    from hfkd.cache.hub import commit_batches

    sizes = {"a": 5, "b": 5, "c": 5, "d": 20, "e": 1}
    assert commit_batches(list(sizes), sizes, max_files=2, max_bytes=100) == [["a", "b"], ["c", "d"], ["e"]]
    assert commit_batches(list(sizes), sizes, max_files=10, max_bytes=12) == [["a", "b"], ["c"], ["d"], ["e"]]


def test_a_large_cache_is_pushed_in_several_resumable_commits_and_loaded_by_id(hub, setup, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from hfkd import push_teacher_cache
    from hfkd.cache import resolve_cache
    from hfkd.hub import HubPushError

    folder = _make(setup, tmp_path / "cache", max_shard_size=SHARD_HEADER_BYTES + 8 * ROW)  # 8 shards of 8 rows
    shards = sorted(CacheMetadata.load(folder).files)
    assert len(shards) == 8
    # 3 shards per commit: 3 data commits, then hfkd_cache.json and the card
    monkeypatch.setattr("hfkd.cache.hub.COMMIT_MAX_BYTES", 3 * os.path.getsize(os.path.join(folder, shards[0])))

    real, calls = HfApi.create_commit, [0]

    def lost_connection_at_the_second_commit(self, *a, **kw):
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("connection reset by peer")
        return real(self, *a, **kw)
    monkeypatch.setattr(HfApi, "create_commit", lost_connection_at_the_second_commit)
    with pytest.raises(HubPushError, match="uploading data files 2 of 3 commits.*it uploads only what"):
        push_teacher_cache(folder, REPO)
    repo = f"datasets/{REPO}"
    assert hub.commits_made(repo) == 1 and sorted(f for f in hub.repo(repo).files() if f.startswith("data/")) == shards[:3]
    # a repository whose push stopped is not taken for a cache
    with pytest.raises(ValueError, match="or its push has not finished"):
        resolve_cache(REPO)

    monkeypatch.setattr(HfApi, "create_commit", real)
    push_teacher_cache(folder, REPO)  # the same call: only the 5 missing shards (2 commits), then the metadata
    assert hub.commits_made(repo) == 1 + 3
    messages = hub.repo(repo).commit_messages[1:]
    assert messages == ["Upload hfkd teacher cache: data, part 1 of 3", "Upload hfkd teacher cache: data, part 1 of 2",
                        "Upload hfkd teacher cache: data, part 2 of 2", "Upload hfkd teacher cache"]
    push_teacher_cache(folder, REPO)  # nothing is missing: no new commit
    assert hub.commits_made(repo) == 4

    downloaded = resolve_cache(REPO)  # every file just fetched is hashed against the manifest
    assert downloaded != folder and sorted(CacheMetadata.load(downloaded).files) == shards
    assert _rows(downloaded) == _rows(folder)


def test_a_stream_without_a_sample_key_is_refused_with_the_reason(setup, tmp_path):
    stream = setup["train"].to_iterable_dataset()
    # was: TypeError: object of type 'IterableDataset' has no len(); a stream is cached by sample key
    # (tests/test_stream_cache.py), and datasets' own stream of a split carries none
    with pytest.raises(ValueError, match="no stable sample key.*sample_key_column"):
        cache_teacher_outputs([setup["teacher"]], stream, str(tmp_path / "cache"), student=setup["student"])
    assert os.listdir(tmp_path) == []


def test_shards_the_main_process_cannot_see_are_named(setup, tmp_path, monkeypatch):
    """Machines that do not share output_dir: the main process refuses to publish a cache it cannot see whole."""
    from hfkd.cache import generate

    monkeypatch.setattr(generate, "manifest_problems",
                        lambda folder, manifest, content: ["data/data-00001-of-00002.arrow is missing"])
    with pytest.raises(RuntimeError, match=r"does not see every process's shards .*data-00001-of-00002.arrow is "
                                           r"missing.*a file system they all share"):
        _make(setup, tmp_path / "cache", max_shard_size=SHARD_HEADER_BYTES + 32 * ROW)
    assert not os.path.exists(tmp_path / "cache")  # nothing half-published; the stage stays for a rerun
    assert len(os.listdir(tmp_path / "cache.partial" / "data")) == 2


def test_a_shard_size_in_plain_bytes_from_the_command_line_is_taken():
    # The command line hands every value over as text: "2000" is 2000 bytes, as the int 2000 is in Python.
    assert parse_shard_size("2000") == parse_shard_size(2000) == 2000
    assert parse_shard_size("500MB") == 500 * 10 ** 6
