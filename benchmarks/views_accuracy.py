"""Accuracy of views per decode (``crops_per_image``) on the KD demo: one view per decode against K, per layout.

    python benchmarks/views_accuracy.py                      # all arms, seeds 0 1 2
    python benchmarks/views_accuracy.py --arms "K=1" "K=4 spread"

The KD demo's regime (benchmarks/teacher_cache.py's accuracy section): cifar_resnet8 from scratch, KD with
T = 4 and alpha 0.9, batch 64 views, the demo's learning rate and augmentation, from a cache of the demo
teachers' R stored views per image.  The arms:

* ``K=1``: one view per decode, 4 epochs (the reference; 92 steps);
* ``K=4 together``: 4 views per decode side by side in one batch (FKD's layout, ``spread_crops=False``);
* ``K=4 spread``: 4 views per decode dealt to 4 consecutive batches (``spread_crops=True``, the default);
* suffix ``equal steps``: 1 pass over the images (as many views and optimiser steps as ``K=1``, FKD's count:
  a pass with K views is K epochs); suffix ``equal passes``: 4 passes (as many decodes as ``K=1``, 4x the steps).

Seeds run in the outer loop and arms in the inner one, so that the load of a shared machine hits all arms alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from teacher_cache import _args, _data, _make_cache  # noqa: E402 - the KD demo's data, arguments and cache

from hfkd import DistillationTrainer, create_backbone, create_method  # noqa: E402
from hfkd.cli.demo import DEMO_LEARNING_RATE, DEMO_STUDENT, demo_teachers  # noqa: E402

EPOCHS = 4  # the KD demo's
ARMS = {
    "K=1": dict(crops=1, spread=True, passes=EPOCHS),
    "K=4 together, equal steps": dict(crops=4, spread=False, passes=1),
    "K=4 spread, equal steps": dict(crops=4, spread=True, passes=1),
    "K=4 together, equal passes": dict(crops=4, spread=False, passes=EPOCHS),
    "K=4 spread, equal passes": dict(crops=4, spread=True, passes=EPOCHS),
}


def run(arm, seed, cache, data, tmp):
    from accelerate.utils import set_seed

    set_seed(seed)
    student = create_backbone(DEMO_STUDENT, num_classes=10, pretrained=False, image_size=32)
    args = _args(os.path.join(tmp, "run"), num_train_epochs=arm["passes"], learning_rate=DEMO_LEARNING_RATE,
                 seed=seed, crops_per_image=arm["crops"], spread_crops=arm["spread"], overwrite_output_dir=True)
    trainer = DistillationTrainer(student, None, create_method("kd", temperature=4.0, alpha=0.9), args,
                                  train_dataset=data.train, eval_dataset=data.eval, teacher_cache=cache)
    start = time.perf_counter()
    state = trainer.train()
    seconds = time.perf_counter() - start
    top1 = round(100 * trainer.evaluate()["eval_accuracy"], 2)
    recalibrate_batchnorm(trainer._student_module(), data, trainer.augment)
    return {"top1": top1, "top1_bn_recalibrated": round(100 * trainer.evaluate()["eval_accuracy"], 2),
            "steps": state.global_step, "train_s": round(seconds, 1)}


def recalibrate_batchnorm(student, data, augment, batch_size=64):
    """A diagnostic: BatchNorm's running statistics re-estimated on one view per image, batches of distinct images.

    The weights are kept; only the statistics evaluation normalises with are measured afresh (a cumulative mean
    over one pass of training views).  If an arm's accuracy comes back, its loss was in those statistics; if not,
    in the weights it learnt.
    """
    import torch

    from hfkd.data.transforms import ImageClassificationDataset, create_image_transform

    views = ImageClassificationDataset(data.train, create_image_transform(student.preprocess, True, augment),
                                       data.image_column, data.label_column, seed=12345)
    norms = [m for m in student.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    was_training = student.training
    student.train()
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(views, batch_size=batch_size, shuffle=True,
                                                 generator=torch.Generator().manual_seed(0)):
            student(batch["pixel_values"])
    student.train(was_training)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num_views", type=int, default=4, help="R, the views stored per image")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    data = _data()
    teachers = demo_teachers()
    student = create_backbone(DEMO_STUDENT, num_classes=10, pretrained=False, image_size=32)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        _make_cache(cache, teachers, data, student, num_views=a.num_views)
        for seed in a.seeds:
            for name in a.arms:
                row = {"arm": name, "seed": seed, **run(ARMS[name], seed, cache, data, tmp)}
                results.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in a.arms:
        top1 = [r["top1"] for r in results if r["arm"] == name]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        recalibrated = [r["top1_bn_recalibrated"] for r in results if r["arm"] == name]
        summary[name] = (f"{statistics.mean(top1):.2f} +- {spread:.2f} (sample sd, n={len(top1)}): {top1}; "
                         f"BatchNorm statistics recalibrated: {statistics.mean(recalibrated):.2f} {recalibrated}")
    print(json.dumps({"num_views": a.num_views, "summary": summary}, indent=2))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"num_views": a.num_views, "runs": results, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
