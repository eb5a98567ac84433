"""``compress_student``: prune, recover with distillation, quantize, export, measure and save, in one call."""
from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ..hub.card import create_model_card, local_checkpoint_name
from ..hub.card_sections import compression_table
from ..hub.load import from_pretrained
from ..hub.save import save_student
from ..models.backbone import Backbone
from ..models.pruned import PRUNING_FILE
from ..training.lineage import library_versions, model_entry
from ..training.trainer import DistillationTrainer
from .export import INT8_FILE, ONNX_FILE, check_export, compare, export_onnx, onnx_predict, quantize_onnx
from .measure import eval_arrays, interleaved_latency, top1, torch_predict
from .prune import PruningConfig, _attention_heads, count_macs_params, prune_backbone
from .settings import CompressionArguments
from .serialization import pruning_record, state_dict_bytes


@dataclass
class CompressionResult:
    rows: List[Dict[str, Any]]
    compression: Dict[str, Any]
    pruned: Backbone
    recovered: Optional[Backbone]
    folder: Optional[str] = None

    def table(self) -> str:
        return compression_table(self.rows)


def recover(pruned: Backbone, data, teachers: Sequence[Any], method: Union[str, Any], args, augment=None):
    """Fine-tune a copy of ``pruned`` with any hfkd method through the ordinary trainer; returns the trainer."""
    # The data's own name (a folder by its name, never its path) goes into the lineage, as a command's run records
    # it: the card names the dataset, and a demo run on the embedded digits is recognisable as the demo's.
    source = getattr(data, "source", None)
    info = {"id": local_checkpoint_name(source) or source if isinstance(source, str) else None,
            "train_samples": len(data.train), "eval_samples": len(data.eval) if data.eval is not None else 0}
    trainer = DistillationTrainer(copy.deepcopy(pruned), teachers=list(teachers), method=method, args=args,
                                  train_dataset=data.train, eval_dataset=data.eval, augment=augment,
                                  image_column=data.image_column, label_column=data.label_column, dataset_info=info)
    trainer.train()
    return trainer


def _row(step: str, fmt: str, macs: int, params: int, size: int, accuracy: float) -> Dict[str, Any]:
    return {"step": step, "format": fmt, "macs": macs, "params": params, "size_bytes": size, "top1": accuracy}


def _torch_row(step: str, backbone: Backbone, images, labels) -> Dict[str, Any]:
    macs, params = count_macs_params(backbone)
    return _row(step, "PyTorch fp32", macs, params, len(state_dict_bytes(backbone)),
                top1(torch_predict(backbone), images, labels))


