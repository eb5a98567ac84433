"""ONNX export and int8 static quantization with ONNX Runtime, both checked against PyTorch.

The export uses torch's maintained (dynamo) ONNX exporter; the int8 model is
ONNX Runtime's static post-training quantization in QDQ form with per-channel
int8 weights and uint8 activations, calibrated on training images.  The files
run with ``onnxruntime`` alone: no torch, timm, transformers or hfkd.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

from .measure import Predict, torch_predict
from .prune import CompressionError, LogitsModule

INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
# fp32 ONNX vs PyTorch: the same arithmetic in another order, so only rounding differs.
EXPORT_ATOL = 1e-4


def export_onnx(backbone, path: str, opset: int = 18) -> str:
    """Write ``backbone`` (pixel_values -> logits, dynamic batch) to ``path``; the model is left as it was."""
    was_training = backbone.training
    backbone.eval()
    example = torch.randn(2, *backbone.preprocess.input_size)
    try:
        program = torch.onnx.export(
            LogitsModule(backbone).eval(), (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1)}}, opset_version=opset,
            dynamo=True, external_data=False, verbose=False)
        program.save(path)
    except Exception as e:  # noqa: BLE001 - the exporter's own errors are long; keep the first line and the cause
        raise CompressionError(
            f"cannot export {backbone.name} to ONNX ({type(e).__name__}: {str(e).strip().splitlines()[0]}). "
            "Usually Python control flow on tensor values or an operator ONNX lacks; nothing was written "
            "and the model is unchanged") from e
    finally:
        backbone.train(was_training)
    return path


def onnx_predict(path: str, threads: Optional[int] = None) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: spinning ORT threads starve PyTorch (and everyone else) on a shared CPU,
    # which made the side-by-side latency of the PyTorch rows ~1000x too slow.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def compare(reference: Predict, candidate: Predict, images: np.ndarray) -> Dict[str, float]:
    """Largest absolute logit difference and top-1 agreement of two models on ``images``."""
    a, b = reference(images), candidate(images)
    return {"max_abs_diff": float(np.abs(a - b).max()), "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).mean())}


def check_export(backbone, path: str, images: np.ndarray, atol: float = EXPORT_ATOL) -> Dict[str, float]:
    """The exported file must give the PyTorch logits within ``atol``; else :class:`CompressionError`."""
    result = compare(torch_predict(backbone), onnx_predict(path), images)
    if result["max_abs_diff"] > atol:
        raise CompressionError(f"{path} differs from PyTorch by {result['max_abs_diff']:.2e} > {atol:.0e}")
    return {**result, "atol": atol}


class _Calibration:
    """ONNX Runtime's calibration reader protocol over an array of preprocessed training images."""

    def __init__(self, images: np.ndarray, batch_size: int = 32):
        self.batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> Optional[Dict[str, Any]]:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self):  # not needed: calibrated once
        pass


def quantize_onnx(fp32_path: str, int8_path: str, calibration_images: np.ndarray,
                  method: str = "minmax") -> Dict[str, Any]:
    """Static int8 quantization of ``fp32_path`` into ``int8_path``; returns the settings used."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_images) == 0:
        raise ValueError("int8 calibration needs training images; got none")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)} (got {method!r})")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        try:
            quant_pre_process(fp32_path, prepared)  # shape inference + graph clean-up, as ORT recommends
            quantize_static(prepared, int8_path, _Calibration(calibration_images), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method])
        except Exception as e:  # noqa: BLE001
            if os.path.exists(int8_path):
                os.remove(int8_path)  # our own partial output
            raise CompressionError(f"ONNX Runtime could not quantize {fp32_path}: {type(e).__name__}: {e}") from e
    return {"library": "onnxruntime", "format": "QDQ", "weights": "int8, per channel", "activations": "uint8, per tensor",
            "calibration": method, "calibration_images": int(len(calibration_images))}
