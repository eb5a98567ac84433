"""Views per decode (``crops_per_image``, FKD's multi-crop) on a data-bound run: cached KD against plain training.

    python benchmarks/views_per_decode.py --rounds 5

ImageNet-size JPEGs (``benchmarks/data_path.py`` makes them: 500 x 375, quality 90), a small student at
``--size`` px (default 128), timm's training augmentation. Arms, each a fresh ``DistillationTrainer`` run of
``--steps`` optimiser steps of ``--batch_size`` samples, data loaded in the main process with one torch thread
(one core, where decoding is the limit):

* plain: supervised training, one view per image load (K = 1);
* cached KD, K: KD from a teacher cache of R = ``--views`` views per image (made once, before the rounds),
  ``crops_per_image=K``: each image load serves K views with their stored teacher outputs, dealt to K consecutive
  batches (``spread_crops``, the default);
* with ``--side_by_side``, also cached KD with K views side by side in one batch (``spread_crops=False``, FKD's
  layout): what dealing the views costs.

Speed is optimiser samples (views) per second, the trainer's ``train()`` call timed whole. The arms run in
interleaved rounds whose order rotates; ratios to plain are taken per round, reported as median [min, max].
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

import torch
from data_path import make_folder

from hfkd import DistillationArguments, DistillationTrainer, cache_teacher_outputs, create_backbone, create_method
from hfkd.data import load_image_dataset
from hfkd.data.augment import AugmentConfig

AUGMENT = AugmentConfig()  # timm's defaults: RandomResizedCrop (0.08, 1), flip, colour jitter 0.4


def _args(out, steps, batch_size, crops, spread=True):
    return DistillationArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size,
                                 crops_per_image=crops, spread_crops=spread, save_strategy="no", eval_strategy="no", logging_steps=1000,
                                 disable_tqdm=True, eval_teachers=False, use_cpu=True, overwrite_output_dir=True)


def _run(student, method, args, train, cache=None) -> float:
    trainer = DistillationTrainer(copy.deepcopy(student), None, create_method(method), args, train_dataset=train,
                                  augment=None if cache else AUGMENT, teacher_cache=cache)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return trainer.state.global_step * args.per_device_train_batch_size / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "hfkd-bench-jpegs"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--student", default="mobilenetv3_small_050")
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--views", type=int, default=4, help="R, views stored per image")
    parser.add_argument("--crops", type=int, nargs="+", default=[4], help="K values to compare with plain")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side_by_side", action="store_true", help="also K views side by side in one batch")
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = make_folder(os.path.join(a.folder, f"{a.images}-500x375-q90"), a.images, 500, 375, 90)
    train = load_image_dataset(folder, validation_fraction=0.0).train
    num_classes = len(set(train["label"]))
    torch.manual_seed(0)
    student = create_backbone(a.student, num_classes=num_classes, pretrained=False, image_size=a.size)
    teacher = create_backbone(a.teacher, num_classes=num_classes, pretrained=False, image_size=a.size)
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        start = time.perf_counter()
        cache_teacher_outputs([teacher], train, cache, student=student, augment=AUGMENT, num_views=a.views, seed=0)
        print(f"{len(train)} JPEGs 500x375 q90, student {a.student} at {a.size} px, teacher {a.teacher}; cache of "
              f"R = {a.views} views made in {time.perf_counter() - start:.0f} s; batch {a.batch_size}, {a.steps} "
              f"steps per arm, 1 thread, load average {os.getloadavg()[0]:.1f}", flush=True)
        arms = {"plain": lambda: _run(student, "supervised", _args(os.path.join(tmp, "plain"), a.steps,
                                                                   a.batch_size, 1), train)}
        for k in a.crops:
            arms[f"cached KD, K = {k}"] = (lambda k=k: _run(
                student, "kd", _args(os.path.join(tmp, f"k{k}"), a.steps, a.batch_size, k), train, cache))
            if a.side_by_side:
                arms[f"cached KD, K = {k}, side by side"] = (lambda k=k: _run(
                    student, "kd", _args(os.path.join(tmp, f"k{k}s"), a.steps, a.batch_size, k, spread=False),
                    train, cache))
        for arm in arms.values():  # warm-up: the first run in a process pays one-off imports (about 0.6 s)
            arm()
        names, rates = list(arms), {n: [] for n in arms}
        for r in range(a.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rates[name].append(arms[name]())
    print(f"\n| arm | optimiser samples/s median [min, max] | / plain, median [min, max] |\n|---|---|---|")
    for name in names:
        ratios = [x / p for x, p in zip(rates[name], rates["plain"])]
        print(f"| {name} | {statistics.median(rates[name]):.1f} [{min(rates[name]):.1f}, {max(rates[name]):.1f}] | "
              f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}] |")


if __name__ == "__main__":
    main()
