"""Checkpoints: Accelerate's state plus hfkd's own, written atomically by rename."""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
METHOD_STATE_FILE = "method_state.safetensors"
_TMP = ".tmp-"


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(PREFIX + r"(\d+)", name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def resolve_checkpoint(resume_from: Optional[str], output_dir: str) -> Optional[str]:
    if not resume_from:
        return None
    if str(resume_from).lower() in ("latest", "true", "last"):
        found = list_checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint={resume_from!r} but {output_dir} holds no checkpoint")
        return found[-1]
    if not os.path.isfile(os.path.join(resume_from, STATE_FILE)):
        raise FileNotFoundError(f"{resume_from} is not a complete hfkd checkpoint (no {STATE_FILE})")
    return resume_from


def save_checkpoint(accelerator, output_dir: str, step: int, state: Dict[str, Any], method_state: Dict[str, Any],
                    save_total_limit: Optional[int]) -> str:
    """Every process calls this; the folder appears under its final name only when complete."""
    from safetensors.torch import save_file

    final = os.path.join(output_dir, f"{PREFIX}{step}")
    tmp = os.path.join(output_dir, f"{_TMP}{PREFIX}{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if accelerator.is_main_process:
        if method_state:
            save_file({k: v.detach().cpu().contiguous() for k, v in method_state.items()},
                      os.path.join(tmp, METHOD_STATE_FILE))
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, default=str)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
        if save_total_limit:
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str):
    """Restore Accelerate's state; return (trainer state, method state)."""
    from safetensors.torch import load_file

    accelerator.load_state(path)
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        state = json.load(f)
    method_file = os.path.join(path, METHOD_STATE_FILE)
    method_state = load_file(method_file) if os.path.exists(method_file) else {}
    return state, method_state