def compress_student(student: Union[str, Backbone], data, output_dir: Optional[str] = None,
                     teachers: Sequence[Any] = (), training_args=None,
                     pruning: Optional[PruningConfig] = None, compression: Optional[CompressionArguments] = None,
                     augment=None, method=None) -> CompressionResult:
    """Prune ``student``, recover it by distillation, quantize, export, measure every step, save.

    Args:
        student: a :class:`Backbone` or a saved student (folder / Hub id, loaded with ``hfkd.from_pretrained``).
        data: :class:`hfkd.ImageClassificationData` with train and eval splits.
        output_dir: folder for the compressed student (safetensors + ``pruning.json``, ``model.onnx``,
            ``model.int8.onnx``, ``hfkd.json``, ``README.md``); ``None`` saves nothing.
        teachers: teachers for the recovery (as for :class:`DistillationTrainer`).
        training_args: :class:`DistillationArguments` of the recovery; ``None`` skips recovery.
        method: a method object for the recovery (default: ``compression.recovery_method``).
    The input student is never modified.
    """
    if isinstance(student, str):
        student = from_pretrained(student)
    pruning = pruning or PruningConfig()
    compression = compression or CompressionArguments()
    if data.eval is None:
        raise ValueError("compression measures top-1 after every step: the data needs an eval split")
    student = student.eval()
    pre = student.preprocess
    images, labels = eval_arrays(data.eval, pre, data.image_column, data.label_column)
    calib, calib_labels = eval_arrays(data.train, pre, data.image_column, data.label_column,
                                      limit=compression.calibration_samples, seed=0)
    rows = [_torch_row("before pruning", student, images, labels)]
    batch = (torch.from_numpy(calib[:64]), torch.from_numpy(calib_labels[:64]))
    pruned, report = prune_backbone(student, pruning, calibration_batch=batch)
    rows.append(_torch_row("after pruning", pruned, images, labels))
    predicts = {"before pruning": torch_predict(student), "after pruning": torch_predict(pruned)}
    final, trainer, recovery = pruned, None, None
    if training_args is not None:
        trainer = recover(pruned, data, teachers, method or compression.recovery_method, training_args, augment)
        final = trainer.unwrapped_student().eval()
        rows.append(_torch_row(f"after {trainer.method.name} recovery", final, images, labels))
        predicts[rows[-1]["step"]] = torch_predict(final)
        # A folder is named, not located: the writer's paths stay on the writer's machine.
        recovery = {"method": trainer.method.name,
                    "teachers": [local_checkpoint_name(t.name) or t.name for t in trainer.teachers],
                    "epochs": training_args.num_train_epochs, "learning_rate": training_args.learning_rate}
    summary: Dict[str, Any] = {"pruning": report, "recovery": recovery, "pruning_file": PRUNING_FILE,
                               "library": final.library, "input_size": list(pre.input_size),
                               "attention_heads_pruned": bool(_attention_heads(student.model)) and pruning.prune_heads}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        if compression.quantize:
            onnx_path, int8_path = os.path.join(tmp, ONNX_FILE), os.path.join(tmp, INT8_FILE)
            export_onnx(final, onnx_path)
            summary["export"] = {**check_export(final, onnx_path, images), "onnx_file": ONNX_FILE, "int8_file": INT8_FILE}
            summary["quantization"] = quantize_onnx(onnx_path, int8_path, calib, compression.calibration_method)
            macs, params = rows[-1]["macs"], rows[-1]["params"]
            threads = compression.latency_threads
            predicts["ONNX fp32"], predicts["ONNX int8"] = onnx_predict(onnx_path, threads), onnx_predict(int8_path, threads)
            rows.append(_row("exported", "ONNX fp32", macs, params, os.path.getsize(onnx_path),
                             top1(predicts["ONNX fp32"], images, labels)))
            rows.append(_row("after int8", "ONNX int8 (QDQ)", macs, params, os.path.getsize(int8_path),
                             top1(predicts["ONNX int8"], images, labels)))
            summary["int8_agreement"] = compare(torch_predict(final), predicts["ONNX int8"], images)["top1_agreement"]
            for name in (ONNX_FILE, INT8_FILE):
                with open(os.path.join(tmp, name), "rb") as f:
                    files[name] = f.read()
        # Every model in turn, in this process: the ratios to the unpruned student are what carries over.
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(compression.latency_threads)
        try:
            latency = interleaved_latency(predicts, pre.input_size, rounds=compression.latency_rounds)
        finally:
            torch.set_num_threads(torch_threads)
    for row, name in zip(rows, predicts):
        row["latency_b1_ms"], row["latency_b32_ms"] = latency[name]["b1"], latency[name]["b32"]
    summary["latency"] = {"rounds": compression.latency_rounds, "threads": compression.latency_threads,
                          "batch_sizes": [1, 32], "statistic": "median"}
    summary["rows"] = rows
    result = CompressionResult(rows=rows, compression=summary, pruned=pruned, recovered=final if trainer else None)
    if output_dir is not None:
        result.folder = save_compressed(final, output_dir, summary, files, trainer=trainer, report=report)
    return result


def save_compressed(backbone: Backbone, output_dir: str, summary: Dict[str, Any], files: Dict[str, bytes],
                    trainer=None, report: Optional[Dict[str, Any]] = None) -> str:
    """The student's ordinary save plus ``pruning.json`` and the ONNX files, written atomically in one folder."""
    if trainer is not None:
        lineage = trainer.lineage()
    else:
        lineage = {"format_version": 1, "method": {"name": "none (pruned only)"}, "student": model_entry(backbone),
                   "label_names": backbone.label_names, "versions": library_versions()}
    lineage["compression"] = summary
    extra = dict(files)
    extra[PRUNING_FILE] = json.dumps(pruning_record(backbone, report), indent=2).encode("utf-8")
    extra["model.safetensors"] = state_dict_bytes(backbone)  # the live module's names, see state_dict_bytes
    extra["README.md"] = str(create_model_card(lineage)).encode("utf-8")
    return save_student(backbone, output_dir, metadata=lineage, extra_files=extra)


