"""FSDP2 for students too large for DDP: what is sharded, how, and what a sharded run refuses (docs/launch.md).

When Accelerate runs FSDP (``accelerate launch --use_fsdp --fsdp_version 2`` on GPUs), the trainer shards the
student and the method's own modules with :func:`shard_distillation_module` before the optimiser is built on
the shards, and Accelerate takes the module already sharded (:func:`prepare_sharded`).  The layout:

- every block of the student (a transformers model's ``_no_split_modules`` classes, else the elements of a
  ``Sequential`` / ``ModuleList`` that hold layers: ResNet's residual blocks, ViT's blocks), or the
  classes Accelerate's ``fsdp_transformer_layer_cls_to_wrap`` names when given, then the student itself, each
  a unit in Accelerate's mixed-precision policy (the student's outputs in float32).  The student is a unit of its
  own so that evaluation can call it alone;
- the root: the method's modules (a discriminator, projectors) and anything else, in float32 (the methods
  run their small modules outside autocast, on float32 inputs).

Teachers stay frozen, in eval mode and unsharded (moved to the device), unless ``shard_teachers``: then
each is sharded for inference with ``fully_shard`` (:func:`shard_teacher`).  Checkpoints go through
Accelerate's ``save_state`` / ``load_state`` with its sharded state dict (DCP: each process writes its
shard); the final student is gathered into a full state dict (:func:`full_state_dict`) and loaded into an
unsharded copy (:func:`unsharded_skeleton`, made on the meta device, so it costs no memory until then).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from types import SimpleNamespace
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from ..launch import check_fsdp, device_type, num_processes

logger = logging.getLogger(__name__)


def fsdp_plugin(accelerator):
    """Accelerate's FSDP plugin when this run is sharded by Accelerate, else ``None``."""
    from accelerate.utils import DistributedType

    if getattr(accelerator, "distributed_type", None) != DistributedType.FSDP:
        return None
    return accelerator.state.fsdp_plugin


_SHARD_TEACHERS_NEEDS_FSDP = (
    "shard_teachers shards the teachers with FSDP, which needs an FSDP launch on GPUs (`accelerate launch --use_fsdp "
    "--fsdp_version 2`); this run has none: drop --shard_teachers, or launch with FSDP (docs/launch.md, \"FSDP\")")


def plugin_problems(plugin, args) -> List[str]:
    """Why a run with these arguments cannot train with this FSDP plugin, one reason per item."""
    problems = []
    if plugin.fsdp_version != 2:
        problems.append(f"FSDP version {plugin.fsdp_version}: hfkd shards with FSDP2 only; launch with "
                        "`--fsdp_version 2` (or `fsdp_version: 2` in the accelerate config)")
    if args.model_ema:
        problems.append("model_ema keeps a full copy of the student on every process and updates it from the whole "
                        "student after each step, which is what FSDP avoids (it would gather every weight at every "
                        "step); train without model_ema under FSDP")
    if args.torch_compile:
        problems.append("torch_compile compiles the student before FSDP shards it, an order hfkd has not tested with "
                        "FSDP2; train without torch_compile under FSDP")
    if plugin.activation_checkpointing:
        problems.append("fsdp_activation_checkpointing: hfkd shards the student itself and does not apply "
                        "activation checkpointing; set fsdp_activation_checkpointing false")
    if plugin.cpu_ram_efficient_loading:
        problems.append("fsdp_cpu_ram_efficient_loading (on by default in `accelerate launch`) makes transformers load "
                        "weights on the first process only and leave the others empty, but hfkd builds the student and "
                        "the teachers whole on every process before sharding; pass `--fsdp_cpu_ram_efficient_loading "
                        "false` to accelerate launch (or `fsdp_cpu_ram_efficient_loading: false` in its config)")
    if plugin.ignored_modules is not None:
        problems.append("fsdp_ignored_modules is not supported by hfkd's sharding; remove it from the FSDP settings")
    return problems


def fsdp_problems(accelerator, args) -> List[str]:
    """Why this run cannot train as launched, one reason per item (empty: it can, sharded or not)."""
    plugin = fsdp_plugin(accelerator)
    if plugin is None:
        return [_SHARD_TEACHERS_NEEDS_FSDP] if args.shard_teachers else []
    return plugin_problems(plugin, args)


