"""``hfkd eval MODEL``: the metrics of a saved student on a dataset's eval split, computed by hand here."""
import json

import pytest
import torch

import hfkd
from hfkd.cli.evaluate import main as evaluate
from hfkd.models.factory import create_backbone


@pytest.fixture
def saved_student(tmp_path, digits):
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                              label_names=digits.label_names)
    with torch.no_grad():  # a model that is right on some digits and wrong on others, not a constant
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    folder = tmp_path / "student"
    hfkd.save_student(student, str(folder))
    return str(folder)


def test_hfkd_eval_reports_top1_and_nll_of_the_saved_model(saved_student, digits, capsys):
    n = 48
    metrics = evaluate([saved_student, "--dataset", "hfkd/digits", "--max_eval_samples", str(n), "--batch_size", "20"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["eval_images"] == n and printed["model"] == saved_student
    assert printed["eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])

    # By hand: the saved model, its own eval transform, the first n eval images.
    model = hfkd.from_pretrained(saved_student)
    transform = hfkd.hub.eval_transform(model)
    rows = digits.eval.select(range(n))
    x = torch.stack([transform(img.convert("RGB")) for img in rows[digits.image_column]])
    y = torch.tensor(rows[digits.label_column])
    with torch.no_grad():
        logits = model(x).logits.float()
    assert metrics["eval_accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item(), abs=1e-6)
    assert metrics["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-4)
    assert 0.0 < metrics["eval_accuracy"] < 1.0  # the check above could not pass by a constant prediction


def test_hfkd_eval_without_a_model_says_how_to_call_it(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate(["--dataset", "hfkd/digits"])
    assert "hfkd eval MODEL --dataset DATASET" in str(e.value)


# -- issue 20: the dataset is given or recorded, and must be the model's ------------------------------------
def _saved(tmp_path, name, num_classes=10, label_names=None, metadata=None):
    torch.manual_seed(0)
    model = create_backbone("test_resnet", num_classes=num_classes, pretrained=False, image_size=32,
                            label_names=label_names)
    return hfkd.save_student(model, str(tmp_path / name), metadata=metadata)


def test_hfkd_eval_needs_a_dataset_unless_the_model_records_one(tmp_path, digits, capsys):
    bare = _saved(tmp_path, "bare", label_names=digits.label_names)
    with pytest.raises(SystemExit) as e:  # before: scored on the digits without a word
        evaluate([bare, "--max_eval_samples", "8"])
    assert "records no dataset" in str(e.value.code) and "--dataset" in str(e.value.code)
    recorded = _saved(tmp_path, "recorded", label_names=digits.label_names, metadata={
        "dataset": {"id": "hfkd/digits", "train_split": "train", "eval_split": "validation"},
        "training_args": {"seed": 42}})
    metrics = evaluate([recorded, "--max_eval_samples", "16"])
    assert json.loads(capsys.readouterr().out)["dataset"] == "hfkd/digits" and "eval_accuracy" in metrics
    local = _saved(tmp_path, "local", label_names=digits.label_names, metadata={"dataset": {"id": "my_photos"}})
    with pytest.raises(SystemExit, match="local folder known by its name only"):
        evaluate([local])


def test_hfkd_eval_refuses_a_model_of_other_classes(tmp_path, digits):
    three = _saved(tmp_path, "three", num_classes=3)
    with pytest.raises(SystemExit) as e:  # before: a 3-class model scored 10.6 % on the digits, no warning
        evaluate([three, "--dataset", "hfkd/digits"])
    assert "predicts 3 classes but the dataset has 10" in str(e.value.code)
    renamed = _saved(tmp_path, "renamed", label_names=[f"c{i}" for i in range(10)])
    with pytest.raises(SystemExit, match="name their classes differently"):
        evaluate([renamed, "--dataset", "hfkd/digits"])


def test_hfkd_eval_loads_a_pruned_student(tmp_path, digits, capsys):
    from hfkd.compress import prune_backbone, save_compressed

    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                              label_names=digits.label_names)
    pruned, report = prune_backbone(student, target_ratio=0.5, search_steps=2)
    summary = {"pruning": report, "rows": [], "pruning_file": "pruning.json", "library": pruned.library,
               "input_size": list(pruned.preprocess.input_size), "latency": {"rounds": 1, "threads": 1}}
    folder = save_compressed(pruned, str(tmp_path / "pruned"), summary, {}, report=report)
    metrics = evaluate([folder, "--dataset", "hfkd/digits", "--max_eval_samples", "16"])
    assert json.loads(capsys.readouterr().out)["eval_images"] == 16 and 0 <= metrics["eval_accuracy"] <= 1


def test_hfkd_eval_holds_out_what_the_models_run_held_out(tmp_path, monkeypatch):
    """A model trained on a folder without an eval split is scored on the same held-out images (the run's seed),
    not on a fresh draw that may hold its training images."""
    from PIL import Image

    import hfkd.cli.evaluate as command

    for c in ("cat", "dog"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (40, 30), (25 * i, 100 if c == "cat" else 200, 0)).save(tmp_path / "photos" / c / f"{i}.png")
    model = _saved(tmp_path, "run", num_classes=2, label_names=["cat", "dog"], metadata={
        "dataset": {"id": "photos", "train_split": "train", "eval_split": "0.1 of train (held out)"},
        "training_args": {"seed": 42}})
    seeds = []
    real_load = command.load_data
    monkeypatch.setattr(command, "load_data", lambda args, seed=0: seeds.append(seed) or real_load(args, seed=seed))
    evaluate([model, "--dataset", str(tmp_path / "photos")])
    assert seeds == [42]
