"""A teacher cache's integrity: its manifest (sizes on every open, sha256 after a download and with
``hfkd cache --verify``), its metadata and column widths checked before the first step, and the split's identity
beyond the 64 sampled images.  Each damaged case is named with the cache, the file and the fix."""
import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest

from conftest import run_args
from hfkd import DistillationTrainer, cache_teacher_outputs, create_backbone
from hfkd.cache import TeacherCache, TeacherCacheError, verify_teacher_cache
from hfkd.cache.format import _FINGERPRINT_ROWS, CACHE_METADATA_FILE
from hfkd.cli import main as hfkd_main


def _student():
    return create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)


def _split(digits, n=80, swap=None):
    """An in-memory split of ``n`` digits; ``swap=(i, j)`` puts image ``j`` at row ``i`` (labels unchanged)."""
    from datasets import Dataset

    rows = digits.train.select(range(n))
    images, labels = list(rows["image"]), list(rows["label"])
    if swap:
        images[swap[0]] = images[swap[1]]
    return Dataset.from_dict({"image": images, "label": labels}, features=rows.features)


def _unsampled_row(n):
    sampled = set(np.unique(np.linspace(0, n - 1, num=min(n, _FINGERPRINT_ROWS)).round().astype(int)).tolist())
    return next(i for i in range(n) if i not in sampled)


@pytest.fixture(scope="module")
def made(tmp_path_factory, digits):
    from accelerate.utils import set_seed

    set_seed(0)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    train = _split(digits)
    root = tmp_path_factory.mktemp("caches")
    plain = cache_teacher_outputs([teacher, teacher], train, str(root / "plain"), student=_student(), seed=0,
                                  batch_size=40)
    hashed = cache_teacher_outputs([teacher], train, str(root / "hashed"), student=_student(), seed=0, batch_size=40,
                                   hash_images=True)
    return {"plain": plain, "hashed": hashed, "train": train}


def _copy(folder, tmp_path, name="cache"):
    return shutil.copytree(folder, str(tmp_path / name))


def _arrow(folder):
    (path,) = glob.glob(os.path.join(folder, "**", "*.arrow"), recursive=True)
    return path