def launch_problems(args) -> List[str]:
    """:func:`fsdp_problems` from the launcher's settings alone (``ACCELERATE_USE_FSDP``, ``FSDP_*``), before any
    Accelerator exists: what the command line's checks report before a run starts."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, parse_flag_from_env

    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return [_SHARD_TEACHERS_NEEDS_FSDP] if args.shard_teachers else []
    problems = []
    if device_type() == "cpu":  # Accelerate runs DDP there instead: the message of launch.check_fsdp
        try:
            check_fsdp(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=num_processes()))
        except RuntimeError as e:
            problems.append(str(e))
    return problems + plugin_problems(FullyShardedDataParallelPlugin(), args)


def check_fsdp_run(accelerator, args) -> None:
    """Refuse, before anything is built, a sharded run hfkd cannot train; log what a sharded run will do."""
    problems = fsdp_problems(accelerator, args)
    if problems:
        raise ValueError("; ".join(problems))
    plugin = fsdp_plugin(accelerator)
    if plugin is None:
        return
    from torch.distributed.fsdp import StateDictType

    if plugin.state_dict_type != StateDictType.SHARDED_STATE_DICT:
        # A full state dict per checkpoint gathers the whole student and optimiser on one process, the memory
        # that FSDP exists to spare; the final student is saved whole anyway (save_model).
        logger.warning("FSDP: checkpoints are written sharded (SHARDED_STATE_DICT, one file per process) instead "
                       "of %s; the saved student is whole", plugin.state_dict_type.name)
        plugin.state_dict_config = plugin.optim_state_dict_config = None  # the full ones' settings would stay
        plugin.set_state_dict_type("SHARDED_STATE_DICT")


# -- what becomes a unit ---------------------------------------------------------------------------------
def _classes_named(module: nn.Module, names: Iterable[str]) -> tuple:
    wanted = set(names)
    return tuple({type(m) for m in module.modules() if type(m).__name__ in wanted})


def _container_blocks(module: nn.Module) -> List[nn.Module]:
    """The blocks of a network: elements of a ``Sequential`` / ``ModuleList`` that hold layers of their own.

    ResNet's residual blocks, ViT's and ConvNeXt's blocks (and ConvNeXt's stages); not the layers of a stem or
    of a shortcut (single layers), nor a container in a container (its own elements are looked at instead).
    """
    blocks = []
    for container in module.modules():
        if isinstance(container, (nn.Sequential, nn.ModuleList)):
            blocks.extend(c for c in container.children()
                          if not isinstance(c, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
                          and any(True for _ in c.children()) and any(True for _ in c.parameters()))
    return blocks


def student_blocks(student: nn.Module, class_names: Optional[Sequence[str]] = None) -> List[nn.Module]:
    """The student's modules that become FSDP units of their own, innermost first.

    ``class_names`` (Accelerate's ``fsdp_transformer_layer_cls_to_wrap``) wins; else a transformers model's
    ``_no_split_modules``; else the repeated blocks (:func:`_container_blocks`).
    """
    model = getattr(student, "model", student)
    names = class_names or getattr(model, "_no_split_modules", None)
    if names:
        classes = _classes_named(model, names)
        if class_names and not classes:
            raise ValueError(f"fsdp_transformer_layer_cls_to_wrap names {list(class_names)}, but the student "
                             f"{type(model).__name__} has no module of those classes")
        chosen = {m for m in model.modules() if isinstance(m, classes)} if classes else set(_container_blocks(model))
    else:
        chosen = set(_container_blocks(model))
    chosen.discard(model)
    # named_modules lists a parent before its children: reversed, children come first (FSDP2 shards bottom-up).
    return [m for m in reversed(list(model.modules())) if m in chosen]


def _plugin_class_names(plugin) -> Optional[Sequence[str]]:
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    policy = getattr(plugin, "auto_wrap_policy", None)
    policy = getattr(policy, "func", policy)
    if policy is transformer_auto_wrap_policy:
        return plugin.transformer_cls_names_to_wrap or None
    return None


# -- sharding --------------------------------------------------------------------------------------------
def shard_distillation_module(module: nn.Module, *, mesh=None, mp_policy=None, offload_policy=None,
                              reshard_after_forward: bool = True, block_class_names: Optional[Sequence[str]] = None):
    """Shard a :class:`~hfkd.training.trainer.DistillationModule` in place with torch's ``fully_shard``; returns it.

    ``mp_policy`` (a ``MixedPrecisionPolicy``) applies to the student's units, whose outputs are float32; the root
    (the method's modules) keeps float32.  Call after the method's ``setup`` (its modules exist) and before the optimiser is built.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    common = dict(mesh=mesh, offload_policy=offload_policy or OffloadPolicy())
    block_policy = mp_policy or MixedPrecisionPolicy()
    for block in student_blocks(module.student, block_class_names):
        fully_shard(block, mp_policy=block_policy, reshard_after_forward=reshard_after_forward, **common)
    # The student's outputs leave it in float32: the method's float32 modules take them (FEED's transforms
    # failed on bf16 feature maps), as the losses do.
    student_policy = dataclasses.replace(block_policy, output_dtype=torch.float32) \
        if block_policy.param_dtype not in (None, torch.float32) else block_policy
    fully_shard(module.student, mp_policy=student_policy, reshard_after_forward=reshard_after_forward, **common)
    fully_shard(module, mp_policy=MixedPrecisionPolicy(), **common)
    return module


def shard_teacher(teacher: nn.Module, *, mesh=None, offload_policy=None) -> nn.Module:
    """Shard a frozen teacher for inference: its blocks and itself, each gathered only for its forward."""
    from torch.distributed.fsdp import OffloadPolicy, fully_shard

    teacher.requires_grad_(False)
    teacher.eval()
    common = dict(mesh=mesh, offload_policy=offload_policy or OffloadPolicy(), reshard_after_forward=True)
    for block in student_blocks(getattr(teacher, "backbone", teacher)):
        fully_shard(block, **common)
    fully_shard(teacher, **common)
    return teacher


def accelerator_mesh(accelerator):
    """The mesh Accelerate shards on (``None``: torch's default mesh over every process)."""
    mesh = getattr(accelerator, "torch_device_mesh", None)
    if mesh is None:
        return None
    return mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)]


