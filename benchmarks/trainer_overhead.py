"""hfkd's DistillationTrainer against a minimal hand-written loop doing the same math, interleaved.

    python benchmarks/trainer_overhead.py                       # KD and supervised, 5 rounds x one epoch
    python benchmarks/trainer_overhead.py --rounds 7 --steps 20
    python benchmarks/trainer_overhead.py --options             # also torch_compile, channels_last, EMA, ...
    python benchmarks/trainer_overhead.py --profile hfkd-kd     # cProfile one arm, print the top functions
    python benchmarks/trainer_overhead.py --data_path           # per-sample cost of the data paths

Both sides train mobilenetv3_small_050 (--student; 32 px, random init) on the embedded digits'
train split through the same timm train transform, batch 64, AdamW (lr 2e-3, no weight decay), a
cosine schedule, gradient clipping at 1.0, and either KD (one resnet18 teacher, T = 4, alpha = 0.9)
or plain cross-entropy.  Each arm starts from the same weights and is timed from the call that
trains until the last optimiser step, so building the data loader and the optimiser is counted on
both sides; the models are built outside the timing.

The hand loop is what a user writes without hfkd: ``Dataset.with_transform`` over the timm
transform, a shuffled ``DataLoader``, ``torch.optim.AdamW``, ``clip_grad_norm_``.  It does not seed
augmentation per sample (arm ``hand-*``); the ``hand-seeded-*`` arms also seed every sample from
(seed, epoch, index) the way hfkd does, which is the cost of exactly resumable augmentation.

Rounds are interleaved, the arm order rotating each round, so load from other processes on the
machine hits every arm alike; ratios are computed per round and reported as median [min, max].
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, create_method
from hfkd.data import load_image_dataset
from hfkd.data.transforms import create_image_transform
from hfkd.cli.demo import DEMO_AUGMENT

SEED = 42
LR = 2e-3
# name -> DistillationArguments overrides of the option arms (each compared with plain hfkd KD)
OPTIONS = {
    "channels_last": dict(channels_last=True),
    "ema": dict(model_ema=True),
    "teacher_bf16": dict(teacher_dtype="bf16"),
    "workers2": dict(dataloader_num_workers=2),
    "compile": dict(torch_compile=True),
}


def hand_loop(student, teacher, train, transform, steps, batch_size, seeded, temperature=4.0, alpha=0.9):
    """The loop a user writes by hand; returns the last loss."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    if seeded:
        from hfkd.data.transforms import seeded_batch

    def batch_transform(rows):
        images = [im.convert("RGB") for im in rows["image"]]
        if seeded:  # the same (seed, epoch, index) seeding as hfkd, indices taken from the rows
            pixels = seeded_batch(transform, images, SEED, 0, rows["__index__"])
        else:
            pixels = [transform(im) for im in images]
        return {"pixel_values": pixels, "label": rows["label"]}

    data = train.with_transform(batch_transform)  # seeded: ``train`` has an "__index__" column
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.0)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=steps)
    student.train()
    step, loss = 0, None
    while step < steps:
        for batch in loader:
            x, y = batch["pixel_values"], batch["label"]
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                soft = F.kl_div(F.log_softmax(logits / temperature, -1), F.softmax(t_logits / temperature, -1),
                                reduction="batchmean") * temperature**2
                loss = alpha * soft + (1 - alpha) * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if step == steps:
                break
    return float(loss)


def _before_getitems(self, indices):
    """hfkd's data path before this benchmark existed: one row read and one seed/restore per sample."""
    from hfkd.data.transforms import sample_seed

    out = []
    for index in indices:
        row = self.dataset[int(index)]
        image = self._image(row[self.image_column])
        with _reference_seeded_rng(sample_seed(self.seed, self.epoch, int(index))):
            pixels = self.transform(image)
        out.append({"pixel_values": pixels, "labels": int(row[self.label_column]), "index": int(index)})
    return out


