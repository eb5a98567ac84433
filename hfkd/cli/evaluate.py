"""``hfkd eval MODEL [--dataset X]``: top-1, top-5, NLL and ECE of a saved or published model.

MODEL is anything :func:`hfkd.from_pretrained` loads (a saved student, pruned ones from ``hfkd compress``
included, a folder or a Hub id), or a timm name (its pretrained weights).  Without ``--dataset`` the dataset is
the one recorded in the model's ``hfkd.json``, with its splits; a model that records none, or only a local folder's
name, needs ``--dataset``.  The model is scored as it is: a dataset with other classes or other label names is
refused, never scored against a head that does not predict its classes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..data.default import DEFAULT_DATASET
from ..lazy import lazy_function
from ..settings import shorten
from ..training.args import DistillationArguments
from .arguments import EvalArguments, EvalDataArguments
from .parser import parse_args

if TYPE_CHECKING:
    from ..models.backbone import Backbone

# The models, the trainer and the data import torch: loaded once the settings are parsed,
# so that `hfkd eval --help` and a bad option answer without it.
is_main_process = lazy_function("..launch", "is_main_process", __package__)
create_backbone = lazy_function("..models.factory", "create_backbone", __package__)
from_pretrained = lazy_function("..hub.load", "from_pretrained", __package__)
local_checkpoint_name = lazy_function("..hub.card", "local_checkpoint_name", __package__)
DistillationTrainer = lazy_function("..training.trainer", "DistillationTrainer", __package__)
load_data = lazy_function(".pipeline", "load_data", __package__)

# MODEL may come first, as a positional argument, or as --model.
_MODEL_POSITIONAL = (("model_path",), dict(nargs="?", default=argparse.SUPPRESS, metavar="MODEL",
                                           help="The model to evaluate (or --model)."))
_HELD_OUT = "(held out)"  # how load_image_dataset names an eval split cut from the training split


def load_model(model: str, revision: Optional[str]) -> Backbone:
    """A saved student (folder or Hub id, through ``from_pretrained``), or a timm name with its pretrained weights."""
    import timm

    if not os.path.isdir(model) and timm.is_model(model):
        return create_backbone(model, pretrained=True, revision=revision)
    return from_pretrained(model, revision=revision)


def recorded_dataset(model: str, backbone: Backbone, data_args: EvalDataArguments) -> Tuple[EvalDataArguments, int]:
    """``data_args`` with the dataset the model's ``hfkd.json`` records (and its splits, where not given), and the
    seed that split it; a clear error when there is none that can be loaded again."""
    lineage = getattr(backbone, "lineage", None) or {}
    recorded = lineage.get("dataset") or {}
    name = recorded.get("id")
    how = "hfkd eval MODEL --dataset DATASET (a Hub id, an image folder, a parquet file or hfkd/digits)"
    if not name:
        raise ValueError(f"{shorten(model)} records no dataset (no hfkd.json with one); give it: {how}")
    # Local folders are recorded by their name only (never a path): a name that is not here cannot be loaded.
    loadable = name == DEFAULT_DATASET or os.path.exists(name) or name.count("/") == 1 and not name.startswith(".")
    if not loadable:
        raise ValueError(f"{shorten(model)} was trained on {shorten(name)}, a local folder known by its name only; "
                         f"give its path: {how}")
    seed = int((lineage.get("training_args") or {}).get("seed") or 0)
    replace: Dict[str, Any] = dict(dataset=name)
    if data_args.dataset_revision is None:
        replace["dataset_revision"] = recorded.get("revision")
    if data_args.dataset_config is None:
        replace["dataset_config"] = recorded.get("config")
    if recorded.get("train_split"):
        replace["train_split"] = recorded["train_split"]
    split = recorded.get("eval_split")
    if data_args.eval_split is None and split:
        if split.endswith(_HELD_OUT):  # "0.1 of train (held out)": the same hold-out, with the run's seed
            replace["validation_fraction"] = float(split.split()[0])
        else:
            replace["eval_split"] = split
    return dataclasses.replace(data_args, **replace), seed


def is_recorded(dataset: str, backbone: Backbone) -> bool:
    """Whether ``dataset`` is the one the model's ``hfkd.json`` records (a local folder is recorded by its name)."""
    recorded = ((getattr(backbone, "lineage", None) or {}).get("dataset") or {}).get("id")
    return bool(recorded) and recorded in (dataset, local_checkpoint_name(os.path.abspath(dataset)))


