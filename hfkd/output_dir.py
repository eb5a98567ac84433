"""A run's output folder: one check before anything runs, and one lock while the run lives.

Every writer of a run's folder goes through here: the trainer (its ``output_dir``), the command line
(the top folder of a run with baselines, seeds or generations), a requeued cluster job (the lock lets
its own job id back in), and ``--overwrite_output_dir`` (which removes only hfkd's own outputs).

What counts as a run's outputs: ``checkpoint-N`` folders holding a trainer state, and saved students
(a ``student`` folder with ``hfkd.json``).  Nothing else in the folder is ever removed.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

from .files import check_save_target, pid_alive
from .settings import shorten

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_STATE_FILE = "trainer_state.json"
STUDENT_FOLDER = "student"
STUDENT_METADATA_FILE = "hfkd.json"
LOCK_FILE = ".hfkd-run.lock"
# Scheduler variables naming the job this process belongs to; a requeued job keeps its id but may land on
# another host, where the pid in its old lock means nothing.
JOB_ID_VARIABLES = ("HFKD_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
# Subfolders of one command's run (baseline/, seed_1/, generation_2/ ...) are looked into this deep.
_NESTED_DEPTH = 3


class OutputDirError(FileExistsError):
    """The output folder cannot take this run; the message names the problem and the ways out."""


class OutputDirLocked(OutputDirError):
    """Another live run holds the output folder."""


def list_checkpoints(output_dir: str) -> List[str]:
    """Checkpoints in ``output_dir`` (folders ``checkpoint-N`` with a trainer state), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", name)
        path = os.path.join(output_dir, name)
        if m and not os.path.islink(path) and os.path.isfile(os.path.join(path, CHECKPOINT_STATE_FILE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def run_outputs(output_dir: str, nested: bool = False) -> Dict[str, List[str]]:
    """hfkd's outputs of earlier runs in ``output_dir``: ``{"checkpoints": [...], "students": [...]}``.

    ``nested`` also looks into subfolders (a command's ``baseline/``, ``seed_N/``, ``generation_N/``).
    """
    found: Dict[str, List[str]] = {"checkpoints": [], "students": []}
    folders = [output_dir]
    for depth in range(_NESTED_DEPTH + 1 if nested else 1):
        below = []
        for folder in folders:
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            found["checkpoints"] += list_checkpoints(folder)
            student = os.path.join(folder, STUDENT_FOLDER)
            if os.path.isfile(os.path.join(student, STUDENT_METADATA_FILE)) and not os.path.islink(student):
                found["students"].append(student)
            if nested and depth < _NESTED_DEPTH:
                for name in sorted(os.listdir(folder)):
                    path = os.path.join(folder, name)
                    if (os.path.isdir(path) and not os.path.islink(path) and name != STUDENT_FOLDER
                            and not name.startswith((CHECKPOINT_PREFIX, "."))):
                        below.append(path)
        folders = below
    return found


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _symlinked_outputs(output_dir: str) -> List[str]:
    """Links in ``output_dir`` where hfkd will write a checkpoint or the student (``checkpoint-N``, ``student``)."""
    if not os.path.isdir(output_dir):
        return []
    pattern = r"(\.tmp-)?" + re.escape(CHECKPOINT_PREFIX) + r"\d+|" + re.escape(STUDENT_FOLDER)
    return sorted(os.path.join(output_dir, name) for name in os.listdir(output_dir)
                  if re.fullmatch(pattern, name) and os.path.islink(os.path.join(output_dir, name)))


def _cannot_write(folder: str) -> Optional[str]:
    """Why this process cannot create a file in ``folder``, or None.

    ``os.access`` answers from the permission bits; creating an unnamed file also finds a read-only
    mount, ACLs and root squashed on NFS, and leaves nothing behind.
    """
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by this user"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"refuses new files ({e.strerror or e})"
    return None


def check_output_dir(output_dir: str, *, resume: bool = False, overwrite: bool = False, nested: bool = False,
                     check_lock: bool = True, what: str = "output_dir") -> None:
    """Refuse, before anything runs, an output folder this run cannot or must not write into.

    * a path that is a file, or a folder (or its nearest existing parent) this user cannot write;
    * a folder holding an earlier run's checkpoints or saved student, unless the run resumes from it
      (``resume``) or replaces hfkd's own outputs (``overwrite``, see :func:`remove_run_outputs`);
    * a folder another live run holds (its lock, see :class:`OutputDirLock`); ``check_lock=False`` on
      the processes other than the main one, which takes the lock and would otherwise see itself.
    """
    path = os.path.abspath(output_dir)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputDirError(f"{what}={shorten(output_dir)} exists and is not a folder; choose another {what} or move "
                             "the file away")
    existing = _nearest_existing(path)
    problem = _cannot_write(existing)
    if problem:
        raise OutputDirError(f"{what}={shorten(output_dir)} cannot be written: {existing} {problem}; "
                             f"choose another {what} or fix its permissions")
    links = _symlinked_outputs(path)
    if links:
        shown = "; ".join(f"{link} -> {shorten(os.readlink(link))}" for link in links[:4])
        raise OutputDirError(
            f"{what}={shorten(output_dir)} holds symbolic links where hfkd writes its checkpoints or student ({shown}); "
            f"hfkd never writes through a link (the files would land outside {what}). Remove the links (copy what "
            f"they point to if you need it there) or use another {what}")
    lock_problem = OutputDirLock(path).holder_problem() if check_lock else None
    if lock_problem:
        raise OutputDirLocked(lock_problem)
    if resume or overwrite:
        return
    outputs = run_outputs(path, nested=nested)
    earlier = outputs["students"] + outputs["checkpoints"]
    if earlier:
        shown = ", ".join(os.path.relpath(p, path) for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise OutputDirError(
            f"{what}={output_dir!r} holds an earlier run ({shown}); a new run there would replace its student and mix "
            f"its checkpoints with the old ones. Use a new {what}, continue the earlier run with "
            "--resume_from_checkpoint latest, or replace hfkd's own files there with --overwrite_output_dir")


def remove_run_outputs(output_dir: str, nested: bool = False) -> List[str]:
    """Remove hfkd's own outputs of earlier runs in ``output_dir`` (``--overwrite_output_dir``); return them.

    Checkpoints are removed; a saved student only when it holds nothing but the files its save wrote
    (a user's file inside it keeps the folder, and the next save refuses it, naming the file).
    """
    removed = []
    outputs = run_outputs(output_dir, nested=nested)
    for path in outputs["checkpoints"]:
        shutil.rmtree(path)
        removed.append(path)
    for path in outputs["students"]:
        try:
            check_save_target(path)
        except FileExistsError as e:
            logger.warning("keeping %s: %s", path, e)
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed


def scheduler_job_id() -> Optional[str]:
    """The cluster scheduler's id of the job this process runs in (SLURM, PBS, LSF, SGE), if any."""
    for name in JOB_ID_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return None


_HELD: Dict[str, int] = {}  # lock path -> how many holders in this process


@contextmanager
def _one_taker_at_a_time(folder: str) -> Iterator[None]:
    """Serialise taking the lock of ``folder`` among processes (``flock`` on the folder itself).

    Without it, two runs starting together could both find a stale lock, and the second would remove
    the lock the first had just taken.  Where the file system has no ``flock`` on folders (some network
    file systems), taking the lock goes on without this guard.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            logger.debug("no flock on %s (%s): taking its lock unguarded", folder, e)
        yield
    finally:
        os.close(fd)  # also releases the flock


class OutputDirLock:
    """``output_dir/.hfkd-run.lock``: which run writes into the folder (pid, host, start time, job id).

    Taken by the main process only.  A second run is refused while the holder lives.  A lock is taken
    over, with a message, when its process is dead on this host, or when it names this job's scheduler
    id (a requeued job, possibly on another host).  Re-entrant within one process (the command line
    locks the top folder, each trainer its own).  Released at exit; a killed run's lock is stale, and
    the next run takes it over.
    """

    def __init__(self, output_dir: str):
        self.output_dir = os.path.abspath(output_dir)
        self.path = os.path.join(self.output_dir, LOCK_FILE)

    def read(self) -> Optional[dict]:
        try:
            with open(self.path, encoding="utf-8") as f:
                holder = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as stale
        return holder if isinstance(holder, dict) else {}

    def _stale_reason(self, holder: dict) -> Optional[str]:
        """Why the lock ``holder`` may be taken over, or None when it belongs to a live run elsewhere."""
        if not holder:
            return "the lock file is unreadable"
        job = scheduler_job_id()
        if job is not None and holder.get("job_id") == job:
            return f"it is this job's own lock (job id {job}, requeued)"
        pid = holder.get("pid")
        if holder.get("host") == socket.gethostname() and isinstance(pid, int):
            if pid == os.getpid():
                return None  # ours: re-entrant, not stale
            if not pid_alive(pid):
                return f"its process {pid} on this host is gone"
        return None

    def holder_problem(self) -> Optional[str]:
        """A message naming the live run that holds the folder, or None when this process may take it."""
        holder = self.read()
        if holder is None or self._stale_reason(holder) is not None:
            return None
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return None
        job = f", job {holder['job_id']}" if holder.get("job_id") else ""
        started = holder.get("start")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
        return (f"{self.output_dir} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}{job}, "
                f"started {when}); two runs in one output_dir replace each other's checkpoints. Wait for it, use "
                f"another output_dir, or, if that run is gone, remove {self.path}")

    def acquire(self) -> "OutputDirLock":
        if _HELD.get(self.path):
            _HELD[self.path] += 1
            return self
        os.makedirs(self.output_dir, exist_ok=True)
        with _one_taker_at_a_time(self.output_dir):
            self._take()
        _HELD[self.path] = 1
        atexit.register(self._release_at_exit)
        return self

    def _write_record(self) -> None:
        """Create the lock with its whole record in one step (a reader never sees it half-written)."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time(),
                  "job_id": scheduler_job_id()}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):  # a crashed run's with our pid; never written through, should it be a link
            os.remove(tmp)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w", encoding="utf-8") as f:
            json.dump(record, f)
        try:
            os.link(tmp, self.path)  # fails if a lock exists: exclusive, and complete when it appears
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: exclusive create, then the record
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
        finally:
            os.remove(tmp)

    def _take(self) -> None:
        for _ in range(3):
            try:
                self._write_record()
            except FileExistsError:
                holder = self.read()
                if holder is None:
                    continue  # released between our attempt and the read
                reason = self._stale_reason(holder)
                if reason is None:
                    problem = self.holder_problem()
                    if problem is None:  # our own pid, from a lock this process dropped without releasing
                        reason = "it was this process's"
                    else:
                        raise OutputDirLocked(problem)
                logger.warning("taking over the lock of %s: %s", self.output_dir, reason)
                os.remove(self.path)
                continue
            return
        raise OutputDirLocked(f"could not take the lock {self.path}: another run keeps taking it")

    def release(self) -> None:
        count = _HELD.get(self.path, 0)
        if count > 1:
            _HELD[self.path] = count - 1
            return
        if count == 1:
            del _HELD[self.path]
            holder = self.read()
            if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                os.remove(self.path)

    def _release_at_exit(self) -> None:
        while _HELD.get(self.path):
            self.release()

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
