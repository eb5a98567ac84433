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
    metrics = evaluate([saved_student, "--max_eval_samples", str(n), "--batch_size", "20"])
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
