"""Compression after distillation: structured pruning, recovery by distillation, int8 quantization, ONNX export.

    result = hfkd.compress_student("outputs/kd/student", data, "outputs/compressed", teachers=[...],
                                   training_args=DistillationArguments(...))
    print(result.table())

See docs/compression.md.  Needs the ``compress`` extra (torch-pruning, onnx, onnxscript, onnxruntime).
"""
from ..lazy import lazy_exports

# Names load on first use: the settings (hfkd.compress.settings) import no torch, the rest torch and the extra.
_EXPORTS = {
    "CompressionArguments": ".settings", "PruningConfig": ".settings",
    "CompressionResult": ".pipeline", "compress_student": ".pipeline", "recover": ".pipeline",
    "save_compressed": ".pipeline", "CompressionError": ".prune", "count_macs_params": ".prune",
    "prune_backbone": ".prune", "export_onnx": ".export", "quantize_onnx": ".export",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
