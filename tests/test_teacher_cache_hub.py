"""Share a teacher cache as a Hub dataset repository (local Hub-protocol server), train from its Hub id."""
import json
import os

import pytest

from hfkd import DistillationArguments, DistillationTrainer, cache_teacher_outputs, create_backbone, push_teacher_cache
from hfkd.cache import resolve_cache
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
    for words in ("test_resnet", "R = 2 per image", "top-3 logits", "float16", "--teacher_cache " + REPO,
                  "python recipes/cache_teachers.py --num_views 2", "scale [0.08, 1.0]", "32 training images"):
        assert words in card, words
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
