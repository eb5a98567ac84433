"""What one process holds of the training state, sharded (FSDP2) against whole (as DDP holds it).

    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 benchmarks/fsdp_memory.py [--student vit_small_patch16_224]

2 CPU processes (gloo). The student (random weights: nothing is downloaded) and MEAL V2 with its discriminator,
a frozen test teacher; AdamW. One KD step each way:

* whole: the DistillationModule as every DDP process keeps it;
* sharded: the same module sharded by ``hfkd.training.fsdp.shard_distillation_module``.

Counted on each process after the step: the bytes of its weights, of its gradients (before ``zero_grad``) and of
its optimiser state, i.e. the tensors it holds between steps; not activations, nor the all-gathered block that
exists while that block runs. Reported per process, with the ratio sharded / whole (the ideal is 1 / processes).
No time is reported: 2 gloo processes on a shared CPU say nothing about the speed of NCCL on GPUs.
"""
from __future__ import annotations

import argparse
import json

import torch
from accelerate import Accelerator
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from hfkd import DistillationArguments, create_backbone, create_method
from hfkd.methods.base import MethodContext
from hfkd.models.teacher import bind_teacher
from hfkd.training import fsdp
from hfkd.training.optim import create_optimizer
from hfkd.training.trainer import DistillationModule


def local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def held(module, optimizer) -> dict:
    params = list(module.parameters())
    state = [v for per_param in optimizer.state.values() for v in per_param.values() if torch.is_tensor(v)]
    return {"weights": local_bytes(params), "gradients": local_bytes(p.grad for p in params),
            "optimiser": local_bytes(state)}


def one_step(module, teacher, optimizer, batch) -> None:
    out = module(batch, [teacher(batch["pixel_values"], module.method.teacher_request)])
    out.loss.backward()
    optimizer.step()


def build(student_name: str, image_size: int):
    torch.manual_seed(0)
    student = create_backbone(student_name, num_classes=100, pretrained=False, image_size=image_size)
    teacher = bind_teacher(create_backbone("test_resnet", num_classes=100, pretrained=False, image_size=image_size),
                           student.preprocess, 100, None)
    method = create_method("meal_v2", num_classes=100)
    method.setup(MethodContext(num_classes=100, num_train_samples=64, num_epochs=1, steps_per_epoch=1,
                               student=student, teachers=[teacher]))
    args = DistillationArguments(output_dir="unused", optim="adamw", learning_rate=1e-3)
    module = DistillationModule(student, method)
    return module, teacher, args


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", default="vit_small_patch16_224")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=4, help="per process")
    options = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    mesh = init_device_mesh("cpu", (accelerator.num_processes,))
    batch = {"pixel_values": torch.randn(options.batch_size, 3, options.image_size, options.image_size),
             "labels": torch.randint(0, 100, (options.batch_size,))}
    results = {}
    for arm in ("whole", "sharded"):
        module, teacher, args = build(options.student, options.image_size)
        if arm == "sharded":
            fsdp.shard_distillation_module(module, mesh=mesh)
        optimizer = create_optimizer(args, module.student, module.method.param_groups(args.learning_rate))
        one_step(module, teacher, optimizer, batch)
        results[arm] = held(module, optimizer)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        total = {arm: sum(r.values()) for arm, r in results.items()}
        print(json.dumps({"student": options.student, "processes": accelerator.num_processes,
                          "mib_per_process": {arm: {k: round(v / 2**20, 1) for k, v in r.items()}
                                              for arm, r in results.items()},
                          "ratio_sharded_to_whole": round(total["sharded"] / total["whole"], 3)}, indent=1))


if __name__ == "__main__":
    main()
