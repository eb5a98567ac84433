"""FSDP2 on 2 CPU processes (gloo): hfkd's student+method module sharded by ``hfkd.training.fsdp``.

Run by tests/test_fsdp.py through tests/helpers/launch.py::run_two_processes:

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/scripts/fsdp_shard.py OUT_DIR

For each method (KD with a sharded teacher, MEAL V2 with its discriminator and an unsharded teacher):

1. the reference: the unsharded module trained in this process alone on the whole batches (no collective);
2. the sharded module, each process on its half of every batch, with Accelerate's gradient clipping;
   after step 3 a sharded checkpoint through Accelerate's own FSDP save functions (those ``save_state``
   calls, DCP), then step 4; the gathered full weights are compared with the reference's, and the student's
   evaluation logits (the student unit called alone) with the reference student's;
3. a module built from other weights, sharded, loaded from the checkpoint: its step 4 must equal 2.'s.

Then FEED (its transforms take the student's feature maps) for one step with the student's units in bf16.
The main process also saves the gathered student with ``save_student`` (an unsharded copy filled with the
full state dict).  Rank 0 writes ``OUT_DIR/result.json``.
"""
import json
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import load_fsdp_model, load_fsdp_optimizer, save_fsdp_model, save_fsdp_optimizer
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh

from hfkd import DistillationArguments, create_backbone, create_method, save_student
from hfkd.methods.base import MethodContext
from hfkd.models.teacher import bind_teacher
from hfkd.training import fsdp
from hfkd.training.optim import create_optimizer
from hfkd.training.trainer import DistillationModule

STEPS, BATCH, CLASSES = 4, 8, 10


def build(method_name: str, seed: int, out_dir: str):
    torch.manual_seed(seed)
    student = create_backbone("test_vit", num_classes=CLASSES, pretrained=False, image_size=32)
    torch.manual_seed(100)  # the same teacher in every build
    teacher = bind_teacher(create_backbone("test_resnet", num_classes=CLASSES, pretrained=False, image_size=32),
                           student.preprocess, CLASSES, None)
    torch.manual_seed(seed + 1)
    settings = dict(num_classes=CLASSES, discriminator_lr=0.02) if method_name == "meal_v2" else {}
    method = create_method(method_name, **settings)
    method.setup(MethodContext(num_classes=CLASSES, num_train_samples=STEPS * BATCH, num_epochs=1,
                               steps_per_epoch=STEPS, student=student, teachers=[teacher]))
    args = DistillationArguments(output_dir=out_dir, optim="momentum", learning_rate=0.05, weight_decay=0.05,
                                 max_grad_norm=0.05)  # small enough that every step is clipped
    return DistillationModule(student, method), teacher, args


def optimizer_for(module, args):
    return create_optimizer(args, module.student, module.method.param_groups(args.learning_rate))


def prepare_like_accelerate(accelerator, plugin, module, optimizer):
    """``fsdp.prepare_sharded`` with the ``Accelerator.prepare`` of an FSDP2 run (its ``_prepare_fsdp2``).

    Accelerate runs FSDP only on GPUs, so on CPU its FSDP2 preparation is called directly, with the plugin on
    its state for the call.  The module comes in sharded, as the trainer passes it: Accelerate must keep it,
    and the optimiser must hold exactly the module's parameters.
    """
    state = accelerator.state
    accelerator.prepare = lambda model: accelerator._prepare_fsdp2(model)[0]
    state.fsdp_plugin = plugin  # MULTI_CPU has none
    try:
        prepared, optimizer = fsdp.prepare_sharded(accelerator, module, optimizer)
    finally:
        state.fsdp_plugin = None
        del accelerator.prepare
    assert prepared is module
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert len({id(p) for p in params}) == len(params) == len(list(module.parameters()))
    assert {id(p) for p in params} == {id(p) for p in module.parameters()}
    return optimizer


