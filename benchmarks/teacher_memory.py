"""Peak memory (RSS, CPU) of KD training with 0, 1, 2 and 4 frozen teachers, each in a fresh process.

    python benchmarks/teacher_memory.py                          # resnet18 teachers, 96 px, batch 64
    python benchmarks/teacher_memory.py --teachers 1 2 4 --image_size 128

The trainer runs the teachers one after another under ``torch.inference_mode``, keeping only what
the method asked for (KD: the logits), so the peak should be the student's training plus every
teacher's weights plus ONE teacher's activations: each added teacher should add about its weights,
not its weights and its activations.  Each configuration runs in its own subprocess (peak RSS,
``ru_maxrss``, only grows) and trains a few steps on the embedded digits; the table gives the peak,
its growth over the student alone, and the teachers' weights for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile


def child(num_teachers: int, a) -> dict:
    import torch

    from hfkd import DistillationArguments, DistillationTrainer, create_backbone
    from hfkd.data import load_image_dataset

    torch.set_num_threads(1)
    data = load_image_dataset()
    student = create_backbone(a.student, num_classes=10, pretrained=False, image_size=a.image_size,
                              label_names=data.label_names)
    teachers = [create_backbone(a.teacher, num_classes=10, pretrained=False, image_size=a.image_size,
                                label_names=data.label_names) for _ in range(num_teachers)]
    weights = sum(p.numel() * p.element_size() for t in teachers for p in t.parameters())
    args = DistillationArguments(output_dir=tempfile.mkdtemp(), max_steps=a.steps, per_device_train_batch_size=a.batch_size,
                                 save_strategy="no", eval_strategy="no", eval_teachers=False, disable_tqdm=True)
    rss_models = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer = DistillationTrainer(student, teachers, method="kd" if teachers else "supervised", args=args,
                                  train_dataset=data.train)
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"teachers": num_teachers, "peak_mb": peak / 1024, "after_models_mb": rss_models / 1024,
            "teacher_weights_mb": weights / 2**20}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="mobilenetv3_small_050")
    p.add_argument("--teacher", default="resnet18")
    p.add_argument("--teachers", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        print("RESULT " + json.dumps(child(a.child, a)))
        return None
    rows = []
    for n in a.teachers:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--student", a.student, "--teacher",
               a.teacher, "--image_size", str(a.image_size), "--batch_size", str(a.batch_size), "--steps", str(a.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    base = next((r["peak_mb"] for r in rows if r["teachers"] == 0), None)
    print(f"student {a.student}, teachers {a.teacher}, {a.image_size}px, batch {a.batch_size}, {a.steps} KD steps\n")
    print("| teachers | peak RSS (MB) | growth over no teacher (MB) | teachers' weights (MB) | growth - weights (MB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        growth = r["peak_mb"] - base if base is not None else float("nan")
        print(f"| {r['teachers']} | {r['peak_mb']:.0f} | {growth:.0f} | {r['teacher_weights_mb']:.0f} | "
              f"{growth - r['teacher_weights_mb']:.0f} |")
    return rows


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    main()
