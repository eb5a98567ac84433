"""Data without labels (issue 26): accepted by the methods that read no labels, refused by the others before the
first step; label names from --label_names (a list or a file); evaluation by agreement with the teachers."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run_args
from hfkd import DistillationTrainer, create_backbone, create_method, load_image_dataset
from hfkd.data.labels import FROM_DATASET, FROM_OPTION, check_label_names, read_label_names

NAMES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def unlabelled(small_digits):
    """The small digits without their label column: what a folder of photos gives."""
    return small_digits.train.remove_columns("label"), small_digits.eval.remove_columns("label")


def _student(names=NAMES):
    return create_backbone("test_resnet", num_classes=len(names), pretrained=False, image_size=32, label_names=names)


def _assert_agreements(metrics, s, t):
    """The student's top-1 agreement with each of two teachers and with their ensemble (mean probabilities), by hand."""
    top1 = s.argmax(-1)
    ensemble = (F.softmax(t[0], -1) + F.softmax(t[1], -1)) / 2
    assert metrics["eval_agreement_teacher_0"] == pytest.approx((top1 == t[0].argmax(-1)).float().mean().item())
    assert metrics["eval_agreement_teacher_1"] == pytest.approx((top1 == t[1].argmax(-1)).float().mean().item())
    assert metrics["eval_agreement"] == pytest.approx((top1 == ensemble.argmax(-1)).float().mean().item())


def _teacher():
    torch.manual_seed(1)
    return create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32, label_names=NAMES)


