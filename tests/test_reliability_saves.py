"""Saving never deletes or replaces what hfkd did not write; the swap leaves no moment without a save."""
import json
import os
import subprocess
import sys

import pytest
import torch

import hfkd
import hfkd.files as files
from hfkd.hub.save import SAVE_MANIFEST_FILE


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)


def test_foreign_folder_is_refused_and_kept(tmp_path, student):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "train.py").write_text("print(1)")
    with pytest.raises(FileExistsError, match=r"project is not empty \(notes.txt, train.py\).*project/student"):
        hfkd.save_student(student, str(folder))
    assert sorted(os.listdir(folder)) == ["notes.txt", "train.py"]


def test_save_model_into_output_dir_keeps_checkpoints(tmp_path, small_digits):
    args = hfkd.DistillationArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=32,
                                      save_strategy="steps", save_steps=2, eval_strategy="no", disable_tqdm=True)
    trainer = hfkd.DistillationTrainer(hfkd.create_backbone("test_resnet", num_classes=10, pretrained=False,
                                                            image_size=32),
                                       method="supervised", args=args, train_dataset=small_digits.train)
    trainer.train()
    with pytest.raises(FileExistsError, match="checkpoint-2.*not a student hfkd saved"):
        trainer.save_model(args.output_dir)
    assert os.path.isfile(tmp_path / "run" / "checkpoint-2" / "checkpoint_manifest.json")
    assert os.path.isfile(os.path.join(trainer.save_model(), "model.safetensors"))  # default: output_dir/student


def test_an_existing_file_is_never_replaced(tmp_path, student):
    target = tmp_path / "student"
    target.write_text("a file")
    with pytest.raises(FileExistsError, match="is not a folder"):
        hfkd.save_student(student, str(target))
    assert target.read_text() == "a file"


def test_earlier_save_is_replaced_only_when_it_holds_only_hfkd_files(tmp_path, student):
    folder = str(tmp_path / "student")
    hfkd.save_student(student, folder, metadata={"run": 1})
    recorded = json.loads((tmp_path / "student" / SAVE_MANIFEST_FILE).read_text())["files"]
    assert sorted(recorded) == ["config.json", "hfkd.json", "model.safetensors"]
    hfkd.save_student(student, folder, metadata={"run": 2})  # only hfkd's files: replaced
    assert json.loads((tmp_path / "student" / "hfkd.json").read_text()) == {"run": 2}
    (tmp_path / "student" / "eval_notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match=r"files hfkd did not write: \['eval_notes.md'\]"):
        hfkd.save_student(student, folder, metadata={"run": 3})
    assert (tmp_path / "student" / "eval_notes.md").read_text() == "mine"
    assert json.loads((tmp_path / "student" / "hfkd.json").read_text()) == {"run": 2}


def test_swap_is_one_step_and_a_kill_after_it_leaves_the_new_save(tmp_path, student, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert files.exchange(str(a), str(b)), "renameat2(RENAME_EXCHANGE) is unavailable here"
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"

    folder = str(tmp_path / "student")
    hfkd.save_student(student, folder, metadata={"run": 1})

    def killed(path, ignore_errors=False):  # the process dies right after the swap, before removing the old save
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        hfkd.save_student(student, folder, metadata={"run": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "student" / "hfkd.json").read_text()) == {"run": 2}  # complete, under its name
    assert hfkd.from_pretrained(folder) is not None
    (old,) = [n for n in os.listdir(tmp_path) if n.startswith(".student.tmp-")]  # the old save, marked as hfkd's
    assert os.path.isfile(tmp_path / old / files.WRITER_MARKER)


def _dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_without_exchange_a_kill_between_renames_keeps_the_old_save(tmp_path, student, monkeypatch):
    folder = str(tmp_path / "student")
    hfkd.save_student(student, folder, metadata={"run": 1})
    monkeypatch.setattr(files, "exchange", lambda a, b: False)  # e.g. not Linux
    rename, calls = os.rename, []

    def killed_at_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(files.os, "rename", killed_at_second_rename)
    with pytest.raises(KeyboardInterrupt):
        hfkd.save_student(student, folder, metadata={"run": 2})
    monkeypatch.undo()
    (old,) = [n for n in os.listdir(tmp_path) if n.startswith(".student.old-")]
    assert json.loads((tmp_path / old / "hfkd.json").read_text()) == {"run": 1}  # the old save is intact
    dead = _dead_pid()
    for name in os.listdir(tmp_path):  # the old save and the new one, both marked; their writer has died
        if name.startswith("."):
            marker = tmp_path / name / files.WRITER_MARKER
            marker.write_text(json.dumps({**json.loads(marker.read_text()), "pid": dead}))
    hfkd.save_student(student, folder, metadata={"run": 3})
    assert sorted(os.listdir(tmp_path)) == ["student"]  # both leftovers of the killed save removed


def test_stale_temporary_folders_are_removed_only_when_provably_abandoned(tmp_path, student):
    dead_pid = _dead_pid()
    abandoned = tmp_path / ".student.tmp-killed"
    abandoned.mkdir()
    (abandoned / files.WRITER_MARKER).write_text(json.dumps({"pid": dead_pid, "host": files.socket.gethostname()}))
    live = tmp_path / ".student.tmp-live"
    live.mkdir()
    (live / files.WRITER_MARKER).write_text(json.dumps({"pid": os.getppid(), "host": files.socket.gethostname()}))
    stranger = tmp_path / ".student.tmp-unmarked"
    stranger.mkdir()
    (stranger / "data.txt").write_text("not hfkd's")
    hfkd.save_student(student, str(tmp_path / "student"))
    left = sorted(os.listdir(tmp_path))
    assert ".student.tmp-killed" not in left
    assert ".student.tmp-live" in left and ".student.tmp-unmarked" in left
    assert not os.path.exists(tmp_path / "student" / files.WRITER_MARKER)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_from_pretrained_names_a_damaged_weights_file(tmp_path, student, damage):
    folder = hfkd.save_student(student, str(tmp_path / "student"))
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if damage == "truncate" else b"")
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        hfkd.from_pretrained(folder)


def test_push_to_hub_without_a_repository_says_so(tmp_path, student):
    folder = hfkd.save_student(student, str(tmp_path / "student"))
    with pytest.raises(ValueError, match="needs the Hub repository as repo_id='ORG/NAME' \\(got None\\)"):
        hfkd.push_to_hub(folder, None)
