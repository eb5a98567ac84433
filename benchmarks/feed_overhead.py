"""Training-step time of parallel FEED vs plain supervised training and vs classic KD, side by side.

    python benchmarks/feed_overhead.py      # the demo networks: cifar_resnet8 <- cifar_resnet20 + cifar_wrn16_2, 32 px
    python benchmarks/feed_overhead.py --image_size 64 --rounds 7 --steps 10

The three set-ups (same student architecture and initial weights, same teachers, same batch) are
timed in interleaved rounds, the order rotating each round, so a slow-down of the machine hits all
of them alike.  A step is what the trainer does: the teachers' forward (no grad), the student's
forward, the method's loss, backward and an optimiser step.  The ratios are computed per round and
reported as median [min, max] over the rounds.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from hfkd import DistillationArguments, create_backbone, create_method
from hfkd.cli.demo import DEMO_STUDENT, DEMO_TEACHERS
from hfkd.methods.base import MethodContext
from hfkd.models import Teacher
from hfkd.training.optim import create_optimizer
from hfkd.training.trainer import DistillationModule


def build(method_name, student, teachers, args, **kwargs):
    method = create_method(method_name, **kwargs)
    used = teachers if method.max_teachers != 0 else []
    method.setup(MethodContext(num_classes=student.num_classes, num_train_samples=1000, num_epochs=1,
                               steps_per_epoch=100, student=student, teachers=used))
    module = DistillationModule(student, method).train()
    optimizer = create_optimizer(args, student, method.param_groups(args.learning_rate))
    return module, optimizer, used


def step(module, optimizer, teachers, batch):
    teacher_outs = [t(batch["pixel_values"], module.method.teacher_request) for t in teachers]
    out = module(batch, teacher_outs)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=DEMO_STUDENT)
    p.add_argument("--teachers", nargs="+", default=list(DEMO_TEACHERS))
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8, help="timed steps per set-up and round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)

    torch.manual_seed(0)
    base = create_backbone(a.student, num_classes=a.num_classes, pretrained=False, image_size=a.image_size)
    teachers = [Teacher(create_backbone(t, num_classes=a.num_classes, pretrained=False, image_size=a.image_size),
                        base.preprocess) for t in a.teachers]
    args = DistillationArguments(output_dir="/tmp/feed_overhead", learning_rate=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.randn(a.batch_size, *base.preprocess.input_size, generator=g),
             "labels": torch.randint(0, a.num_classes, (a.batch_size,), generator=g),
             "index": torch.arange(a.batch_size)}
    setups = {
        "supervised": build("supervised", copy.deepcopy(base), teachers, args),
        "kd": build("kd", copy.deepcopy(base), teachers, args),
        "feed": build("feed", copy.deepcopy(base), teachers, args),
    }
    names = list(setups)
    for name in names:
        for _ in range(a.warmup):
            step(*setups[name], batch)
    times = {n: [] for n in names}  # seconds per step, one value per round
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(a.steps):
                step(*setups[name], batch)
            times[name].append((time.perf_counter() - start) / a.steps)

    def spread(values):
        return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"

    ratios = {
        "feed / supervised": [f / s for f, s in zip(times["feed"], times["supervised"])],
        "feed / kd": [f / k for f, k in zip(times["feed"], times["kd"])],
        "kd / supervised": [k / s for k, s in zip(times["kd"], times["supervised"])],
    }
    feed_method = setups["feed"][0].method
    ntl_params = sum(p.numel() for p in feed_method.transforms.parameters())
    print(f"student {a.student} ({base.num_parameters() / 1e6:.2f}M params), teachers {a.teachers}, "
          f"{a.image_size}px, batch {a.batch_size}, {a.rounds} rounds x {a.steps} steps, "
          f"{torch.get_num_threads()} threads; FEED transforms: {ntl_params / 1e6:.2f}M params (training only)")
    print("| set-up | s/step median [min, max] |\n|---|---|")
    for n in names:
        print(f"| {n} | {spread(times[n])} |")
    print("\n| ratio | median [min, max] over rounds |\n|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {spread(v)} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"config": vars(a), "seconds_per_step": times, "ratios": ratios,
                       "feed_transform_params": ntl_params}, f, indent=2)
    return times, ratios


if __name__ == "__main__":
    main()
