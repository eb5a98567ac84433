"""``hfkd compress`` / ``python recipes/compress.py``: the demo's distilled student, pruned, recovered, quantized, exported, tabled.

    python recipes/compress.py                        # demo: cached KD student and teachers, ~half the MACs
    python recipes/compress.py --seeds 0 1 2          # prune + KD recovery vs prune + plain fine-tuning
    python recipes/compress.py --student outputs/kd/student --teachers resnet18 --target_ratio 0.3 --criterion taylor
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..arguments import DataArguments
from ..cli.parser import parse_args
from ..demo import (DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_LEARNING_RATE, DEMO_STUDENT, demo_args, demo_cache_path,
                    demo_teachers)
from ..training.args import DistillationArguments
from .pipeline import CompressionArguments, compress_student, recover
from .prune import PruningConfig, prune_backbone


@dataclass
class CompressModelArguments:
    student: Optional[str] = field(default=None, metadata={
        "help": "Saved student to compress (folder or Hub id); default: the demo's KD student, trained if missing."})
    teachers: List[str] = field(default_factory=list, metadata={
        "help": "Teachers of the recovery (default: the demo teachers)."})
    seeds: List[int] = field(default_factory=list, metadata={
        "help": "Instead of one run: prune once, then compare KD recovery with plain fine-tuning over these seeds."})


# Recovery fine-tunes a trained student: half the from-scratch learning rate, as the MEAL V2 demo does.
DEFAULTS = dict(output_dir="outputs/compress", num_train_epochs=4, learning_rate=DEMO_LEARNING_RATE / 2,
                weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale), aug_hflip=DEMO_AUGMENT.hflip,
                aug_color_jitter=DEMO_AUGMENT.color_jitter)


DEMO_KD_EPOCHS = 4  # the demo's KD student: recipes/kd.py's demo settings


def demo_student_path(seed: int = 0) -> str:
    """Where the demo's KD student is cached; the folder names its training settings (see demo_teacher_path)."""
    return demo_cache_path("demo_students", DEMO_STUDENT, DEMO_KD_EPOCHS, seed, task="kd-")


def demo_student(data, teachers: Sequence[str], seed: int = 0) -> str:
    """The demo's KD student (``recipes/kd.py`` settings), trained once and cached next to the demo teachers."""
    from ..methods.registry import create_method
    from ..models.factory import create_backbone
    from ..training.trainer import DistillationTrainer
    from accelerate.utils import set_seed

    path = demo_student_path(seed)
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        set_seed(seed)
        student = create_backbone(DEMO_STUDENT, num_classes=data.num_classes, pretrained=False,
                                  image_size=DEMO_IMAGE_SIZE, label_names=data.label_names)
        args = demo_args(path + ".run", num_train_epochs=DEMO_KD_EPOCHS, seed=seed)
        trainer = DistillationTrainer(student, teachers=list(teachers), method=create_method("kd"), args=args,
                                      train_dataset=data.train, eval_dataset=data.eval, augment=DEMO_AUGMENT)
        trainer.train()
        trainer.evaluate()  # so the cached student's card and hfkd.json carry its accuracy
        trainer.save_model(path)
    return path


def compare_recoveries(student, data, teachers, pruning: PruningConfig, args: DistillationArguments,
                       seeds: Sequence[int], augment) -> str:
    """Prune once, then recover with KD and with plain cross-entropy for every seed; a Markdown table."""
    import dataclasses

    import numpy as np

    from .measure import eval_arrays, top1, torch_predict

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
    model_args, data_args, pruning, compression, args = parse_args(
        (CompressModelArguments, DataArguments, PruningConfig, CompressionArguments, DistillationArguments),
        argv, defaults=DEFAULTS)
    from ..hub.load import from_pretrained
    from ..pipeline import load_data

    data = load_data(data_args, seed=0)
    teachers = model_args.teachers or demo_teachers(data)
    student = from_pretrained(model_args.student or demo_student(data, teachers))
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
