"""``hfkd compress`` / ``python recipes/compress.py``: the demo's distilled student, pruned, recovered, quantized, exported, tabled.

    python recipes/compress.py                        # demo: cached KD student and teachers, ~half the MACs
    python recipes/compress.py --seeds 0 1 2          # prune + KD recovery vs prune + plain fine-tuning
    python recipes/compress.py --student outputs/kd/student --teachers resnet18 --target_ratio 0.3 --criterion taylor
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Optional, Sequence

import numpy as np

from ..compress.measure import eval_arrays, top1, torch_predict
from ..compress.pipeline import CompressionArguments, compress_student, recover
from ..compress.prune import PruningConfig, prune_backbone
from ..data.default import DEFAULT_DATASET
from ..hub.load import from_pretrained
from ..training.args import DistillationArguments
from .arguments import CompressModelArguments, DataArguments
from .demo import COMPRESS_PRESET, Preset, demo_student, resolve_teachers
from .parser import parse_args
from .pipeline import load_data


def compare_recoveries(student, data, teachers, pruning: PruningConfig, args: DistillationArguments,
                       seeds: Sequence[int], augment) -> str:
    """Prune once, then recover with KD and with plain cross-entropy for every seed; a Markdown table."""
    pruned, _ = prune_backbone(student, pruning)
    images, labels = eval_arrays(data.eval, student.preprocess, data.image_column, data.label_column)
    results = {"kd": [], "supervised": []}
    for seed in seeds:
        for method, method_teachers in (("kd", teachers), ("supervised", [])):
            run_args = dataclasses.replace(args, seed=seed, output_dir=os.path.join(args.output_dir, f"{method}-seed{seed}"))
            trainer = recover(pruned, data, method_teachers, method, run_args, augment)
            results[method].append(top1(torch_predict(trainer.unwrapped_student()), images, labels))
            print(f"seed {seed} {method}: top-1 {100 * results[method][-1]:.2f}", flush=True)
    unpruned = top1(torch_predict(student), images, labels)
    pruned_acc = top1(torch_predict(pruned), images, labels)
    diffs = np.subtract(results["kd"], results["supervised"])
    fmt = lambda xs: f"{100 * statistics.mean(xs):.2f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0):.2f}"
    lines = ["| recovery | top-1 (%) mean ± std | per seed |", "|---|---|---|",
             f"| none (unpruned student) | {100 * unpruned:.2f} | - |",
             f"| none (pruned, no fine-tuning) | {100 * pruned_acc:.2f} | - |"]
    for method, title in (("kd", "KD from the teachers"), ("supervised", "plain fine-tuning (cross-entropy)")):
        lines.append(f"| {title} | {fmt(results[method])} | {', '.join(f'{100 * a:.2f}' for a in results[method])} |")
    lines.append(f"\nKD - plain: {fmt(list(diffs))} points over seeds {list(seeds)}; KD wins on "
                 f"{int((diffs > 0).sum())} of {len(seeds)}.")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None):
    # The demo's recovery settings apply only on the embedded digits; elsewhere the dataclasses' defaults.
    types = (CompressModelArguments, DataArguments, PruningConfig, CompressionArguments, DistillationArguments)
    preset = Preset(lambda given: COMPRESS_PRESET, types)
    (model_args, data_args, pruning, compression, args), _ = parse_args(types, argv, preset=preset)
    for line in preset.describe():
        print(line, flush=True)
    if not model_args.student and data_args.dataset != DEFAULT_DATASET:
        raise SystemExit(f"hfkd compress: error: compressing on {data_args.dataset} needs --student (a saved "
                         "student trained on it); the demo's KD student only knows the embedded digits")
    data = load_data(data_args, seed=0)
    teachers = resolve_teachers(model_args.teachers, data_args.dataset, what="KD recovery")
    student = from_pretrained(model_args.student or demo_student())
    augment = data_args.augment()
    if model_args.seeds:
        table = compare_recoveries(student, data, teachers, pruning, args, model_args.seeds, augment)
        name = "seeds.md"
    else:
        result = compress_student(student, data, os.path.join(args.output_dir, "student"), teachers=teachers,
                                  training_args=args, pruning=pruning, compression=compression, augment=augment)
        table = result.table()
        name = "results.md"
    print("\n" + table + "\n", flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, name), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return table
