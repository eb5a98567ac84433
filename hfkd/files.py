"""Folders written safely: a complete copy appears under its final name in one step, and only
folders hfkd provably wrote are ever replaced or removed.

Used by the student save (``hfkd.hub.save``) and by checkpoints (``hfkd.training.checkpoint``).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import socket
from typing import Dict, Iterable, List, Optional

# Inside a folder while hfkd writes it: who is writing, so a later run can tell a folder left by a
# killed writer (safe to remove) from one another live process is writing or a stranger's folder.
WRITER_MARKER = ".hfkd-writing"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def mark_writer(folder: str) -> None:
    with open(os.path.join(folder, WRITER_MARKER), "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)


def unmark_writer(folder: str) -> None:
    try:
        os.remove(os.path.join(folder, WRITER_MARKER))
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def abandoned_by_hfkd(folder: str) -> bool:
    """True when ``folder`` carries hfkd's writer marker and its writer, on this host, is gone."""
    try:
        with open(os.path.join(folder, WRITER_MARKER), encoding="utf-8") as f:
            writer = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(writer, dict) or writer.get("host") != socket.gethostname():
        return False  # another machine's writer may still be running: not provably ours to remove
    pid = writer.get("pid")
    return isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid)


def remove_abandoned(parent: str, prefixes: Iterable[str]) -> List[str]:
    """Remove the folders in ``parent`` named ``prefix*`` that a killed hfkd writer left; return them."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    prefixes = tuple(prefixes)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(prefixes) and os.path.isdir(path) and abandoned_by_hfkd(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def exchange(a: str, b: str) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not Linux / glibc < 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or filesystem without the flag
        return False
    raise OSError(err, f"swapping {a} and {b}: {os.strerror(err)}")


def replace_folder(tmp: str, final: str, old_prefix: str) -> None:
    """Move the complete folder ``tmp`` to ``final``; a folder already at ``final`` is removed afterwards.

    Why an exchange: with two renames (``final`` -> old, ``tmp`` -> ``final``) there is a moment where
    nothing is at ``final``, and a kill there leaves the user with no save under its name.  Linux swaps
    two names in one step, so ``final`` always holds a complete save, the old one or the new one; the
    old one then sits at ``tmp`` (still marked as hfkd's) until it is removed.  Elsewhere the two renames
    remain, and the old save survives a kill under ``old_prefix*`` (marked, so a later save removes it).
    """
    if not os.path.lexists(final):
        os.rename(tmp, final)
        unmark_writer(final)
        return
    if exchange(tmp, final):
        unmark_writer(final)
        mark_writer(tmp)  # the old save, now at tmp: removable by a later run if we die here
        shutil.rmtree(tmp, ignore_errors=True)
        return
    parent = os.path.dirname(final)
    old = os.path.join(parent, f"{old_prefix}{os.getpid()}")
    os.rename(final, old)
    mark_writer(old)
    os.rename(tmp, final)
    unmark_writer(final)
    shutil.rmtree(old, ignore_errors=True)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def relative_files(folder: str) -> List[str]:
    """Every file (and symlink) under ``folder``, as sorted relative paths with ``/``."""
    found = []
    for root, dirs, files in os.walk(folder):
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in files + links:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def file_manifest(folder: str, exclude: Iterable[str] = ()) -> Dict[str, Dict[str, object]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder``."""
    skip = set(exclude) | {WRITER_MARKER}
    return {rel: {"size": os.path.getsize(os.path.join(folder, rel)), "sha256": sha256(os.path.join(folder, rel))}
            for rel in relative_files(folder) if rel not in skip}


def manifest_problems(folder: str, manifest: Dict[str, Dict[str, object]]) -> List[str]:
    """What differs between ``folder`` and its manifest: missing, resized or altered files (by name)."""
    problems = []
    for rel, want in sorted(manifest.items()):
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            problems.append(f"{rel} is missing")
        elif os.path.getsize(path) != want["size"]:
            problems.append(f"{rel} has {os.path.getsize(path)} bytes, {want['size']} were written")
        elif sha256(path) != want["sha256"]:
            problems.append(f"{rel} has the right size but different content (sha256 mismatch)")
    return problems


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
