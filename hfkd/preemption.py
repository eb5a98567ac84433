"""Preemption: a signal asks the run to stop; every process agrees at a step boundary; the caller saves and exits.

What a cluster sends before it takes a node back (SLURM: SIGTERM, or SIGUSR1 with ``--signal``;
Kubernetes: SIGTERM) and what Ctrl-C sends (SIGINT) only set a flag here.  Stopping inside a step,
a collective or a checkpoint write would leave nothing usable; instead the training loop, the
evaluation loop and teacher-cache generation call :meth:`Preemption.requested` at their step
boundaries.  With several processes that call is one all-reduce of one number, so the processes
agree on the same step: none leaves while another waits for it in a collective.

After its checkpoint the run raises :class:`Preempted`, a ``SystemExit`` whose code is
``128 + signal number`` (143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1), the code a shell and
``accelerate launch`` report for a process ended by that signal.  Further signals while the
checkpoint is written are only logged: the save completes (docs/launch.md, "Preemption").
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Dict, Optional

import torch

logger = logging.getLogger(__name__)

#: the signals that ask a run to checkpoint and stop
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


def exit_code(signum: int) -> int:
    """The exit code of a run stopped by ``signum``: 128 + its number, as for a process the signal ended."""
    return 128 + int(signum)


class Preempted(SystemExit):
    """Raised after the checkpoint of a preempted run; exits with :func:`exit_code` without a traceback."""

    def __init__(self, signum: int, checkpoint: Optional[str] = None):
        super().__init__(exit_code(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        where = f"; checkpoint {self.checkpoint}" if self.checkpoint else ""
        return f"stopped by {signal.Signals(self.signum).name} (exit code {self.code}){where}"


class PreemptionRequested(Exception):
    """Raised inside a loop (evaluation) that the processes agreed to leave; the trainer catches it."""


class Preemption:
    """Signal handlers that set a flag, and the processes' agreement on it.

    Use as a context manager around the work: the previous handlers are restored on leaving.
    ``accelerator`` (an ``accelerate.Accelerator`` or ``PartialState``) makes :meth:`requested` agree
    across processes; without one, or with one process, it reads the local flag.
    """

    def __init__(self, accelerator=None, signals=SIGNALS):
        self.accelerator = accelerator
        self.signals = tuple(signals)
        self.signum = 0  # the first signal received (0: none)
        self.agreed = 0  # the signal all processes agreed on (0: none yet)
        self._previous: Dict[int, object] = {}
        self.installed = False

    # -- handlers ---------------------------------------------------------------------------------
    def _handle(self, signum, frame) -> None:
        if self.signum:
            # A second signal (often while the checkpoint is written) must not interrupt the write.
            logger.warning("hfkd: %s received again; still stopping at the next step boundary",
                           signal.Signals(signum).name)
            return
        self.signum = int(signum)
        logger.warning("hfkd: %s received; the run will write a checkpoint at the next step boundary and stop "
                       "(exit code %d)", signal.Signals(signum).name, exit_code(signum))

    def install(self) -> "Preemption":
        if threading.current_thread() is not threading.main_thread():
            # Python delivers signals to the main thread only; there the default handlers stay.
            logger.warning("hfkd: not in the main thread, so a signal cannot be turned into a checkpoint")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        self.installed = True
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        self.installed = False

    def __enter__(self) -> "Preemption":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    # -- agreement --------------------------------------------------------------------------------
    def requested(self) -> bool:
        """Whether any process received a signal; the same answer on every process (one all-reduce).

        Every process must call it at the same points (a step boundary of the same loop).
        """
        if self.agreed:
            return True
        if not self.installed:
            return False
        acc = self.accelerator
        if acc is None or acc.num_processes == 1:
            self.agreed = self.signum
        else:
            flag = torch.tensor([self.signum], dtype=torch.int64, device=acc.device)
            self.agreed = _all_max(flag)
        return bool(self.agreed)

    def stop(self, checkpoint: Optional[str] = None) -> Preempted:
        """The exception that ends the run after its checkpoint (raise it)."""
        return Preempted(self.agreed or self.signum or signal.SIGTERM, checkpoint)


def _all_max(flag: torch.Tensor) -> int:
    # MAX, not SUM: the exit code is that of one signal, the same on every process.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())
    return int(flag.item())
