"""Streamed Parquet shards against the same images as a map-style split: training throughput.

    python benchmarks/streaming.py --rounds 5

ImageNet-size JPEGs (``benchmarks/data_path.py`` makes them: 500 x 375, quality 90), stored twice, once
(made before the rounds):

* map-style: ``save_to_disk`` then ``load_from_disk`` (Arrow, memory-mapped), hfkd's usual path;
* streamed: the same rows written as ``--shards`` Parquet files, read with ``load_stream`` (hfkd's keyed Parquet
  stream: rows read a batch at a time, images decoded in the training process, augmentation seeded by key,
  samples shuffled in blocks of ``--buffer``).

Each arm is a fresh ``DistillationTrainer`` run (supervised, a small student at ``--size`` px, timm's training
augmentation) of ``--steps`` optimiser steps of ``--batch_size`` samples, data read in the main process with one
torch thread (one core, where decoding is the limit; ``--workers N``: N data workers in both arms); ``train()``
is timed whole.  The arms run in interleaved
rounds whose order alternates; the ratio streamed / map-style is taken per round and reported as median
[min, max].
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

from hfkd import DistillationArguments, DistillationTrainer, create_backbone
from hfkd.data import load_image_dataset
from hfkd.data.augment import AugmentConfig
from hfkd.data.stream import load_stream

AUGMENT = AugmentConfig()  # timm's defaults: RandomResizedCrop (0.08, 1), flip, colour jitter 0.4


def _run(student, train, out, a) -> float:
    args = DistillationArguments(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch_size,
                                 save_strategy="no", eval_strategy="no", logging_steps=1000, disable_tqdm=True,
                                 eval_teachers=False, use_cpu=True, overwrite_output_dir=True,
                                 stream_shuffle_buffer=a.buffer, dataloader_num_workers=a.workers)
    trainer = DistillationTrainer(copy.deepcopy(student), None, "supervised", args, train_dataset=train,
                                  augment=AUGMENT)
    start = time.perf_counter()
    trainer.train()
    return trainer.state.global_step * a.batch_size / (time.perf_counter() - start)


def main(argv=None):
    from datasets import load_from_disk

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "hfkd-bench-jpegs"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--buffer", type=int, default=1000)
    parser.add_argument("--student", default="mobilenetv3_small_050")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="dataloader_num_workers of both arms")
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = make_folder(os.path.join(a.folder, f"{a.images}-500x375-q90"), a.images, 500, 375, 90)
    train = load_image_dataset(folder, validation_fraction=0.0).train
    num_classes = len(train.features["label"].names)
    torch.manual_seed(0)
    student = create_backbone(a.student, num_classes=num_classes, pretrained=False, image_size=a.size)
    with tempfile.TemporaryDirectory() as tmp:
        train.save_to_disk(os.path.join(tmp, "arrow"))
        map_style = load_from_disk(os.path.join(tmp, "arrow"))
        os.makedirs(os.path.join(tmp, "shards"))
        per_shard = -(-len(train) // a.shards)
        for s in range(a.shards):
            part = train.select(range(s * per_shard, min(len(train), (s + 1) * per_shard)))
            part.to_parquet(os.path.join(tmp, "shards", f"train-{s:05d}-of-{a.shards:05d}.parquet"))
        streamed = load_stream(os.path.join(tmp, "shards"))[0]["train"]
        print(f"{len(train)} JPEGs 500x375 q90 ({a.shards} Parquet shards), student {a.student} at {a.size} px, "
              f"batch {a.batch_size}, {a.steps} steps per arm, shuffle blocks of {a.buffer}, 1 thread, {a.workers} "
              f"worker(s), load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        arms = {"map-style (load_from_disk)": lambda: _run(student, map_style, os.path.join(tmp, "map"), a),
                "streamed (Parquet shards)": lambda: _run(student, streamed, os.path.join(tmp, "stream"), a)}
        for arm in arms.values():  # warm-up: the first run in a process pays one-off imports
            arm()
        names, rates = list(arms), {n: [] for n in arms}
        for r in range(a.rounds):
            for name in names[r % 2:] + names[:r % 2]:
                rates[name].append(arms[name]())
    base = names[0]
    print("\n| arm | optimiser samples/s median [min, max] | / map-style, median [min, max] |\n|---|---|---|")
    for name in names:
        ratios = [x / p for x, p in zip(rates[name], rates[base])]
        print(f"| {name} | {statistics.median(rates[name]):.1f} [{min(rates[name]):.1f}, {max(rates[name]):.1f}] | "
              f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}] |")


if __name__ == "__main__":
    main()