def shard_with_accelerator(accelerator, module: nn.Module, teachers: Sequence[nn.Module], shard_teachers: bool):
    """Shard ``module`` (and the teachers when asked) with the settings of Accelerate's FSDP plugin."""
    plugin = fsdp_plugin(accelerator)
    mesh = accelerator_mesh(accelerator)
    if shard_teachers:
        for teacher in teachers:
            shard_teacher(teacher, mesh=mesh, offload_policy=plugin.cpu_offload)
    return shard_distillation_module(module, mesh=mesh, mp_policy=plugin.mixed_precision_policy,
                                     offload_policy=plugin.cpu_offload,
                                     reshard_after_forward=plugin.reshard_after_forward,
                                     block_class_names=_plugin_class_names(plugin))


def prepare_sharded(accelerator, module: nn.Module, optimizer):
    """``Accelerator.prepare`` for a module already sharded: the module alone, then its optimiser.

    Prepared together, Accelerate re-maps every optimiser parameter to the module's parameter at the same data
    address; a process whose shard of a small parameter is empty (ViT's class token has 1 row: none for the
    second of 2 processes) holds several parameters at one address, and its optimiser got the wrong ones
    (measured on 2 CPU processes).  Built on the sharded parameters, the optimiser needs no re-mapping.
    """
    model = accelerator.prepare(module)
    return model, accelerator.prepare_optimizer(optimizer)


# -- the final student -----------------------------------------------------------------------------------
def unsharded_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and persistent buffers are on the meta device (no memory).

    Non-persistent buffers (not in a state dict) are copied to the CPU, where :func:`full_state_dict` puts the
    rest; :func:`materialize` fills that in.
    """
    persistent = set(module.state_dict(keep_vars=True).keys())
    memo: Dict[int, torch.Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        memo.setdefault(id(param), nn.Parameter(torch.empty_like(param, device="meta"),
                                                requires_grad=param.requires_grad))
    for name, buffer in module.named_buffers(remove_duplicate=False):
        if id(buffer) not in memo:
            memo[id(buffer)] = (torch.empty_like(buffer, device="meta") if name in persistent
                                else buffer.detach().to("cpu", copy=True))
    return copy.deepcopy(module, memo)


def full_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The whole state dict of a sharded module on the CPU of the main process (empty elsewhere).

    Every process must call it: the shards are gathered.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def materialize(skeleton: nn.Module, state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    """``skeleton`` holding ``state_dict``'s tensors (every key must match)."""
    skeleton.load_state_dict(state_dict, strict=True, assign=True)
    return skeleton
