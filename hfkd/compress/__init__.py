"""Compression after distillation: structured pruning, recovery by distillation, int8 quantization, ONNX export.

    result = hfkd.compress_student("outputs/kd/student", data, "outputs/compressed", teachers=[...],
                                   training_args=DistillationArguments(...))
    print(result.table())

See docs/compression.md.  Needs the ``compress`` extra (torch-pruning, onnx, onnxscript, onnxruntime).
"""
from .pipeline import CompressionArguments, CompressionResult, compress_student, recover, save_compressed
from .prune import CompressionError, PruningConfig, count_macs_params, prune_backbone
from .export import export_onnx, quantize_onnx

__all__ = ["CompressionArguments", "CompressionResult", "compress_student", "recover", "save_compressed",
           "CompressionError", "PruningConfig", "count_macs_params", "prune_backbone", "export_onnx", "quantize_onnx"]