def _legacy_copy(folder, dest, version):
    """The same cache in the layout hfkd wrote before format 3: one ``datasets.save_to_disk`` folder of the rows
    in (index, view) order, with its manifest (format 2) or without one (format 1)."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    from hfkd.cache.format import UNLISTED_FILES, CacheMetadata, read_rows_table
    from hfkd.files import file_manifest

    metadata = CacheMetadata.load(folder)
    rows = read_rows_table(folder, metadata).sort_by([("index", "ascending"), ("view", "ascending")])
    Dataset(InMemoryTable(rows)).save_to_disk(dest)
    metadata.format_version = version
    metadata.files = file_manifest(dest, exclude=UNLISTED_FILES) if version == 2 else None
    metadata.save(dest)
    return dest


def _trainer(folder, train, tmp_path, **kw):
    return DistillationTrainer(_student(), None, "kd", run_args(tmp_path / "run", max_steps=1, use_cpu=True),
                               train_dataset=train, teacher_cache=folder, **kw)


def _edit_metadata(folder, edit):
    path = os.path.join(folder, CACHE_METADATA_FILE)
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    edit(raw)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(raw, f)


# -- the manifest ------------------------------------------------------------------------------------
def test_the_manifest_lists_every_data_file(made):
    meta = json.load(open(os.path.join(made["plain"], CACHE_METADATA_FILE), encoding="utf-8"))
    assert meta["format_version"] == 3
    assert set(meta["files"]) == {"data/data-00000-of-00001.arrow"}  # the shards only: no datasets state files
    assert os.path.relpath(_arrow(made["plain"]), made["plain"]) == "data/data-00000-of-00001.arrow"


def test_a_format_2_cache_still_opens_trains_and_verifies(made, tmp_path):
    folder = _legacy_copy(made["plain"], str(tmp_path / "v2"), 2)
    assert "state.json" in json.load(open(os.path.join(folder, CACHE_METADATA_FILE), encoding="utf-8"))["files"]
    old, new = TeacherCache(folder), TeacherCache(made["plain"])
    assert old.metadata.format_version == 2
    for index in (0, 41, 79):
        assert np.array_equal(old(0, index)[1]["cache_logits"].numpy(), new(0, index)[1]["cache_logits"].numpy())
    verify_teacher_cache(folder)
    _trainer(folder, made["train"], tmp_path).train()


@pytest.mark.parametrize("edit, message", [
    (lambda raw: raw.update(files={}), "files must be the cache's Arrow shards"),
    (lambda raw: raw.update(files={"../outside.arrow": {"size": 1, "sha256": "0"}}), "relative paths under data/"),
    (lambda raw: raw.update(files={"data/x.bin": {"size": 1, "sha256": "0"}}), "ending in .arrow"),
])
def test_a_sharded_cache_lists_only_its_shards(made, tmp_path, edit, message):
    folder = _copy(made["plain"], tmp_path)
    _edit_metadata(folder, edit)
    with pytest.raises(TeacherCacheError, match=message):
        TeacherCache(folder)


@pytest.mark.parametrize("damage", ["reversed", "3e38"])
def test_a_row_changed_on_disk_is_found_by_verify(made, tmp_path, damage):
    folder = _copy(made["plain"], tmp_path)
    row = TeacherCache(folder)(0, 7)[1]["cache_logits"].numpy().astype(np.float32)
    path = _arrow(folder)
    data = open(path, "rb").read()
    at = data.index(row.tobytes())
    new = row[::-1] if damage == "reversed" else np.full_like(row, 3e38)
    with open(path, "r+b") as f:  # same size: only the content hash can tell
        f.seek(at)
        f.write(new.astype(np.float32).tobytes())
    with pytest.raises(TeacherCacheError, match=r"\.arrow has the right size but different content"):
        verify_teacher_cache(folder)
    # was: trained on the edited row; a cache this small is hashed on every open
    with pytest.raises(TeacherCacheError, match=r"\.arrow has the right size but different content"):
        _trainer(folder, made["train"], tmp_path)
    with pytest.raises(SystemExit, match=r"hfkd cache --verify: the teacher cache .*sha256 mismatch.*generate it again"):
        hfkd_main(["cache", "--verify", folder])


def test_a_large_cache_is_size_checked_on_open_and_hashed_on_request(made, tmp_path, monkeypatch):
    monkeypatch.setattr("hfkd.cache.lookup.HASH_ON_OPEN_BYTES", 0)  # as if the cache were larger than the bound
    folder = _copy(made["plain"], tmp_path)
    with open(_arrow(folder), "r+b") as f:
        f.seek(os.path.getsize(_arrow(folder)) - 16)
        f.write(b"\xff" * 8)
    cache = TeacherCache(folder)  # sizes match: opened (hashing a large cache on every open would cost minutes)
    with pytest.raises(TeacherCacheError, match="sha256 mismatch"):
        cache.verify()


def test_verify_reports_an_intact_cache(made, capsys):
    assert hfkd_main(["cache", "--verify", made["plain"]]) == made["plain"]
    assert "is intact" in capsys.readouterr().out


def test_a_truncated_arrow_file_is_named_before_training(made, tmp_path):
    folder = _copy(made["plain"], tmp_path)
    path = _arrow(folder)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    # was: OSError: Expected to be able to read N bytes for message body, got M (at the first step)
    with pytest.raises(TeacherCacheError, match=rf"is damaged: data/{os.path.basename(path)} has {size // 2} bytes, "
                                                 rf"{size} were written.*generate it again"):
        _trainer(folder, made["train"], tmp_path)


def test_an_old_cache_without_manifest_warns_and_cannot_be_verified(made, tmp_path, caplog):
    folder = _legacy_copy(made["plain"], str(tmp_path / "v1"), 1)
    with caplog.at_level(logging.WARNING):
        _trainer(folder, made["train"], tmp_path)
    assert "has no manifest of its files" in caplog.text
    with pytest.raises(TeacherCacheError, match="it cannot be verified. Generate it again"):
        verify_teacher_cache(folder)
    # without a manifest, a truncated shard is still named with the cache and the fix
    with open(_arrow(folder), "r+b") as f:
        f.truncate(os.path.getsize(_arrow(folder)) // 2)
    with pytest.raises(TeacherCacheError, match=r"its Arrow data cannot be read .*hfkd cache --verify"):
        _trainer(folder, made["train"], tmp_path / "again")


# -- the metadata ------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (None, r"hfkd_cache.json is damaged \(not valid JSON"),  # was: JSONDecodeError
    (lambda raw: raw.pop("num_views"), "it lacks num_views"),  # was: __init__() missing ... 'num_views'
    (lambda raw: raw.update(num_views="4"), "num_views must be an integer"),  # was: 'str' ... as an integer
    (lambda raw: raw.update(num_classes=1e9), "num_classes must be an integer"),
    (lambda raw: raw.update(top_k=0), "top_k must be null"),
    (lambda raw: raw.update(student_preprocess={"input_size": [3, 32]}), "student_preprocess is not a valid setting"),
    (lambda raw: raw["teachers"].append(raw["teachers"][0]),  # was: shape '[200, 2, 10]' is invalid, mid-training
     r"column 'logits' stores 20 values per row, but hfkd_cache.json declares 3 teacher output\(s\) x 10 classes"),
])
def test_a_damaged_metadata_file_is_named_before_training(made, tmp_path, edit, message):
    folder = _copy(made["plain"], tmp_path)
    path = os.path.join(folder, CACHE_METADATA_FILE)
    if edit is None:
        text = open(path, encoding="utf-8").read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
    else:
        _edit_metadata(folder, edit)
    with pytest.raises(TeacherCacheError, match=message) as error:
        _trainer(folder, made["train"], tmp_path)
    assert f"the teacher cache {folder}" in str(error.value)


# -- the split's identity ----------------------------------------------------------------------------
def test_a_replaced_image_the_sample_misses_is_refused(made, digits, tmp_path):
    n = len(made["train"])
    row = _unsampled_row(n)
    replaced = _split(digits, n, swap=(row, row + 1))
    # was: accepted (the sampled fingerprint matches), trained on stale teacher outputs
    with pytest.raises(ValueError, match=r"made from other data files than this training split \(datasets fingerprint"):
        _trainer(made["plain"], replaced, tmp_path)
    _trainer(made["plain"], _split(digits, n), tmp_path / "same")  # the same split, loaded again: accepted


def test_hash_images_matches_by_content(made, digits, tmp_path):
    n = len(made["train"])
    same_content = _split(digits, n).map(lambda row: row)  # another datasets fingerprint, the same bytes
    assert same_content._fingerprint != made["train"]._fingerprint
    _trainer(made["hashed"], same_content, tmp_path / "ok")
    row = _unsampled_row(n)
    with pytest.raises(ValueError, match="the hash of every image's bytes differs"):
        _trainer(made["hashed"], _split(digits, n, swap=(row, row + 1)), tmp_path)