def step(accelerator, module, teacher, optimizer, batch, max_grad_norm):
    teacher_outputs = [teacher(batch["pixel_values"], module.method.teacher_request)]
    out = module(batch, teacher_outputs)
    out.loss.backward()
    norm = accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def plain_state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def run(method_name: str, accelerator, mesh, out_dir: str) -> dict:
    rank, world = accelerator.process_index, accelerator.num_processes
    generator = torch.Generator().manual_seed(7)
    batches = [{"pixel_values": torch.randn(BATCH, 3, 32, 32, generator=generator),
                "labels": torch.randint(0, CLASSES, (BATCH,), generator=generator)} for _ in range(STEPS)]
    eval_images = torch.randn(BATCH, 3, 32, 32, generator=generator)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    mine = [{k: v[rows] for k, v in b.items()} for b in batches]

    # 1. the reference, unsharded, whole batches, this process alone
    reference, teacher, args = build(method_name, 0, out_dir)
    optimizer = optimizer_for(reference, args)
    reference_norms = [step(accelerator, reference, teacher, optimizer, b, args.max_grad_norm) for b in batches]
    reference.student.eval()
    with torch.no_grad():
        reference_logits = reference.student(eval_images).logits
    reference_weights = plain_state(reference)

    # 2. sharded: every process trains on its half of each batch
    sharded, teacher, args = build(method_name, 0, out_dir)
    skeleton = fsdp.unsharded_skeleton(sharded.student)
    if method_name == "kd":
        fsdp.shard_teacher(teacher, mesh=mesh)
    fsdp.shard_distillation_module(sharded, mesh=mesh)
    units = sorted({type(m).__name__ for m in sharded.modules() if type(m).__name__.startswith("FSDP")})
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="SHARDED_STATE_DICT")
    optimizer = prepare_like_accelerate(accelerator, plugin, sharded, optimizer_for(sharded, args))
    checkpoint = os.path.join(out_dir, f"checkpoint-{method_name}")
    norms = []
    for n, batch in enumerate(mine):
        if n == STEPS - 1:  # Accelerate's save_state writes these for an FSDP model and its optimiser
            save_fsdp_model(plugin, accelerator, sharded, checkpoint)
            save_fsdp_optimizer(plugin, accelerator, optimizer, sharded, checkpoint)
        norms.append(step(accelerator, sharded, teacher, optimizer, batch, args.max_grad_norm))
    sharded_weights = fsdp.full_state_dict(sharded)
    sharded.student.eval()  # the student unit alone, as evaluate() calls it
    with torch.no_grad():
        logits = accelerator.gather(sharded.student(eval_images[rows]).logits)
    full_student = fsdp.full_state_dict(sharded.student)
    local_shapes = {n: list(p.to_local().shape) for n, p in sharded.student.named_parameters()
                    if n.endswith("patch_embed.proj.weight")}
    global_rows = sharded.student.model.patch_embed.proj.weight.shape[0]
    if method_name == "kd":
        teacher.to(accelerator.device)  # what evaluate_teachers does to every teacher: a sharded one too
        with torch.no_grad():
            teacher(eval_images[rows])

    # 3. other weights, loaded from the sharded checkpoint, then step 4 again
    resumed, teacher, args = build(method_name, 5, out_dir)
    if method_name == "kd":
        fsdp.shard_teacher(teacher, mesh=mesh)
    fsdp.shard_distillation_module(resumed, mesh=mesh)
    resumed_optimizer = prepare_like_accelerate(accelerator, plugin, resumed, optimizer_for(resumed, args))
    load_fsdp_model(plugin, accelerator, resumed, checkpoint)
    load_fsdp_optimizer(plugin, accelerator, resumed_optimizer, resumed, checkpoint)
    step(accelerator, resumed, teacher, resumed_optimizer, mine[-1], args.max_grad_norm)
    resumed_weights = fsdp.full_state_dict(resumed)

    result = {}
    if accelerator.is_main_process:
        saved = os.path.join(out_dir, f"student-{method_name}")
        save_student(fsdp.materialize(skeleton, full_student), saved)
        on_disk = load_file(os.path.join(saved, "model.safetensors"))
        reference_student = {k.removeprefix("model."): v for k, v in reference.student.state_dict().items()}
        result = {
            "units": units,
            "local_shapes": local_shapes, "global_rows": global_rows,
            "weights_vs_reference": max_difference(sharded_weights, reference_weights),
            "method_keys": sorted(k for k in sharded_weights if k.startswith("method.")),
            "logits_vs_reference": (logits - reference_logits).abs().max().item(),
            "grad_norms": norms, "reference_grad_norms": reference_norms,
            "resumed_vs_uninterrupted": max_difference(resumed_weights, sharded_weights),
            "saved_vs_reference": max_difference(on_disk, reference_student),
            "checkpoint_files": sorted(os.listdir(checkpoint)),
        }
    accelerator.wait_for_everyone()
    return result


def run_in_bf16(method_name: str, accelerator, mesh, out_dir: str) -> dict:
    """One step of a method whose modules take the student's feature maps, the student's units in bf16."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    module, teacher, args = build(method_name, 0, out_dir)
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    fsdp.shard_distillation_module(module, mesh=mesh, mp_policy=bf16)
    optimizer = optimizer_for(module, args)
    generator = torch.Generator().manual_seed(11)
    batch = {"pixel_values": torch.randn(4, 3, 32, 32, generator=generator),
             "labels": torch.randint(0, CLASSES, (4,), generator=generator)}
    loss = module(batch, [teacher(batch["pixel_values"], module.method.teacher_request)]).loss
    loss.backward()
    optimizer.step()
    out = module.student(batch["pixel_values"], module.method.student_request)
    return {"loss": float(loss), "output_dtypes": sorted({str(t.dtype) for t in [out.logits, *out.feature_maps.values()]}),
            "weight_dtypes": sorted({str(p.dtype) for p in module.parameters()})}


def main(out_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    mesh = init_device_mesh("cpu", (accelerator.num_processes,))
    results = {name: run(name, accelerator, mesh, out_dir) for name in ("kd", "meal_v2")}
    results["feed_bf16"] = run_in_bf16("feed", accelerator, mesh, out_dir)
    if accelerator.is_main_process:
        with open(os.path.join(out_dir, "result.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
