"""Checkpoints: Accelerate's state plus hfkd's own, written atomically and verified before use.

A checkpoint is written into ``.tmp-checkpoint-N`` (marked as hfkd's while it is being written),
its manifest (size and sha256 of every file) is written last, and only then is the folder renamed
to ``checkpoint-N``.  Resuming verifies the manifest, so a damaged file is named instead of being
loaded; ``resume_from_checkpoint="latest"`` falls back to the newest intact checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Dict, Optional

from ..files import (abandoned_by_hfkd, disk_full_explained, file_manifest, folder_bytes, manifest_problems,
                     mark_writer, read_json, refuse_symlink, remove_abandoned, replace_folder)
from ..output_dir import CHECKPOINT_PREFIX, CHECKPOINT_STATE_FILE, list_checkpoints

logger = logging.getLogger(__name__)

PREFIX = CHECKPOINT_PREFIX
STATE_FILE = CHECKPOINT_STATE_FILE
METHOD_STATE_FILE = "method_state.safetensors"
MANIFEST_FILE = "checkpoint_manifest.json"
_TMP = ".tmp-"
_OLD = ".old-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing files or whose files differ from what was written."""


def verify_checkpoint(path: str) -> None:
    """Raise :class:`CheckpointError` naming each missing or altered file of the checkpoint ``path``."""
    try:
        manifest = read_json(os.path.join(path, MANIFEST_FILE))
    except ValueError as e:
        raise CheckpointError(f"{path}: {MANIFEST_FILE} is damaged ({e})") from e
    if manifest is None:
        if not os.path.isfile(os.path.join(path, STATE_FILE)):
            raise CheckpointError(f"{path} is not an hfkd checkpoint (no {MANIFEST_FILE}, no {STATE_FILE})")
        logger.warning("%s has no %s (written by an older hfkd): its files cannot be verified", path, MANIFEST_FILE)
        return
    problems = manifest_problems(path, manifest.get("files", {}))
    if problems:
        raise CheckpointError(f"checkpoint {path} is damaged: " + "; ".join(problems))


def resolve_checkpoint(resume_from: Optional[str], output_dir: str) -> Optional[str]:
    """The checkpoint to resume from, verified.  ``"latest"`` skips damaged ones, saying which and why."""
    if not resume_from:
        return None
    if str(resume_from).lower() not in ("latest", "true", "last"):
        if not os.path.isdir(resume_from):
            raise FileNotFoundError(f"resume_from_checkpoint={resume_from!r} does not exist")
        verify_checkpoint(resume_from)
        return resume_from
    found = list_checkpoints(output_dir)
    if not found:
        raise FileNotFoundError(f"resume_from_checkpoint={resume_from!r} but {output_dir} holds no checkpoint")
    skipped = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            logger.warning("skipping %s, resuming from an older checkpoint: %s", path, e)
            skipped.append(str(e))
            continue
        if skipped:
            logger.warning("resuming from %s, the newest intact checkpoint", path)
        return path
    raise CheckpointError(f"no intact checkpoint in {output_dir}:\n" + "\n".join(skipped))


def _prepare_tmp(tmp: str) -> None:
    if os.path.lexists(tmp):
        if not abandoned_by_hfkd(tmp):
            raise FileExistsError(f"{tmp} exists and is not a checkpoint left by a stopped hfkd run; "
                                  "another run may be writing into the same output_dir. Remove it or use another output_dir")
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        mark_writer(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # ours, just made: an unmarked one would block every retry
        raise


def _state_bytes(accelerator, output_dir: str) -> int:
    """About what a checkpoint takes: the newest one's size, else the models' and optimisers' tensors."""
    found = list_checkpoints(output_dir)
    if found:
        return folder_bytes(found[-1])
    tensors = [t for m in accelerator._models for t in m.state_dict().values()]
    for optimizer in accelerator._optimizers:
        for per_param in optimizer.state_dict().get("state", {}).values():
            tensors += [t for t in per_param.values() if hasattr(t, "element_size")]
    return sum(t.numel() * t.element_size() for t in tensors)


def save_checkpoint(accelerator, output_dir: str, step: int, state: Dict[str, Any], method_state: Dict[str, Any],
                    save_total_limit: Optional[int]) -> str:
    """Every process calls this; the folder appears under its final name only when complete.

    A symbolic link at ``checkpoint-N`` or ``.tmp-checkpoint-N`` is refused before anything is written.
    A failed write removes ``.tmp-checkpoint-N``; a full disk raises :class:`hfkd.files.DiskFullError`
    naming the disk, its free space and about what the checkpoint needs.
    """
    from safetensors.torch import save_file

    final = os.path.join(output_dir, f"{PREFIX}{step}")
    tmp = os.path.join(output_dir, f"{_TMP}{PREFIX}{step}")
    refuse_symlink(final, "the checkpoint")  # every process: all raise together, none waits for the others
    refuse_symlink(tmp, "the checkpoint's temporary folder")
    # The size estimate is made only when a write fails.
    full_disk = dict(needed=lambda: _state_bytes(accelerator, output_dir), where_to_change="an output_dir")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        remove_abandoned(output_dir, (f"{_TMP}{PREFIX}", f"{_OLD}{PREFIX}"))  # left by a killed run
        with disk_full_explained(output_dir, f"the checkpoint {final}", **full_disk):
            _prepare_tmp(tmp)
    accelerator.wait_for_everyone()
    with disk_full_explained(output_dir, f"the checkpoint {final}",
                             cleanup=[tmp] if accelerator.is_main_process else [], **full_disk):
        accelerator.save_state(tmp)
        # Every process writes into tmp (its random states; under FSDP its shards): all of them must be done
        # before the main process lists the files and renames the folder.
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if method_state:
                save_file({k: v.detach().cpu().contiguous() for k, v in method_state.items()},
                          os.path.join(tmp, METHOD_STATE_FILE))
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=2, default=str)
            with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as f:  # last: marks completeness
                json.dump({"files": file_manifest(tmp, exclude=(MANIFEST_FILE,))}, f, indent=2)
            if os.path.lexists(final) and not os.path.isfile(os.path.join(final, STATE_FILE)):
                raise FileExistsError(f"{final} exists and is not an hfkd checkpoint; move it out of {output_dir}")
            replace_folder(tmp, final, old_prefix=f"{_OLD}{PREFIX}{step}-")
    if accelerator.is_main_process and save_total_limit:
        for old in list_checkpoints(output_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_state(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        return json.load(f)


def load_checkpoint(accelerator, path: str):
    """Restore Accelerate's state; return (trainer state, method state)."""
    from safetensors.torch import load_file

    accelerator.load_state(path)
    method_file = os.path.join(path, METHOD_STATE_FILE)
    method_state = load_file(method_file) if os.path.exists(method_file) else {}
    return read_state(path), method_state
