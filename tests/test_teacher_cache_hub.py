"""Share a teacher cache as a Hub dataset repository (local Hub-protocol server), train from its Hub id."""
import glob
import json
import os
import shutil

import pytest
from markdown_it import MarkdownIt

from hfkd import DistillationArguments, DistillationTrainer, cache_teacher_outputs, create_backbone, push_teacher_cache
from hfkd.cache import TeacherCacheError, resolve_cache
from hfkd.data.transforms import AugmentConfig
from hfkd.hub import HubPushError

REPO = "hfkd-tests/digits-soft-labels"


@pytest.fixture
def cache_folder(tmp_path, small_digits):
    from accelerate.utils import set_seed

    set_seed(0)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    student = create_backbone("test_efficientnet", num_classes=10, pretrained=False, image_size=32)
    train = small_digits.train.select(range(32))
    folder = cache_teacher_outputs([teacher], train, str(tmp_path / "cache"), student=student, num_views=2, top_k=3,
                                   augment=AugmentConfig(hflip=0.0, color_jitter=None), seed=0, dtype="float16",
                                   command="python recipes/cache_teachers.py --num_views 2")
    return folder, train, student


def test_push_card_and_train_from_the_hub_id(hub, cache_folder, tmp_path):  # noqa: F811
    folder, train, student = cache_folder
    local_card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    push_teacher_cache(folder, REPO)
    repo = hub.repo(f"datasets/{REPO}")
    files = repo.files()
    assert "hfkd_cache.json" in files and any(f.endswith(".arrow") for f in files)
    card = files["README.md"].decode()
    shown = MarkdownIt("commonmark").render(card)  # the card's text as the Hub shows it (values are escaped)
    for words in ("test_resnet", "R = 2 per image", "top-3 logits", "float16", "--teacher_cache " + REPO,
                  "python recipes/cache_teachers.py --num_views 2", "scale [0.08, 1.0]", "32 training images"):
        assert words in shown, words
    assert "--teacher_cache " + REPO not in local_card  # the local card names the folder until it is pushed

    downloaded = resolve_cache(REPO)
    assert os.path.isfile(os.path.join(downloaded, "hfkd_cache.json")) and downloaded != folder
    args = DistillationArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=16,
                                 save_strategy="no", eval_strategy="no", disable_tqdm=True, use_cpu=True, seed=0,
                                 teacher_cache=REPO)
    trainer = DistillationTrainer(student, None, "meal_v2", args, train_dataset=train)
    trainer.train()
    out = trainer.save_model(str(tmp_path / "student"))
    lineage = json.load(open(os.path.join(out, "hfkd.json"), encoding="utf-8"))
    assert lineage["teacher_cache"]["source"] == REPO and lineage["teacher_cache"]["top_k"] == 3
    assert [t["name"] for t in lineage["teachers"]] == ["test_resnet"]
    student_card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert f"read from the teacher cache `{REPO}`" in student_card


def test_failed_cache_push_is_clear_and_keeps_the_folder(hub, cache_folder):  # noqa: F811
    folder, _, _ = cache_folder
    before = sorted(os.listdir(folder)), open(os.path.join(folder, "README.md"), "rb").read()
    hub.fail(500, "/commit/")
    with pytest.raises(HubPushError, match="HTTP 500.*is intact"):
        push_teacher_cache(folder, REPO)
    assert (sorted(os.listdir(folder)), open(os.path.join(folder, "README.md"), "rb").read()) == before
    with pytest.raises(FileNotFoundError, match="neither a folder nor a Hub dataset id"):
        resolve_cache("no/such/place")


def test_a_cache_revision_is_read_or_named(hub, cache_folder, tmp_path):  # noqa: F811
    folder, train, student = cache_folder
    push_teacher_cache(folder, REPO, revision="v1")  # only the branch v1 holds the cache

    def trainer(**kw):
        args = DistillationArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=16,
                                     save_strategy="no", eval_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, **kw)
        return DistillationTrainer(student, None, "meal_v2", args, train_dataset=train)

    # was: HFValidationError (the trainer could not be given a revision at all)
    assert trainer(teacher_cache=REPO + "@v1").teacher_cache.metadata.num_views == 2
    cache = trainer(teacher_cache=REPO, teacher_cache_revision="v1").teacher_cache
    assert cache.metadata.num_views == 2
    assert cache.lineage()["revision"] == hub.repo(f"datasets/{REPO}").resolve("v1")  # the commit read, recorded
    # was: a raw RevisionNotFoundError
    with pytest.raises(TeacherCacheError, match=r"the Hub dataset hfkd-tests/digits-soft-labels has no revision 'v2'.*"
                                                r"check teacher_cache_revision"):
        trainer(teacher_cache=REPO, teacher_cache_revision="v2")
    with pytest.raises(ValueError, match="names revision 'v1' but teacher_cache_revision is 'v2'"):
        trainer(teacher_cache=REPO + "@v1", teacher_cache_revision="v2")
    with pytest.raises(ValueError, match="is for a Hub dataset id, but the teacher cache .* is a local folder"):
        trainer(teacher_cache=folder, teacher_cache_revision="v1")


def test_a_download_is_checked_against_the_manifest(hub, cache_folder, tmp_path):  # noqa: F811
    from huggingface_hub import HfApi

    folder, _, _ = cache_folder
    damaged = shutil.copytree(folder, str(tmp_path / "damaged"))
    (arrow,) = glob.glob(os.path.join(damaged, "data", "*.arrow"))
    with open(arrow, "r+b") as f:  # one flipped byte, same size: as a bad transfer or storage would leave it
        f.seek(os.path.getsize(arrow) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TeacherCacheError, match=r"\.arrow has the right size but different content"):
        push_teacher_cache(damaged, REPO)  # hfkd does not publish it
    api = HfApi()  # another tool does
    api.create_repo(REPO, repo_type="dataset")
    api.upload_folder(folder_path=damaged, repo_id=REPO, repo_type="dataset")
    with pytest.raises(TeacherCacheError, match=r"just downloaded\) .*is damaged: .*\.arrow has the right size but "
                                                r"different content.*force_download=True"):
        resolve_cache(REPO)
