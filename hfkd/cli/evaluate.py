"""``hfkd eval MODEL --dataset X``: top-1, top-5, NLL and ECE of a saved or published model."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import List, Optional

from ..lazy import lazy_function
from ..training.args import DistillationArguments
from .arguments import DataArguments, EvalArguments
from .parser import parse_args

# The models, the trainer and the data import torch: loaded once the settings are parsed,
# so that `hfkd eval --help` and a bad option answer without it.
is_main_process = lazy_function("..launch", "is_main_process", __package__)
create_backbone = lazy_function("..models.factory", "create_backbone", __package__)
DistillationTrainer = lazy_function("..training.trainer", "DistillationTrainer", __package__)
load_data = lazy_function(".pipeline", "load_data", __package__)

# MODEL may come first, as a positional argument, or as --model.
_MODEL_POSITIONAL = (("model_path",), dict(nargs="?", default=argparse.SUPPRESS, metavar="MODEL",
                                           help="The model to evaluate (or --model)."))


def main(argv: Optional[List[str]] = None):
    try:
        (ev, data_args), extras = parse_args((EvalArguments, DataArguments), argv, prog="hfkd eval MODEL",
                                             description="Evaluate MODEL on the eval split of --dataset.",
                                             extra_options=(_MODEL_POSITIONAL,))
        model = extras.get("model_path") or ev.model
        if not model:
            raise ValueError("give the model to evaluate: hfkd eval MODEL --dataset DATASET")
    except ValueError as e:
        sys.exit(f"hfkd eval: error: {e}")
    data = load_data(data_args)
    if data.eval is None:
        sys.exit("hfkd eval: error: the dataset has no eval split; pass --eval_split or --validation_fraction > 0")
    if ev.max_eval_samples:
        data.eval = data.eval.select(range(min(ev.max_eval_samples, len(data.eval))))
    backbone = create_backbone(model, num_classes=data.num_classes, revision=ev.revision)
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, per_device_eval_batch_size=ev.batch_size, eval_teachers=False,
                                     disable_tqdm=True)
        trainer = DistillationTrainer(backbone, method="supervised", args=args, train_dataset=data.eval,
                                      eval_dataset=data.eval)
        metrics = {k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")}
    if is_main_process():
        print(json.dumps({"model": model, "dataset": data_args.dataset, "eval_images": len(data.eval), **metrics},
                         indent=2))
    return metrics
