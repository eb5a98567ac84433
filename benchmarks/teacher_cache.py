"""Teacher cache: training throughput, generation cost, bytes on disk, and accuracy against online distillation.

    python benchmarks/teacher_cache.py --section throughput   # cached MEAL V2 vs plain training vs online MEAL V2
    python benchmarks/teacher_cache.py --section storage      # generation cost, bytes/image/view: full/top-k x fp32/fp16
    python benchmarks/teacher_cache.py --section disk         # bytes/view on disk, 10 and 1000 classes, no teacher run
    python benchmarks/teacher_cache.py --section accuracy     # cached vs online MEAL V2 and KD, 3 seeds, R = 1 and 4
    python benchmarks/teacher_cache.py --section accuracy --methods kd --sources "cache R=4" "cache R=4 K=4"
    python benchmarks/teacher_cache.py --section integrity    # cost of the checks on open: sizes, sha256, split hashes

All on the embedded demo: the demo student and teachers (hfkd/cli/demo.py: cifar_resnet8 <- cifar_resnet20 +
cifar_wrn16_2, trained and cached by hfkd.cli.demo), digits at 32 px, the MEAL V2 demo's augmentation and learning rates.

* throughput: whole trainer steps (data loading and augmentation included, as a user sees them),
  the three set-ups timed in interleaved rounds whose order rotates, so that the load of a shared
  machine hits all alike; ratios per round, reported as median [min, max].
* storage: the Arrow bytes on disk per stored view (key columns included) and the generation time
  per image and view, for full and top-k logits in float32 and float16.
* integrity: opening a cache with the size check only vs sizes + sha256 (what caches up to 256 MB get), the
  sha256 rate that bound rests on, and the split's full image hash (hash_images) vs the 64-image fingerprint.
* accuracy: top-1 on the eval split after the MEAL V2 demo (6 epochs from the demo's trained
  student) and the KD demo (4 epochs from scratch), online vs from an R = 1 and an R = 4 cache.
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import statistics
import tempfile
import time

from hfkd import DistillationArguments, DistillationTrainer, cache_teacher_outputs, create_method
from hfkd.data.transforms import AugmentConfig
from hfkd.cli.demo import DEMO_LEARNING_RATE, DEMO_STUDENT, demo_teachers
from hfkd.cli.pipeline import load_data

AUGMENT = AugmentConfig(scale=(0.25, 1.0), hflip=0.0, color_jitter=None)  # recipes/meal_v2.py's demo
CACHE_SEED = 42


def _data():
    from hfkd.cli.arguments import DataArguments

    return load_data(DataArguments(), seed=42)


def _student(init: str):
    from hfkd import create_backbone

    return create_backbone(init, num_classes=10, pretrained=True, image_size=32)


def _args(out, **kw):
    kwargs = dict(output_dir=out, per_device_train_batch_size=64, learning_rate=DEMO_LEARNING_RATE / 2, weight_decay=0.05,
                  save_strategy="no", eval_strategy="no", logging_steps=1000, disable_tqdm=True, eval_teachers=False)
    kwargs.update(kw)
    return DistillationArguments(**kwargs)


def _make_cache(folder, teachers, data, student, **kw):
    start = time.perf_counter()
    cache_teacher_outputs(teachers, data.train, folder, student=student, augment=AUGMENT, seed=CACHE_SEED,
                          batch_size=64, **kw)
    return time.perf_counter() - start


def _spread(values):
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def throughput(a, tmp, data, teachers, init):
    folder = os.path.join(tmp, "cache_r1")
    _make_cache(folder, teachers, data, _student(init))
    setups = {
        "plain": dict(method="supervised", teachers=None, teacher_cache=None),
        "cached meal_v2": dict(method="meal_v2", teachers=None, teacher_cache=folder),
        "online meal_v2": dict(method="meal_v2", teachers=teachers, teacher_cache=None),
    }
    names, times = list(setups), {n: [] for n in setups}
    base = _student(init)
    for r in range(a.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            s = setups[name]
            trainer = DistillationTrainer(copy.deepcopy(base), s["teachers"], create_method(s["method"]),
                                          _args(os.path.join(tmp, "t"), max_steps=a.steps, seed=CACHE_SEED),
                                          train_dataset=data.train, augment=AUGMENT, teacher_cache=s["teacher_cache"])
            trainer.train()
            times[name].append(trainer.state.train_runtime / a.steps)
    ratios = {"cached / plain (speed)": [p / c for p, c in zip(times["plain"], times["cached meal_v2"])],
              "cached / online (speed)": [o / c for o, c in zip(times["online meal_v2"], times["cached meal_v2"])]}
    return {"seconds_per_step": {n: _spread(v) for n, v in times.items()},
            "ratios": {n: _spread(v) for n, v in ratios.items()}, "rounds": a.rounds, "steps": a.steps}


def storage(a, tmp, data, teachers, init):
    sub = data.train.select(range(a.storage_images))
    data_sub = copy.copy(data)
    data_sub.train = sub
    student = _student(init)
    rows = []
    for top_k in (None, 5):
        for dtype in ("float32", "float16"):
            folder = os.path.join(tmp, f"store_{top_k}_{dtype}")
            seconds = _make_cache(folder, teachers, data_sub, student, top_k=top_k, dtype=dtype, num_views=1)
            size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder, "**", "*.arrow"), recursive=True))
            rows.append({"storage": f"top-{top_k}" if top_k else "full", "dtype": dtype,
                         "bytes_per_image_view": round(size / len(sub), 1),
                         "generation_ms_per_image_view": round(1000 * seconds / len(sub), 2),
                         "teacher_forwards_per_image_view": len(teachers)})
    return {"images": len(sub), "classes": 10, "teachers": len(teachers), "rows": rows}


def disk(a, tmp, data, teachers, init):
    """Arrow bytes per stored view for 2 teachers, from random logits (sizes do not depend on the values)."""
    import numpy as np
    import torch

    from hfkd.cache.format import encode_logits
    from hfkd.cache.generate import _write_shard

    rows, out = 2000, []
    for classes in (10, 1000):
        for top_k in (None, 5, 10):
            for dtype in ("float32", "float16"):
                if top_k and top_k >= classes:
                    continue
                index = np.arange(rows)
                columns = {"index": index, "view": np.zeros(rows, np.int32), "seed": index, "label": index,
                           **encode_logits(torch.randn(rows, 2, classes), top_k, dtype)}
                # one shard, as generation writes it
                size = _write_shard(os.path.join(tmp, f"bytes_{classes}_{top_k}_{dtype}.arrow"), columns)["size"]
                out.append({"classes": classes, "storage": f"top-{top_k}" if top_k else "full", "dtype": dtype,
                            "bytes_per_view": round(size / rows, 1)})
    return out


def _median_seconds(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def integrity(a, tmp, data, teachers, init):
    import numpy as np

    from hfkd.cache import lookup
    from hfkd.cache.format import dataset_fingerprint, images_sha256
    from hfkd.files import sha256

    folder = os.path.join(tmp, "cache_integrity")
    _make_cache(folder, teachers, data, _student(init), num_views=1)
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(folder, "*")))
    hashed = _median_seconds(lambda: lookup.TeacherCache(folder))
    bound, lookup.HASH_ON_OPEN_BYTES = lookup.HASH_ON_OPEN_BYTES, 0
    sizes_only = _median_seconds(lambda: lookup.TeacherCache(folder))
    lookup.HASH_ON_OPEN_BYTES = bound
    blob = os.path.join(tmp, "blob")
    with open(blob, "wb") as f:
        f.write(np.random.default_rng(0).bytes(bound))
    rate = bound / 2 ** 20 / _median_seconds(lambda: sha256(blob), repeats=3)
    train, image, label = data.train, data.image_column, data.label_column
    sampled = _median_seconds(lambda: dataset_fingerprint(train, image, label))
    full = _median_seconds(lambda: images_sha256(train, image, label))
    return {"cache_bytes": size, "open_ms_sizes_only": round(1000 * sizes_only, 2),
            "open_ms_sizes_and_sha256": round(1000 * hashed, 2), "open_ratio": round(hashed / sizes_only, 2),
            "sha256_mib_per_s": round(rate), "hash_on_open_bound_s": round(bound / 2 ** 20 / rate, 2),
            "split_images": len(train), "sampled_fingerprint_ms": round(1000 * sampled, 1),
            "images_sha256_ms": round(1000 * full, 1), "full_vs_sampled_ratio": round(full / sampled, 2)}


def accuracy(a, tmp, data, teachers, init):
    student = _student(init)
    caches = {}
    for r in (1, 4):
        caches[r] = os.path.join(tmp, f"acc_r{r}")
        _make_cache(caches[r], teachers, data, student, num_views=r)
    plans = {"meal_v2": dict(epochs=6, lr=DEMO_LEARNING_RATE / 2, init=init, kwargs={}),
             "kd": dict(epochs=4, lr=DEMO_LEARNING_RATE, init=None, kwargs={"temperature": 4.0, "alpha": 0.9})}
    results = []
    for method, plan in plans.items():
        if method not in a.methods:
            continue
        for seed in a.seeds:
            for source in a.sources:
                # "cache R=4 K=4": 4 views per decode (crops_per_image); a pass over the images then trains on
                # as many views as K epochs of one view, so it runs epochs / K passes (FKD's count).
                crops = int(source.split("K=")[1]) if "K=" in source else 1
                if plan["epochs"] % crops:
                    continue
                from accelerate.utils import set_seed

                set_seed(seed)
                from hfkd import create_backbone

                model = (_student(plan["init"]) if plan["init"]
                         else create_backbone(DEMO_STUDENT, num_classes=10, pretrained=False, image_size=32))
                cache = None if source == "online" else caches[int(source.split("R=")[1][0])]
                trainer = DistillationTrainer(
                    model, None if cache else teachers, create_method(method, **plan["kwargs"]),
                    _args(os.path.join(tmp, "acc"), num_train_epochs=plan["epochs"] // crops,
                          learning_rate=plan["lr"], seed=seed, crops_per_image=crops),
                    train_dataset=data.train, eval_dataset=data.eval, augment=AUGMENT,
                    teacher_cache=cache)
                trainer.train()
                acc = trainer.evaluate()["eval_accuracy"]
                results.append({"method": method, "seed": seed, "source": source, "top1": round(100 * acc, 2)})
                print(json.dumps(results[-1]), flush=True)
    table = {}
    for r in results:
        table.setdefault((r["method"], r["source"]), []).append(r["top1"])
    summary = {f"{m} {s}": f"{statistics.mean(v):.2f} +- {statistics.pstdev(v):.2f} (n={len(v)})"
               for (m, s), v in table.items()}
    return {"runs": results, "summary": summary}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["throughput", "storage", "disk", "accuracy", "integrity", "all"], default="all")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=15, help="timed training steps per set-up and round")
    p.add_argument("--storage_images", type=int, default=512)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["meal_v2", "kd"])
    p.add_argument("--sources", nargs="+", default=["online", "cache R=1", "cache R=4"],
                   help="accuracy: where the teachers' outputs come from; 'cache R=4 K=4' adds 4 views per decode")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    data = _data()
    teachers = demo_teachers()
    (init,) = demo_teachers(names=[DEMO_STUDENT], seed=0)  # the MEAL V2 demo's initialisation
    sections = ["throughput", "storage", "disk", "accuracy"] if a.section == "all" else [a.section]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            out[section] = globals()[section](a, tmp, data, teachers, init)
            print(json.dumps({section: out[section]}, indent=2), flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