def flat_folder(root, n=12, seed=0):
    """A flat folder of JPEG photos of mixed sizes, no class sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(root, f"photo_{i}.jpg"))
    return str(root)


# -- which methods train without labels ----------------------------------------------------------------------
@pytest.mark.parametrize("method, settings, reason", [
    ("supervised", {}, "trains on the labels alone"),
    ("kd", {}, "alpha=0.9 weighs a cross-entropy on the labels.*alpha=1"),
    ("kd", {"alpha": 0.5}, "alpha=0.5 weighs"),
    ("meal_v2", {"hard_label_weight": 0.3}, "hard_label_weight=0.3 adds a cross-entropy.*hard_label_weight=0"),
    ("feature_kd", {"ce_weight": 1.0}, "ce_weight=1 adds a cross-entropy.*ce_weight=0"),
    ("bake", {}, "cross-entropy on the labels"),
    ("pskd", {}, "mix the labels"),
    ("feed", {}, "ce_weight=1 adds"),
    ("extracurricular", {}, "alpha=0.9 weighs"),
])
def test_a_method_that_reads_labels_refuses_data_without_them(unlabelled, tmp_path, method, settings, reason):
    train, _ = unlabelled
    teachers = [] if method in ("supervised", "bake", "pskd") else [_teacher()]
    with pytest.raises(ValueError, match=f"method '{method}' needs labels, but the train split has no label column "
                                         rf"\(its columns: \['image'\]\): .*{reason}") as e:
        DistillationTrainer(_student(), teachers, create_method(method, **settings), run_args(tmp_path),
                            train_dataset=train)
    assert "label_column" in str(e.value) and "meal_v2, feature_kd with ce_weight 0, kd with alpha 1" in str(e.value)


@pytest.mark.parametrize("method, settings", [("meal_v2", {}), ("kd", {"alpha": 1.0}), ("feature_kd", {})])
def test_the_label_free_methods_train_on_data_without_labels(unlabelled, tmp_path, method, settings):
    train, _ = unlabelled
    trainer = DistillationTrainer(_student(), [_teacher()], create_method(method, **settings),
                                  run_args(tmp_path, max_steps=2, use_cpu=True, per_device_train_batch_size=16),
                                  train_dataset=train)
    assert trainer.label_column is None and trainer.train_dataset.labels[:3] == [-1, -1, -1]
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert trainer.student.label_names == NAMES  # the student's own names: nothing in the data says otherwise


def test_a_regression_run_needs_targets(unlabelled, tmp_path):
    from hfkd.tasks import RegressionTask

    student = create_backbone("test_resnet", num_classes=2, pretrained=False, image_size=32)
    with pytest.raises(ValueError, match="regression run needs targets.*no label column"):
        DistillationTrainer(student, [], "extracurricular", run_args(tmp_path), train_dataset=unlabelled[0],
                            task=RegressionTask())


# -- loading data without labels ------------------------------------------------------------------------------
def test_a_flat_folder_of_mixed_size_photos_loads_without_labels(tmp_path):
    folder = flat_folder(tmp_path / "photos")
    data = load_image_dataset(folder, validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    assert data.label_column is None and data.label_names is None and data.label_source is None
    assert len(data.train) == 9 and len(data.eval) == 3 and list(data.train.features) == ["image"]
    named = load_image_dataset(folder, validation_fraction=0.25, cache_dir=str(tmp_path / "cache"),
                               label_names=["cat", "dog"])
    assert named.label_names == ["cat", "dog"] and named.num_classes == 2 and named.label_source == FROM_OPTION


def test_split_folders_of_unlabelled_photos(tmp_path):
    flat_folder(tmp_path / "splits" / "train", n=8)
    flat_folder(tmp_path / "splits" / "validation", n=4, seed=1)
    data = load_image_dataset(str(tmp_path / "splits"), cache_dir=str(tmp_path / "cache"))
    assert data.label_column is None and len(data.train) == 8 and len(data.eval) == 4


def test_a_single_class_sub_folder_is_still_refused(tmp_path):
    flat_folder(tmp_path / "one" / "cat", n=3)
    with pytest.raises(ValueError, match="has no class labels.*cat.*Images without labels go directly in the folder"):
        load_image_dataset(str(tmp_path / "one"), validation_fraction=0, cache_dir=str(tmp_path / "cache"))


def test_parquet_with_only_an_image_column(small_digits, tmp_path):
    path = str(tmp_path / "images.parquet")
    small_digits.train.remove_columns("label").select(range(40)).to_parquet(path)
    data = load_image_dataset(path, validation_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    assert data.label_column is None and data.image_column == "image" and len(data.eval) == 10


def test_label_names_against_the_datasets_own(small_digits):
    from datasets import Value

    labelled = small_digits.train.select(range(40))
    same = load_image_dataset(labelled, label_names=NAMES, validation_fraction=0)
    assert same.label_names == NAMES and same.label_source == FROM_DATASET
    with pytest.raises(ValueError, match="differ from the dataset's own class names"):
        load_image_dataset(labelled, label_names=list("abcdefghij"), validation_fraction=0)
    # integer labels without names: --label_names names them, one name per class index
    ints = labelled.cast_column("label", Value("int64"))
    named = load_image_dataset(ints, label_names=list("abcdefghij"), validation_fraction=0)
    assert named.label_names == list("abcdefghij") and named.label_source == FROM_OPTION
    with pytest.raises(ValueError, match="label 'label' at row .* but there are 3 classes"):
        load_image_dataset(ints, label_names=["a", "b", "c"], validation_fraction=0)


def test_unlabelled_train_with_a_labelled_eval_split(small_digits):
    from datasets import DatasetDict

    splits = DatasetDict(train=small_digits.train.remove_columns("label"), validation=small_digits.eval)
    data = load_image_dataset(splits)
    assert data.label_column == "label" and not data.labelled("train") and data.labelled("eval")
    assert data.label_names == NAMES and data.label_source == FROM_DATASET


# -- --label_names: a list or a file ----------------------------------------------------------------------
def test_label_names_from_a_list_or_a_file(tmp_path):
    assert read_label_names(None) is None and read_label_names([]) is None
    assert read_label_names(["cat", " dog ", "red fox"]) == ["cat", "dog", "red fox"]
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffcat\r\ndog\n\nred fox\n", encoding="utf-8")  # a BOM, Windows line ends, a blank line
    assert read_label_names([str(path)]) == ["cat", "dog", "red fox"]
    assert read_label_names(str(path)) == ["cat", "dog", "red fox"]  # YAML: one string


def test_label_names_checks(tmp_path):
    with pytest.raises(ValueError, match="names \\['cat'\\] more than once"):
        read_label_names(["cat", "dog", "cat"])
    with pytest.raises(ValueError, match="name 1 is blank"):
        read_label_names(["cat", " "])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no label name; write one name per line"):
        read_label_names([str(empty)])
    binary = tmp_path / "labels.bin"
    binary.write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_label_names([str(binary)])
    with pytest.raises(ValueError, match="gives 2 names but the teacher has 3 classes; give one name per class"):
        check_label_names(["a", "b"], num_classes=3, classes_of="the teacher")
    with pytest.raises(ValueError, match="is empty"):
        check_label_names([])
    # a file name with a typo is not one class named "labels.txt"
    with pytest.raises(ValueError, match="gives one name, '.*labels.tx', and no file of that name exists"):
        read_label_names([str(tmp_path / "labels.tx")])
    long = ["x" * 5000, "x" * 5000]
    with pytest.raises(ValueError) as e:
        read_label_names(long)
    assert len(str(e.value)) < 600  # the value is quoted shortened


# -- evaluation without labels: agreement with the teachers, the distillation loss --------------------------
def test_agreement_and_distillation_loss_by_hand(unlabelled, tmp_path):

    from hfkd.hub.card import create_model_card
    from hfkd.losses import soft_kl_div
    from hfkd.training.lineage import build_lineage

    train, evaluation = unlabelled
    evaluation = evaluation.select(range(24))
    torch.manual_seed(2)
    teachers = [_teacher(), create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                                            label_names=NAMES)]
    method = create_method("kd", alpha=1.0, temperature=2.0)
    trainer = DistillationTrainer(_student(), teachers, method,
                                  run_args(tmp_path, max_steps=1, use_cpu=True, per_device_train_batch_size=16,
                                           per_device_eval_batch_size=64),
                                  train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    assert trainer.evaluate_teachers() == {}  # no labels: no teacher accuracy either
    metrics = trainer.evaluate()
    # by hand, on the same (un-augmented) eval pixels
    x = torch.stack([trainer.eval_dataset[i]["pixel_values"] for i in range(24)])
    student = trainer.unwrapped_student().eval()
    with torch.no_grad():
        s = student(x).logits
        t = [teacher(x).logits for teacher in trainer.teachers]
    _assert_agreements(metrics, s, t)
    # KD at alpha 1: T^2 KL(mean of the teachers' softened probabilities || the student's)
    target = (F.softmax(t[0] / 2.0, -1) + F.softmax(t[1] / 2.0, -1)) / 2
    assert metrics["eval_distillation_loss"] == pytest.approx(soft_kl_div(s, target, 2.0).item(), rel=1e-4)
    assert metrics["eval_samples"] == 24 and "eval_accuracy" not in metrics
    assert "accuracy was not measured: the eval split has no labels" in metrics["eval_accuracy_note"]
    # hfkd.json and the card say so
    lineage = build_lineage(trainer, measure_inference=False)
    assert lineage["metrics"]["eval_accuracy_note"] == metrics["eval_accuracy_note"]
    card = str(create_model_card(lineage))
    assert "## Evaluation without labels" in card and "Accuracy was **not measured**" in card
    assert f"top-1 agreement with teacher 2: {100 * metrics['eval_agreement_teacher_1']:.2f} %" in card


def test_an_eval_split_with_labels_still_gets_accuracy(unlabelled, small_digits, tmp_path):
    train, _ = unlabelled
    trainer = DistillationTrainer(_student(), [_teacher()], create_method("meal_v2"),
                                  run_args(tmp_path, max_steps=1, use_cpu=True, per_device_train_batch_size=16),
                                  train_dataset=train, eval_dataset=small_digits.eval.select(range(20)))
    assert trainer.label_column is None and trainer.eval_label_column == "label"
    trainer.train()
    metrics = trainer.evaluate()
    assert 0 <= metrics["eval_accuracy"] <= 1 and "eval_agreement" not in metrics
    assert "eval_accuracy" in trainer.evaluate_teachers()["teacher_0"]
    # the eval split's classes must be the student's
    wrong = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                            label_names=list("abcdefghij"))
    with pytest.raises(ValueError, match="eval split's label names differ"):
        DistillationTrainer(wrong, [_teacher()], create_method("meal_v2"), run_args(tmp_path / "2"),
                            train_dataset=train, eval_dataset=small_digits.eval.select(range(20)))


def test_feature_kd_without_labels_reports_the_feature_loss_only(unlabelled, tmp_path):
    train, evaluation = unlabelled
    trainer = DistillationTrainer(_student(), [_teacher()], create_method("feature_kd"),
                                  run_args(tmp_path, max_steps=1, use_cpu=True, per_device_train_batch_size=16),
                                  train_dataset=train, eval_dataset=evaluation.select(range(16)))
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_agreement" not in metrics  # a feature teacher's logits are not over the student's classes
    assert metrics["eval_distillation_loss"] > 0


# -- the command line: the issue's command, --label_names, the label source ------------------------------------
from test_zero_shot import clip_folder  # noqa: E402,F401 - the tiny random CLIP saved to a folder, built offline

TINY = ["--student", "test_resnet", "--student_pretrained", "false", "--image_size", "32",
        "--per_device_train_batch_size", "16", "--eval_teachers", "false", "--disable_tqdm", "true",
        "--save_strategy", "no", "--eval_strategy", "no"]


def test_the_issues_dry_run_resolves_and_names_the_label_source(clip_folder, tmp_path, capsys):
    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=20)
    (tmp_path / "labels.txt").write_text("cat\ndog\nred fox\n", encoding="utf-8")
    command = ["distill", "--method", "meal_v2", "--teachers", clip_folder, "--teacher_prompts", "a photo of a {}.",
               "--dataset", folder, *TINY, "--output_dir", str(tmp_path / "never")]
    for names in (["cat", "dog", "red fox"], [str(tmp_path / "labels.txt")]):
        report = hfkd_main([*command, "--label_names", *names, "--dry_run"])
        out = capsys.readouterr().out
        assert report["problems"] == [] and report["num_classes"] == 3
        assert report["label_source"] == "label names: from --label_names (3)" and "label names: from --label_names (3)" in out
        assert "its 3 classes are the student's label names ['cat', 'dog', 'red fox']" in out
        assert "teacher cost: 1 teacher forward(s) per training image per epoch" in out
    with pytest.raises(SystemExit) as e:  # without --label_names: refused, naming the fix
        hfkd_main([*command, "--dry_run"])
    assert "is zero-shot (CLIP): it needs the class names to write its prompts, and the data has no labels; give " \
           "them with --label_names" in str(e.value)
    assert not os.path.exists(tmp_path / "never")


def test_the_command_refuses_a_method_that_needs_labels_and_a_baseline(clip_folder, tmp_path):
    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=20)
    base = ["distill", "--teachers", clip_folder, "--dataset", folder, "--label_names", "cat", "dog", *TINY,
            "--output_dir", str(tmp_path / "never"), "--dry_run"]
    with pytest.raises(SystemExit) as e:
        hfkd_main([*base, "--method", "kd"])
    assert "method 'kd' needs labels, but the train split has no label column (its columns: ['image']): alpha=0.9" \
        in str(e.value)
    with pytest.raises(SystemExit) as e:
        hfkd_main([*base, "--method", "meal_v2", "--baseline", "true"])
    assert "--baseline trains the same student on the labels" in str(e.value)
    assert hfkd_main([*base, "--method", "kd", "--alpha", "1"])["problems"] == []


def test_label_names_against_the_teachers_classes(tmp_path, capsys):
    from hfkd import save_student
    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=20)
    teacher = str(tmp_path / "teacher")
    save_student(create_backbone("test_resnet", num_classes=4, pretrained=False, image_size=32,
                                 label_names=["ant", "bee", "cow", "dog"]), teacher)
    base = ["distill", "--method", "meal_v2", "--teachers", teacher, "--dataset", folder, *TINY,
            "--output_dir", str(tmp_path / "never"), "--dry_run"]
    # without --label_names the classes are the teacher's
    report = hfkd_main(base)
    assert report["problems"] == [] and report["label_source"] == "label names: from the teacher's config (4)"
    with pytest.raises(SystemExit) as e:
        hfkd_main([*base, "--label_names", "a", "b", "c"])
    assert "predicts 4 classes but the student predicts 3" in str(e.value)
    assert "the student's 3 classes are the names of --label_names: give one name per class of the teacher" in str(e.value)
    with pytest.raises(SystemExit) as e:  # a bad list is a parse error, before anything loads
        hfkd_main([*base, "--label_names", "a", "a"])
    assert "--label_names names ['a'] more than once" in str(e.value)


@pytest.mark.slow
def test_a_label_free_meal_v2_run_from_a_clip_teacher_on_a_photo_folder(clip_folder, tmp_path, capsys):
    """The issue's use: distil CLIP into a timm student for your own labels, from a folder of unlabelled photos."""
    import json

    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=40)
    out = tmp_path / "run"
    hfkd_main(["distill", "--method", "meal_v2", "--teachers", clip_folder, "--dataset", folder,
               "--label_names", "cat", "dog", "red fox", *TINY, "--learning_rate", "3e-3", "--logging_steps", "1",
               "--num_train_epochs", "4", "--aug_scale", "0.9", "1.0", "--aug_color_jitter", "0",
               "--validation_fraction", "0.2", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert "   labels: 3 names from --label_names; the train split has no labels" in printed  # the start banner
    saved = json.loads((out / "student" / "hfkd.json").read_text())
    losses = [e["loss"] for e in saved["log_history"] if "loss" in e]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert saved["label_names"] == ["cat", "dog", "red fox"] and saved["dataset"]["label_source"] == "--label_names"
    metrics = saved["metrics"]
    assert "eval_accuracy" not in metrics and 0 <= metrics["eval_agreement"] <= 1 and metrics["eval_samples"] == 8
    assert "Accuracy was **not measured**" in (out / "student" / "README.md").read_text()
    results = (out / "results.md").read_text()
    assert "top-1 agreement with the teachers (%)" in results and "top-1 (%)" not in results


def test_a_teacher_cache_of_a_clip_teacher_on_images_without_labels(clip_folder, unlabelled, tmp_path):
    """Made from unlabelled images, its stored logits equal the CLIP teacher's online ones, and a label-free run
    trains from it."""
    from hfkd import cache_teacher_outputs, create_teacher
    from hfkd.cache import TeacherCache
    from hfkd.data.transforms import AugmentConfig, ImageClassificationDataset, create_image_transform

    train = unlabelled[0].select(range(24))
    names = ["zero", "one", "two"]
    student = _student(names)
    teacher = create_teacher(clip_folder, student.preprocess, 3, names, prompt_templates=["a photo of a {}."])
    augment = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)
    folder = str(tmp_path / "cache")
    cache_teacher_outputs([teacher], train, folder, student=student, augment=augment, num_views=2, seed=0,
                          batch_size=8)
    cache = TeacherCache(folder, draw_seed=0)
    assert cache.metadata.label_names == names and cache.metadata.num_classes == 3
    replay = ImageClassificationDataset(train, create_image_transform(student.preprocess, True, augment),
                                        "image", None, seed=0)
    cache.attach(replay, student.preprocess)
    rows = [replay[i] for i in range(8)]
    x = torch.stack([r["pixel_values"] for r in rows])
    (stored,) = cache.teacher_outputs({"cache_logits": torch.stack([r["cache_logits"] for r in rows])})
    torch.testing.assert_close(stored.logits, teacher(x).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no label column, so the classes of the cache are the student's"):
        cache_teacher_outputs([teacher], train, str(tmp_path / "other"), student=student.preprocess)
    trainer = DistillationTrainer(_student(names), [], create_method("meal_v2"),
                                  run_args(tmp_path / "run", max_steps=2, use_cpu=True, per_device_train_batch_size=8,
                                           teacher_cache=folder), train_dataset=train)
    trainer.train()
    assert len([e for e in trainer.state.log_history if "loss" in e]) == 2


def test_hfkd_eval_and_compress_refuse_an_eval_split_without_labels(tmp_path):
    from hfkd import save_student
    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=10)
    model = str(tmp_path / "model")
    save_student(_student(["cat", "dog"]), model)
    with pytest.raises(SystemExit) as e:
        hfkd_main(["eval", model, "--dataset", folder])
    assert "has no labels, so accuracy cannot be measured; give a labelled split" in str(e.value)
    with pytest.raises(SystemExit) as e:
        hfkd_main(["compress", "--student", model, "--dataset", folder, "--output_dir", str(tmp_path / "out")])
    assert "has no labels in its train split; compression measures accuracy" in str(e.value)


@pytest.mark.slow
def test_agreement_over_two_processes_counts_every_eval_image_once(tmp_path):
    import json

    from safetensors.torch import load_file

    from helpers.ddp import two_teacher_setup
    from helpers.launch import run_two_processes
    from hfkd.data.transforms import ImageClassificationDataset, create_image_transform
    from hfkd.losses import soft_kl_div

    script = os.path.join(os.path.dirname(__file__), "scripts", "unlabelled_eval_ddp.py")
    run_two_processes(script, str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["eval_samples"] == 21  # 11 + 10, the padding left out
    # by hand, in one process: the trained student (rank 0's) against the same teachers
    from hfkd.models.teacher import bind_teacher

    _, evaluation, teachers, _ = two_teacher_setup(seed=0)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)
    student.load_state_dict(load_file(str(tmp_path / "student.safetensors")))
    # each teacher sees the student's batch converted to its own preprocessing, as in the trainer
    teachers = [bind_teacher(t, student.preprocess, 10, None) for t in teachers]
    rows = ImageClassificationDataset(evaluation.select(range(21)), create_image_transform(student.preprocess, False),
                                      "image", None)
    x = torch.stack([rows[i]["pixel_values"] for i in range(21)])
    with torch.no_grad():
        s = student.eval()(x).logits
        t = [teacher.eval()(x).logits for teacher in teachers]
    _assert_agreements(metrics, s, t)
    target = (F.softmax(t[0] / 4.0, -1) + F.softmax(t[1] / 4.0, -1)) / 2
    # the loss is a batch-weighted mean: the rank that repeats an image to even the batches counts it twice
    assert metrics["eval_distillation_loss"] == pytest.approx(soft_kl_div(s, target, 4.0).item(), rel=0.1)


def test_feed_without_labels_needs_its_sequential_teacher_given(tmp_path):
    from hfkd import save_student
    from hfkd.cli import main as hfkd_main

    folder = flat_folder(tmp_path / "photos", n=12)
    teacher = str(tmp_path / "teacher")
    save_student(_student(["cat", "dog"]), teacher)
    base = ["distill", "--method", "feed", "--ce_weight", "0", "--teachers", teacher, "--dataset", folder, *TINY,
            "--output_dir", str(tmp_path / "never"), "--dry_run"]
    with pytest.raises(SystemExit) as e:  # by default generation 1 learns from a baseline trained on the labels
        hfkd_main(base)
    assert "the train split has no labels, but sequential FEED's first generation learns from a baseline trained " \
           "with cross-entropy" in str(e.value) and "--generations 0" in str(e.value)
    assert hfkd_main([*base, "--generations", "0"])["problems"] == []
    assert hfkd_main([*base, "--sequential_teacher", teacher])["problems"] == []
