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

from ..compress.settings import CompressionArguments, PruningConfig
from ..extras import MissingDependencyError, require
from ..lazy import lazy_function
from ..training.args import DistillationArguments
from ..settings import shorten
from .arguments import CompressModelArguments, DataArguments
from .parser import parse_args
from .preset import COMPRESS_PRESET, Preset, is_demo_data

# Compression, the demo and the models import torch: loaded once the settings are parsed,
# so that `hfkd compress --help` and a bad option answer without it.
eval_arrays = lazy_function("..compress.measure", "eval_arrays", __package__)
top1 = lazy_function("..compress.measure", "top1", __package__)
torch_predict = lazy_function("..compress.measure", "torch_predict", __package__)
compress_student = lazy_function("..compress.pipeline", "compress_student", __package__)
recover = lazy_function("..compress.pipeline", "recover", __package__)
prune_backbone = lazy_function("..compress.prune", "prune_backbone", __package__)
from_pretrained = lazy_function("..hub.load", "from_pretrained", __package__)
demo_student = lazy_function(".demo", "demo_student", __package__)
resolve_teachers = lazy_function(".demo", "resolve_teachers", __package__)
load_data = lazy_function(".pipeline", "load_data", __package__)


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


TYPES = (CompressModelArguments, DataArguments, PruningConfig, CompressionArguments, DistillationArguments)


def parse_compress_args(argv: Optional[Sequence[str]] = None, preset: Optional[Preset] = None):
    """``hfkd compress``'s settings groups: the model, data, pruning, compression and recovery training."""
    # The demo's recovery settings apply only on the embedded digits; elsewhere the dataclasses' defaults.
    preset = preset or Preset(lambda given: COMPRESS_PRESET, TYPES)
    groups, _ = parse_args(TYPES, argv, preset=preset)
    return groups


def main(argv: Optional[Sequence[str]] = None):
    preset = Preset(lambda given: COMPRESS_PRESET, TYPES)
    try:
        model_args, data_args, pruning, compression, args = parse_compress_args(argv, preset)
        # Before anything loads: pruning needs torch-pruning, the int8 export onnx, onnxscript and onnxruntime.
        exports = compression.quantize and not model_args.seeds
        require("compress", "hfkd compress", None if exports else ("torch_pruning",))
        if data_args.streaming:  # the measurements and the pruning's importance read the eval split whole
            raise ValueError("hfkd compress reads its data as a loaded split; drop --streaming")
    except (ValueError, MissingDependencyError) as e:
        raise SystemExit(f"hfkd compress: error: {e}") from None
    for line in preset.describe():
        print(line, flush=True)
    if not model_args.student and not is_demo_data(data_args.dataset):
        raise SystemExit(f"hfkd compress: error: compressing on {data_args.dataset} needs --student (a saved "
                         "student trained on it); the demo's KD student only knows the embedded digits")
    data = load_data(data_args, seed=0)
    if not (data.labelled("train") and data.labelled("eval")):
        raise SystemExit(f"hfkd compress: error: {shorten(data_args.dataset)} has no labels in its "
                         f"{'train' if not data.labelled('train') else 'eval'} split; compression measures accuracy "
                         "before and after each step and its recovery trains on labels: give a labelled dataset")
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
