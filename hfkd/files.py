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
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Union

from .settings import shorten

# Inside a folder while hfkd writes it: who is writing, so a later run can tell a folder left by a
# killed writer (safe to remove) from one another live process is writing or a stranger's folder.
WRITER_MARKER = ".hfkd-writing"
# The names of the files one student save wrote (hidden, never pushed): a later save may replace the folder
# only when it holds nothing else (hfkd.hub.save writes it; the output-folder check reads it).
SAVE_MANIFEST_FILE = ".hfkd-files.json"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class DiskFullError(OSError):
    """A write ran out of space; the message names the disk, its free space and what the write needed."""


def refuse_symlink(path: str, what: str) -> None:
    """Refuse a symbolic link where hfkd is about to write or remove a folder, naming the link and its target.

    Writing through it would put hfkd's files outside the folder the user gave; moving or removing it
    would leave the link in a hidden folder or remove the target's files.
    """
    if os.path.islink(path):
        raise FileExistsError(
            f"{what} {shorten(path)} is a symbolic link to {shorten(os.readlink(path))}; hfkd never writes through a "
            "link (its files would land outside the folder you chose). Remove the link, or choose another path")


def write_file_atomic(path: str, data: Union[str, bytes]) -> None:
    """Write ``path`` whole or not at all, never through a symbolic link (a temporary sibling, then a rename)."""
    refuse_symlink(path, "the file being written")
    tmp = f"{path}.tmp-{os.getpid()}"
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.replace(tmp, path)  # replaces a link at `path` itself, never its target
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def mark_writer(folder: str) -> None:
    refuse_symlink(folder, "the folder being written")
    with open(os.path.join(folder, WRITER_MARKER), "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)


def unmark_writer(folder: str) -> None:
    try:
        os.remove(os.path.join(folder, WRITER_MARKER))
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` lives on this host (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def abandoned_by_hfkd(folder: str) -> bool:
    """True when ``folder`` carries hfkd's writer marker and its writer, on this host, is gone or is this process.

    This process writes one folder at a time and removes it when the write fails, so a marked folder
    of its own that still exists is the leftover of a failed write (its removal itself failed, e.g. on a
    full disk), which a retry in the same process may remove.  A symbolic link is never abandoned.
    """
    if os.path.islink(folder):
        return False
    try:
        with open(os.path.join(folder, WRITER_MARKER), encoding="utf-8") as f:
            writer = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(writer, dict) or writer.get("host") != socket.gethostname():
        return False  # another machine's writer may still be running: not provably ours to remove
    pid = writer.get("pid")
    return isinstance(pid, int) and (pid == os.getpid() or not pid_alive(pid))


def remove_abandoned(parent: str, prefixes: Iterable[str]) -> List[str]:
    """Remove the folders in ``parent`` named ``prefix*`` that a killed hfkd writer left; return them."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    prefixes = tuple(prefixes)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(prefixes) and os.path.isdir(path) and not os.path.islink(path) and abandoned_by_hfkd(path):
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
    A symbolic link at ``final`` is refused: swapping it would hide the link and remove through it.
    """
    refuse_symlink(final, "the save target")
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


# Messages of out-of-space failures that carry no errno (safetensors' Rust writer, wrapped OS errors).
_NO_SPACE_WORDS = ("No space left on device", "Disk quota exceeded", "StorageFull", "os error 28", "os error 122")
# torch's zip writer on a short write: no errno, only these words (e.g. "[enforce fail at
# inline_container.cc:672] . unexpected pos 863808 vs 863700"); a full disk then decides by free space.
_SHORT_WRITE_WORDS = ("unexpected pos", "PytorchStreamWriter failed", "inline_container", "file write failed")
# Below this much free space a short write is taken for a full disk when the write's size is unknown.
_LOW_SPACE = 16 << 20


def mount_point(path: str) -> str:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def free_bytes(path: str) -> Optional[int]:
    try:
        return shutil.disk_usage(mount_point(path)).free
    except OSError:
        return None


def human_size(num_bytes: Optional[float]) -> str:
    if num_bytes is None:
        return "an unknown amount"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(num_bytes) < 1024 or unit == "TB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"


def folder_bytes(folder: str) -> int:
    """The size of the files under ``folder`` (links not followed)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def out_of_space(error: BaseException, folder: str, needed: Optional[int] = None) -> bool:
    """Whether ``error``, raised while writing into ``folder``, means its disk is full.

    ENOSPC / EDQUOT say so; torch's zip writer only says ``unexpected pos ...`` (a short write, no errno),
    so for such an error the disk's free space decides: less than the write needed, or nearly nothing.
    """
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(words in str(error) for words in _NO_SPACE_WORDS):
        return True
    if not any(words in str(error) for words in _SHORT_WRITE_WORDS):
        return False
    free = free_bytes(folder)
    return free is not None and free < max(needed or 0, _LOW_SPACE)


def remove_own(paths: Iterable[str]) -> List[str]:
    """Remove the folders this process wrote (never a link); return those removed."""
    removed = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def disk_full_explained(folder: str, what: str, *, needed: Union[int, Callable[[], int], None] = None,
                        cleanup: Iterable[str] = (), where_to_change: str = "the output folder",
                        cleanup_only_when_full: bool = False) -> Iterator[None]:
    """Turn a full disk while writing ``what`` into ``folder`` into one :class:`DiskFullError`.

    On any failure the folders in ``cleanup`` (what this write created) are removed (with
    ``cleanup_only_when_full``, only when the disk is full: a resumable write keeps them for the retry
    otherwise); a full disk is then
    reported with its mount point, the free space left after the clean-up and about what the write needed
    (``needed``: bytes, or a function giving them, called only when a write fails).
    """
    cleanup = list(cleanup)
    try:
        yield
    except Exception as error:
        if callable(needed):
            try:
                needed = needed()
            except Exception:  # noqa: BLE001 - only the message's estimate; the write's own error matters
                needed = None
        full = out_of_space(error, folder, needed)  # before the clean-up frees the partial write's space
        removed = remove_own(cleanup) if full or not cleanup_only_when_full else []
        if not full:
            raise
        free = free_bytes(folder)
        needs = f"about {human_size(needed)}" if needed else "more than is free"
        cleaned = f"removed the partial write ({', '.join(removed)}); " if removed else ""
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on the disk of {folder} (mounted at {mount_point(folder)}) while writing {what}: "
            f"{human_size(free)} free, the write needs {needs}. hfkd {cleaned or 'wrote nothing that stays; '}"
            f"free some space there or choose {where_to_change} on another disk, then run again "
            f"(the original error: {shorten(str(error))})") from error


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


def manifest_problems(folder: str, manifest: Dict[str, Dict[str, object]], content: bool = True) -> List[str]:
    """What differs between ``folder`` and its manifest: missing, resized or (``content``: hashed) altered files."""
    problems = []
    for rel, want in sorted(manifest.items()):
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            problems.append(f"{rel} is missing")
        elif os.path.getsize(path) != want["size"]:
            problems.append(f"{rel} has {os.path.getsize(path)} bytes, {want['size']} were written")
        elif content and sha256(path) != want["sha256"]:
            problems.append(f"{rel} has the right size but different content (sha256 mismatch)")
    return problems


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def check_save_target(path: str) -> None:
    """Refuse to save where replacing the folder would delete or replace something hfkd did not write,
    or where a symbolic link would carry the save outside the folder."""
    refuse_symlink(path, "the save folder")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a folder; hfkd saves a student into a folder and never "
                              "replaces a file: choose another path or move the file")
    if not os.path.isdir(path):
        return
    present = set(relative_files(path))
    if not present:
        return
    recorded = read_json(os.path.join(path, SAVE_MANIFEST_FILE))
    if recorded is None:
        shown = ", ".join(sorted(present)[:5]) + (", ..." if len(present) > 5 else "")
        raise FileExistsError(
            f"{path} is not empty ({shown}) and is not a student hfkd saved; saving there would delete those files. "
            f"Save into a new or empty folder (e.g. {os.path.join(path, 'student')}) or move the files away"
        )
    foreign = sorted(present - set(recorded.get("files", [])) - {SAVE_MANIFEST_FILE, WRITER_MARKER})
    if foreign:
        raise FileExistsError(
            f"{path} is an hfkd save but also holds files hfkd did not write: {foreign}; replacing the save would "
            "delete them. Move them out of the folder, or save into another folder"
        )
