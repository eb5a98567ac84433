"""Per-step time of BAKE against plain supervised training, measured side by side.

    python benchmarks/bake_overhead.py                            # demo student, batch 128 at 32 px
    python benchmarks/bake_overhead.py --model resnet18 --batch_size 64 --image_size 224 --repeats 20

The same student (two copies of one initialisation), the same batches, the same optimiser;
each repetition times one supervised step and one BAKE step on the same batch, in alternating
order, so that load on the machine hits both alike.  A step is forward + loss + backward +
optimiser step.  Reported: the median of the per-repetition ratios BAKE / supervised and its
interquartile range, plus the median step times.  BAKE's extra work is a B x B affinity and
one B x B solve: its share shrinks as the network grows.
"""
import argparse
import copy
import statistics
import time

import torch

from hfkd import create_backbone, create_method
from hfkd.cli.demo import DEMO_STUDENT


def _step(model, method, optimizer, x, y, index):
    out = model(x, method.student_request)
    loss = method.compute_loss({"pixel_values": x, "labels": y, "index": index}, out, []).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEMO_STUDENT)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    base = create_backbone(args.model, num_classes=args.num_classes, pretrained=False, image_size=args.image_size)
    models = {"supervised": base, "bake": copy.deepcopy(base)}
    methods = {"supervised": create_method("supervised"), "bake": create_method("bake")}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    for m in models.values():
        m.train()
    g = torch.Generator().manual_seed(0)
    times = {"supervised": [], "bake": []}
    for rep in range(args.warmup + args.repeats):
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
        y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g)
        index = torch.arange(args.batch_size)
        order = ("supervised", "bake") if rep % 2 == 0 else ("bake", "supervised")
        for name in order:
            start = time.perf_counter()
            _step(models[name], methods[name], optimizers[name], x, y, index)
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - start)
    ratios = [b / s for b, s in zip(times["bake"], times["supervised"])]
    lo, med, hi = _quartiles(ratios)
    print(f"{args.model} batch {args.batch_size} at {args.image_size}px, {args.repeats} interleaved repetitions, "
          f"{torch.get_num_threads()} threads")
    print(f"supervised step: median {1e3 * statistics.median(times['supervised']):.1f} ms")
    print(f"BAKE step:       median {1e3 * statistics.median(times['bake']):.1f} ms")
    print(f"BAKE / supervised: median {med:.3f} (IQR {lo:.3f}-{hi:.3f}) -> overhead {100 * (med - 1):+.1f} %")
    return {"ratio_median": med, "ratio_q1": lo, "ratio_q3": hi, "times": times}


if __name__ == "__main__":
    main()
