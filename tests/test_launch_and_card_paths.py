"""Accelerate decides precision and device; CPU threads under the launcher; teachers keep their label
alignment (trainer and recipe); cards and lineages carry no local path and no invented license."""
import json
import os
import subprocess
import sys

import pytest
import torch

import hfkd
from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_teacher
from hfkd import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- Accelerate decides -------------------------------------------------------------------------------
def test_only_settings_the_user_gave_reach_the_accelerator():
    assert DistillationArguments().mixed_precision is None and DistillationArguments().use_cpu is None
    assert launch.accelerator_overrides(DistillationArguments()) == {}
    given = DistillationArguments(mixed_precision="bf16", use_cpu=True)
    assert launch.accelerator_overrides(given) == {"mixed_precision": "bf16", "cpu": True}
    assert launch.accelerator_overrides(DistillationArguments(mixed_precision="no")) == {"mixed_precision": "no"}


class _Acc:
    def __init__(self, processes):
        self.num_processes, self.device, self.is_main_process = processes, torch.device("cpu"), True


@pytest.mark.parametrize("local_processes, launched, omp, expect_all_cores", [
    ("1", True, "1", True),     # accelerate launch, one CPU process: use the cores
    ("2", True, "1", False),    # two processes on the machine: one thread each stays right
    ("1", False, "1", False),   # OMP_NUM_THREADS=1 set by the user for plain python: respected
    ("1", True, "2", False),    # --num_cpu_threads_per_process 2: the user's choice
])
def test_a_lone_cpu_process_under_accelerate_launch_uses_the_cores(monkeypatch, local_processes, launched, omp,
                                                                    expect_all_cores):
    if launch.available_cores() < 2:
        pytest.skip("needs a machine with 2 or more cores")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.delenv(launch.KEEP_THREADS_ENV, raising=False)
    if launched:
        monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    else:
        monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(int(omp))
        threads = launch.use_cpu_cores(_Acc(int(local_processes)))
        assert threads == torch.get_num_threads()
        assert threads == (launch.available_cores() if expect_all_cores else int(omp))
        if expect_all_cores:  # the opt-out keeps the launcher's one thread
            torch.set_num_threads(1)
            monkeypatch.setenv(launch.KEEP_THREADS_ENV, "1")
            assert launch.use_cpu_cores(_Acc(1)) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_accelerate_launch_bf16_trains_in_bf16_and_says_so(tmp_path):
    """A real `accelerate launch --mixed_precision bf16`: hfkd's default leaves precision to the launcher."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HFKD_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    script = os.path.join(ROOT, "tests", "scripts", "kd_precision.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", script, str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "INNER_DTYPE torch.bfloat16" in proc.stdout, proc.stdout
    assert "LINEAGE_MIXED_PRECISION bf16" in proc.stdout
    if launch.available_cores() > 1:  # the launcher's OMP_NUM_THREADS=1 was undone, and said so
        assert f"THREADS {launch.available_cores()}" in proc.stdout
        assert "set OMP_NUM_THREADS=1 for this single CPU process" in proc.stdout
    card = (tmp_path / "run" / "student" / "README.md").read_text()
    assert "**Mixed precision:** bf16" in card


# -- label alignment through the trainer and the recipes ---------------------------------------------------
@pytest.fixture
def permuted_teacher(tmp_path, digits):
    """A saved teacher whose classes are the digits' in reverse order (same names, other order)."""
    torch.manual_seed(3)
    names = list(reversed(digits.label_names))
    teacher = create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32, label_names=names)
    path = tmp_path / "reversed_teacher"
    hfkd.save_student(teacher, str(path))
    return str(path)