@contextlib.contextmanager
def _reference_seeded_rng(seed):
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _before_data_path():
    from hfkd.data.transforms import ImageClassificationDataset

    current = ImageClassificationDataset.__getitems__
    ImageClassificationDataset.__getitems__ = _before_getitems
    try:
        yield
    finally:
        ImageClassificationDataset.__getitems__ = current


def hfkd_run(student, teacher, data, steps, batch_size, accelerator, out_dir, before=False, **overrides):
    args = DistillationArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=LR,
        weight_decay=0.0, lr_scheduler_type="cosine", max_grad_norm=1.0, seed=SEED, save_strategy="no",
        eval_strategy="no", eval_teachers=False, logging_steps=10, disable_tqdm=True, **overrides)
    method = create_method("kd", temperature=4.0, alpha=0.9) if teacher is not None else "supervised"
    trainer = DistillationTrainer(student, [teacher] if teacher is not None else [], method=method, args=args,
                                  train_dataset=data.train, augment=DEMO_AUGMENT, accelerator=accelerator)
    with _before_data_path() if before else contextlib.nullcontext():
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="mobilenetv3_small_050")
    p.add_argument("--teacher", default="resnet18")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=23,
                   help="optimiser steps per arm and round (23 = one epoch of the digits at batch 64)")
    p.add_argument("--options", nargs="*", default=None,
                   help=f"also time these hfkd KD options (no value: all of {list(OPTIONS)})")
    p.add_argument("--before", action="store_true",
                   help="also time hfkd with its previous data path (per-row reads, seed/restore per sample)")
    p.add_argument("--only_options", action="store_true", help="with --options: time hfkd-kd, hand-kd and the options only")
    p.add_argument("--no_seeded", action="store_true", help="skip the hand-seeded arms")
    p.add_argument("--profile", default=None, help="cProfile one arm (e.g. hfkd-kd, hand-kd) instead of timing")
    p.add_argument("--data_path", action="store_true", help="only time the data paths per sample")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's); 1 is steadier on a machine shared with other jobs")
    p.add_argument("--json", default=None, help="also write the per-round timings here")
    a = p.parse_args(argv)

    from hfkd.launch import create_accelerator

    if a.threads:
        torch.set_num_threads(a.threads)

    data = load_image_dataset()
    torch.manual_seed(0)
    base = create_backbone(a.student, num_classes=data.num_classes, pretrained=False, image_size=a.image_size,
                           label_names=data.label_names)
    torch.manual_seed(1)
    teacher = create_backbone(a.teacher, num_classes=data.num_classes, pretrained=False, image_size=a.image_size,
                              label_names=data.label_names).eval()
    transform = create_image_transform(base.preprocess, True, DEMO_AUGMENT)
    accelerator = create_accelerator(DistillationArguments(output_dir=tempfile.mkdtemp(), seed=SEED))
    out_dir = tempfile.mkdtemp(prefix="trainer_overhead-")

    indexed = data.train.add_column("__index__", list(range(len(data.train))))  # built outside the timing

    def arm(name):
        kd = name.endswith("-kd")
        if name.startswith("hand"):
            seeded = name.startswith("hand-seeded")
            return lambda: _timed(hand_loop, copy.deepcopy(base.model), copy.deepcopy(teacher.model) if kd else None,
                                  indexed if seeded else data.train, transform, a.steps, a.batch_size, seeded)
        option = name[:-3].split("+", 1)[1] if "+" in name else None
        overrides = OPTIONS[option] if option else {}
        return lambda: hfkd_run(copy.deepcopy(base), copy.deepcopy(teacher) if kd else None, data, a.steps,
                                a.batch_size, accelerator, out_dir, before=name.startswith("hfkd-before"),
                                **overrides)

    names = ["hfkd-kd", "hand-kd"] if a.only_options else ["hfkd-kd", "hand-kd", "hfkd-sup", "hand-sup"]
    if a.before:
        names += ["hfkd-before-kd", "hfkd-before-sup"]
    if not a.no_seeded and not a.only_options:
        names += ["hand-seeded-kd", "hand-seeded-sup"]
    if a.options is not None:
        names += [f"hfkd+{o}-kd" for o in (a.options or OPTIONS)]
    if a.profile:
        return _profile(arm(a.profile))
    if a.data_path:
        return data_path(data, transform)
    print(f"student {a.student}, teacher {a.teacher}, {a.image_size}px, batch {a.batch_size}, {a.rounds} rounds x "
          f"{a.steps} steps, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    # Warm-up: first-call costs (allocator, oneDNN kernels for these shapes) stay out of the rounds; they are
    # process-wide, so one run per kind of model set is enough; compile warms up its own cache.
    for name in [n for n in names if n in ("hand-kd", "hand-sup") or "compile" in n]:
        arm(name)()
    times = {n: [] for n in names}
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(arm(name)())
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)

    def spread(values, fmt="{:.3f}"):
        return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}]"

    samples = a.steps * a.batch_size
    print("\n| arm | img/s median [min, max] |\n|---|---|")
    for n in names:
        print(f"| {n} | {spread([samples / t for t in times[n]], '{:.0f}')} |")
    ratios = {}
    for kind in ("kd",) if a.only_options else ("kd", "sup"):
        ratios[f"hfkd / hand ({kind})"] = [h / f for f, h in zip(times[f"hfkd-{kind}"], times[f"hand-{kind}"])]
        if not a.no_seeded and not a.only_options:
            ratios[f"hfkd / hand-seeded ({kind})"] = [
                h / f for f, h in zip(times[f"hfkd-{kind}"], times[f"hand-seeded-{kind}"])]
    if a.before:
        for kind in ("kd", "sup"):
            ratios[f"hfkd-before / hand ({kind})"] = [
                h / f for f, h in zip(times[f"hfkd-before-{kind}"], times[f"hand-{kind}"])]
    for n in names:
        if "+" in n:
            ratios[f"{n.split('+')[1][:-3]} / plain hfkd (kd)"] = [
                b / o for o, b in zip(times[n], times["hfkd-kd"])]
    print("\n| throughput ratio | median [min, max] over rounds |\n|---|---|")
    for k, v in ratios.items():
        print(f"| {k} | {spread(v)} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"config": vars(a), "seconds": times, "ratios": ratios}, f, indent=2)
    return times, ratios


def data_path(data, transform, rounds=5, batch_size=64):
    """Per-sample cost (us) of the previous and current hfkd data paths and of the hand loop's."""
    from hfkd.data.transforms import ImageClassificationDataset, seed_global_rng

    ds = ImageClassificationDataset(data.train, transform, "image", "label", seed=SEED)
    n = len(ds) // batch_size * batch_size
    batches = [list(range(i, i + batch_size)) for i in range(0, n, batch_size)]
    hand = data.train.with_transform(
        lambda rows: {"pixel_values": [transform(im.convert("RGB")) for im in rows["image"]], "label": rows["label"]})

    def per_sample(fn, items, count):
        runs = []
        for _ in range(rounds):
            start = time.perf_counter()
            for item in items:
                fn(item)
            runs.append((time.perf_counter() - start) / count * 1e6)
        return statistics.median(runs)

    def old_seeding(seed):
        with _reference_seeded_rng(seed):
            pass

    rows = {
        "hfkd, previous path (a row read and a seed/restore per sample)": per_sample(lambda b: _before_getitems(ds, b), batches, n),
        "hfkd, current path (__getitems__, one restore per batch)": per_sample(ds.__getitems__, batches, n),
        "hand loop: with_transform, no seeding": per_sample(hand.__getitems__, batches, n),
        "seed + restore per sample, previous": per_sample(old_seeding, range(3000), 3000),
        "per-sample seeding, current": per_sample(seed_global_rng, range(3000), 3000),
    }
    print("| data path, per sample | us (median of rounds) |\n|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.0f} |")


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _profile(run):
    import cProfile
    import pstats

    run()  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