def check_same_classes(model: str, backbone: Backbone, data) -> None:
    """Refuse a dataset whose classes the model does not predict: another count, or other label names."""
    if backbone.num_classes == 0:
        raise ValueError(f"{shorten(model)} is a backbone without a classification head (feature_kd saves one "
                         f"so): it predicts no classes to score. Give it a head over your classes and fine-tune it "
                         f"first: hfkd train --student {shlex.quote(shorten(model))} --dataset DATA")
    if backbone.num_classes != data.num_classes:
        raise ValueError(f"{shorten(model)} predicts {backbone.num_classes} classes but the dataset has "
                         f"{data.num_classes}: evaluate it on the data it was trained for (--dataset)")
    ours, theirs = backbone.label_names, data.label_names
    if ours is not None and theirs is not None and [str(n) for n in ours] != [str(n) for n in theirs]:
        diff = [(i, m, d) for i, (m, d) in enumerate(zip(ours, theirs)) if str(m) != str(d)][:5]
        order = " (the same names in another order)" if sorted(map(str, ours)) == sorted(map(str, theirs)) else ""
        raise ValueError(f"{shorten(model)} and the dataset name their classes differently{order} (index, model, "
                         f"dataset): {shorten(diff)}; evaluate it on the data it was trained for (--dataset)")


def main(argv: Optional[List[str]] = None):
    try:
        (ev, data_args), extras = parse_args((EvalArguments, EvalDataArguments), argv, prog="hfkd eval MODEL",
                                             description="Evaluate MODEL on the eval split of --dataset (default: "
                                                         "the dataset recorded in its hfkd.json).",
                                             extra_options=(_MODEL_POSITIONAL,))
        model = extras.get("model_path") or ev.model
        if not model:
            raise ValueError("give the model to evaluate: hfkd eval MODEL --dataset DATASET")
        backbone = load_model(model, ev.revision)
        seed = 0
        if data_args.dataset is None:
            data_args, seed = recorded_dataset(model, backbone, data_args)
            if is_main_process():
                print(f"dataset: {data_args.dataset} (recorded in {model}'s hfkd.json)", file=sys.stderr)
        elif is_recorded(data_args.dataset, backbone):  # its own data, given by path: hold out what its run held out
            seed = int(((backbone.lineage or {}).get("training_args") or {}).get("seed") or 0)
        data = load_data(data_args, seed=seed)
        if data.eval is None:
            raise ValueError("the dataset has no eval split; pass --eval_split or --validation_fraction > 0")
        if not data.labelled("eval"):
            raise ValueError(f"the eval split of {shorten(data_args.dataset)} has no labels, so accuracy cannot be "
                             "measured; give a labelled split (--dataset, --eval_split, --label_column). A student "
                             "distilled without labels records its agreement with its teachers in its hfkd.json")
        check_same_classes(model, backbone, data)
    except (ValueError, OSError) as e:
        sys.exit(f"hfkd eval: error: {e}")
    if ev.max_eval_samples:
        data.eval = data.eval.select(range(min(ev.max_eval_samples, len(data.eval))))
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, per_device_eval_batch_size=ev.batch_size, eval_teachers=False,
                                     disable_tqdm=True)
        trainer = DistillationTrainer(backbone, method="supervised", args=args, train_dataset=data.eval,
                                      eval_dataset=data.eval, image_column=data.image_column,
                                      label_column=data.label_column)
        metrics = {k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")}
    if is_main_process():
        print(json.dumps({"model": model, "dataset": data_args.dataset, "eval_images": len(data.eval), **metrics},
                         indent=2))
    return metrics
