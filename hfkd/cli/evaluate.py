"""``hfkd eval MODEL --dataset X``: top-1, top-5, NLL and ECE of a saved or published model."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

from ..arguments import DataArguments
from .parser import parse_args


@dataclass
class EvalArguments:
    """The model to evaluate and how."""

    _argument_group_name = "evaluation"

    model: str = field(default="", metadata={"help": "A saved student folder, a Hub id or a timm name (pretrained)."})
    revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the model."})
    batch_size: int = field(default=128, metadata={"help": "Images per evaluation batch."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N images."})


def main(argv: Optional[List[str]] = None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--model", argv[0], *argv[1:]]  # MODEL is positional
    try:
        ev, data_args = parse_args((EvalArguments, DataArguments), argv, prog="hfkd eval MODEL",
                                   description="Evaluate MODEL on the eval split of --dataset.")
        if not ev.model:
            raise ValueError("give the model to evaluate: hfkd eval MODEL --dataset DATASET")
    except ValueError as e:
        sys.exit(f"hfkd eval: error: {e}")
    from ..models.factory import create_backbone
    from ..pipeline import load_data
    from ..training.args import DistillationArguments
    from ..training.trainer import DistillationTrainer

    data = load_data(data_args)
    if data.eval is None:
        sys.exit("hfkd eval: error: the dataset has no eval split; pass --eval_split or --validation_fraction > 0")
    if ev.max_eval_samples:
        data.eval = data.eval.select(range(min(ev.max_eval_samples, len(data.eval))))
    model = create_backbone(ev.model, num_classes=data.num_classes, revision=ev.revision)
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, per_device_eval_batch_size=ev.batch_size, eval_teachers=False,
                                     disable_tqdm=True)
        trainer = DistillationTrainer(model, method="supervised", args=args, train_dataset=data.eval,
                                      eval_dataset=data.eval)
        metrics = {k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")}
    if trainer.accelerator.is_main_process:
        print(json.dumps({"model": ev.model, "dataset": data_args.dataset, "eval_images": len(data.eval), **metrics},
                         indent=2))
    return metrics
