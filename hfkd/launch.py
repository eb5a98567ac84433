"""Processes and devices: what hfkd leaves to Accelerate, and the one launcher default it corrects (docs/launch.md).

Accelerate owns the device, mixed precision and dynamo: ``accelerate launch`` flags, ``accelerate
config`` and ``ACCELERATE_*`` variables decide them.  :func:`create_accelerator` makes the
Accelerator of a training run (and, with no arguments, of teacher-cache generation);
:func:`accelerator_overrides` passes only what the user set in hfkd's arguments, so those still
win when given.  "Which process am I" is answered by Accelerate's ``PartialState``
(:func:`is_main_process`), nowhere else.

``accelerate launch`` sets ``OMP_NUM_THREADS`` to ``--num_cpu_threads_per_process``, 1 by default,
also for a single process on a CPU: training then uses one core of many.  :func:`use_cpu_cores`
gives that one process the machine's cores; several processes per machine keep their one thread
each (2 processes on 2 cores must not oversubscribe).
"""
from __future__ import annotations

import atexit
import logging
import os
from typing import Any, Dict

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, parse_flag_from_env

logger = logging.getLogger(__name__)

#: set to 1 to keep the thread count ``accelerate launch`` chose for a single CPU process
KEEP_THREADS_ENV = "HFKD_KEEP_LAUNCHER_THREADS"


def accelerator_overrides(args) -> Dict[str, Any]:
    """``Accelerator`` keyword arguments for the settings the user gave (``None`` = Accelerate decides)."""
    overrides: Dict[str, Any] = {}
    if args.use_cpu is not None:
        overrides["cpu"] = bool(args.use_cpu)
    if args.mixed_precision is not None:
        overrides["mixed_precision"] = args.mixed_precision
    return overrides


def _launched_by_accelerate() -> bool:
    # Every `accelerate launch` mode exports the dynamo backend to the script; nothing else sets it.
    return "ACCELERATE_DYNAMO_BACKEND" in os.environ


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_cores(accelerator) -> int:
    """Undo ``accelerate launch``'s one-thread default for a lone CPU process; returns the thread count."""
    threads = torch.get_num_threads()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    cores = available_cores()
    if (accelerator.device.type != "cpu" or local_processes != 1 or not _launched_by_accelerate()
            or os.environ.get("OMP_NUM_THREADS") != "1" or threads != 1 or cores < 2):
        return threads
    if os.environ.get(KEEP_THREADS_ENV, "").lower() in ("1", "true", "yes"):
        logger.warning("hfkd: training on 1 CPU thread of %d cores (OMP_NUM_THREADS=1 from accelerate launch, "
                       "kept because %s is set)", cores, KEEP_THREADS_ENV)
        return threads
    torch.set_num_threads(cores)
    message = (f"hfkd: `accelerate launch` set OMP_NUM_THREADS=1 for this single CPU process; training on all "
               f"{cores} cores instead (torch.set_num_threads({cores})). Choose another count with "
               f"`accelerate launch --num_cpu_threads_per_process N`, or keep 1 thread with {KEEP_THREADS_ENV}=1.")
    if accelerator.is_main_process:
        print(message, flush=True)
    return cores


def check_launch(accelerator) -> None:
    """Refuse N launched processes that Accelerate runs as one each: every process would train alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"WORLD_SIZE={world} but Accelerate runs a single process, so each process would train alone. On a CPU "
            "launch with ACCELERATE_USE_CPU=1 (accelerate launch --multi_gpu ... or torchrun), or pass use_cpu=True."
        )


def check_fsdp(accelerator) -> None:
    """Refuse a launch that asked for FSDP when Accelerate prepared something else.

    ``accelerate launch --use_fsdp`` (or an ``accelerate config`` with FSDP) exports ``ACCELERATE_USE_FSDP``;
    on CPU processes Accelerate then prepares plain DDP (``MULTI_CPU``) without a word, so a student sized for
    sharding would be replicated whole on every process.  Saying so here is cheaper than that surprise.
    """
    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return
    chosen = accelerator.distributed_type
    if chosen == DistributedType.FSDP:
        return
    name = getattr(chosen, "value", str(chosen))
    raise RuntimeError(
        f"FSDP was asked for (ACCELERATE_USE_FSDP is set, by `accelerate launch --use_fsdp` or an accelerate "
        f"config), but Accelerate runs {name} on {accelerator.num_processes} process(es), so each process would "
        "hold the whole student instead of a shard. Accelerate shards with FSDP only on GPUs (or other "
        "accelerators), not on CPU processes. Launch on GPUs, or drop --use_fsdp (and the FSDP settings of your "
        "accelerate config) to train with a full copy of the student per process (docs/launch.md, \"FSDP\")."
    )


def _destroy_process_group() -> None:
    # Left to interpreter teardown, gloo's worker threads can be destroyed while still joinable and the
    # process aborts ("terminate called without an active exception") after a run that succeeded.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def create_accelerator(args=None) -> Accelerator:
    """The run's ``Accelerator``: device and precision from Accelerate unless set in ``args``.

    ``args`` is a :class:`hfkd.training.DistillationArguments` (overrides, gradient accumulation, trackers,
    the output folder); ``None`` gives Accelerate's own choices, for work that does not train
    (teacher-cache generation).
    """
    kwargs: Dict[str, Any] = {}
    if args is not None:
        kwargs = dict(**accelerator_overrides(args), gradient_accumulation_steps=args.gradient_accumulation_steps,
                      log_with=args.report_to or None, project_dir=args.output_dir,
                      kwargs_handlers=[DistributedDataParallelKwargs(
                          find_unused_parameters=args.ddp_find_unused_parameters)])
    accelerator = Accelerator(
        **kwargs,
        # Exact mid-epoch resume needs a seedable sampler (docs/launch.md, "Exact resume").
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,
    )
    check_launch(accelerator)
    if args is not None:  # only training prepares a model that FSDP would shard
        check_fsdp(accelerator)
    use_cpu_cores(accelerator)
    if accelerator.num_processes > 1:
        atexit.unregister(_destroy_process_group)
        atexit.register(_destroy_process_group)
    return accelerator


def _state() -> PartialState:
    # The Accelerator's own reading of the launch when it has not started yet: ACCELERATE_USE_CPU asks for
    # CPU processes (gloo), as AcceleratorState does.  Once a run's Accelerator exists, its state is shared.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    """Whether this is the main process of the launch (``accelerate launch``, torchrun, SLURM or none)."""
    return _state().is_main_process


def device_type() -> str:
    """The device type the processes of this launch run on (``cuda``, ``cpu``, ...), as Accelerate reads the launch."""
    return _state().device.type


def num_processes() -> int:
    """How many processes the launcher started (1 without one)."""
    return _state().num_processes