def test_trainer_keeps_a_teachers_label_alignment(tmp_path, small_digits, permuted_teacher):
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                              label_names=small_digits.label_names)
    args = DistillationArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=16,
                                 save_strategy="no", eval_strategy="no", eval_teachers=False, disable_tqdm=True)
    common = dict(method="kd", args=args, train_dataset=small_digits.train)
    with pytest.raises(ValueError, match="align_labels_by_name=True"):
        DistillationTrainer(student, [permuted_teacher], **common)
    teacher = create_teacher(permuted_teacher, student.preprocess, 10, student.label_names, align_labels_by_name=True)
    trainer = DistillationTrainer(student, [teacher], **common)
    (kept,) = trainer.teachers
    assert kept is teacher and kept.permutation.tolist() == list(range(9, -1, -1))
    x = torch.randn(2, 3, 32, 32)
    raw = kept.backbone(kept.prepare_input(x)).logits
    assert torch.allclose(kept(x).logits, raw[:, list(range(9, -1, -1))])  # column j is class j's logit
    trainer.train()
    mapping = {n: n for n in small_digits.label_names}  # label_mapping passes through the same way
    mapped = create_teacher(permuted_teacher, student.preprocess, 10, student.label_names, label_mapping=mapping)
    assert DistillationTrainer(student, [mapped], **common).teachers[0] is mapped


def test_recipe_flag_aligns_a_permuted_teacher(tmp_path, permuted_teacher):
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    try:
        import kd as recipe
    finally:
        sys.path.remove(os.path.join(ROOT, "recipes"))
    argv = ["--student", "test_resnet", "--teachers", permuted_teacher, "--max_train_samples", "32", "--max_steps",
            "1", "--per_device_train_batch_size", "16", "--eval_teachers", "false", "--disable_tqdm", "true",
            "--baseline", "false", "--output_dir", str(tmp_path / "kd")]
    with pytest.raises(SystemExit, match="align_labels_by_name"):  # refused by the checks, before any step
        recipe.main(argv)
    rows = recipe.main(argv + ["--align_labels_by_name", "true"])
    assert rows[-1]["role"] == "student, kd" and rows[-1]["eval_accuracy"] is not None


# -- no local paths, no invented license -----------------------------------------------------------------
def test_card_and_lineage_carry_no_local_path(tmp_path, small_digits, permuted_teacher):
    from hfkd.cli.pipeline import dataset_info
    from hfkd.cli.arguments import DataArguments

    start = tmp_path / "home" / "someone" / "ckpt" / "student"
    hfkd.save_student(create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32,
                                      label_names=small_digits.label_names), str(start))
    student = create_backbone(str(start), num_classes=10, image_size=32)
    teacher = create_teacher(permuted_teacher, student.preprocess, 10, student.label_names, align_labels_by_name=True)
    small_digits.source = str(tmp_path / "my_local_dataset")  # as if loaded from a folder
    args = DistillationArguments(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=16,
                                 save_strategy="no", eval_strategy="no", eval_teachers=False, disable_tqdm=True,
                                 resume_from_checkpoint=None)
    trainer = DistillationTrainer(student, [teacher], method="kd", args=args, train_dataset=small_digits.train,
                                  eval_dataset=small_digits.eval,
                                  dataset_info=dataset_info(small_digits, DataArguments(eval_split=None)))
    trainer.train()
    trainer.evaluate()
    folder = trainer.save_model()
    lineage_text = open(os.path.join(folder, "hfkd.json")).read()
    card = open(os.path.join(folder, "README.md")).read()
    for text in (lineage_text, card):
        assert str(tmp_path) not in text and "/home/" not in text and "local-dir:" not in text
        assert "None`" not in text  # the eval split is named
    lineage = json.loads(lineage_text)
    assert lineage["student"]["name"] == "ckpt/student" and lineage["teachers"][0]["name"] == "reversed_teacher"
    assert lineage["dataset"]["id"] == "my_local_dataset"
    assert "hfkd" not in json.load(open(os.path.join(folder, "config.json")))  # the lineage is written once
    assert "# test_resnet-kd-my_local_dataset" in card  # architecture-method-dataset, not a path
    assert "- name: test_resnet-kd-my_local_dataset" in card and "split: validation" not in card
    assert "`reversed_teacher` (local checkpoint)" in card
    assert "\nlicense:" not in card.split("---")[1] and "## License\n\nnot set." in card


def test_license_is_chosen_or_inherited_and_the_card_says_which():
    from hfkd.hub.card import create_model_card

    lineage = {"method": {"name": "kd", "hparams": {}}, "student": {"name": "resnet18", "license": "apache-2.0"}}
    inherited = str(create_model_card(lineage))
    assert "license: apache-2.0" in inherited and "inherited from the student's source" in inherited
    chosen = str(create_model_card(lineage, license="mit"))
    assert "license: mit" in chosen and "`mit`, chosen by the author" in chosen
