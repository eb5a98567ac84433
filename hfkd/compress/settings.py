"""The settings of compression (``hfkd compress``): pruning and what follows it, in a module that imports no torch.

The command line builds ``hfkd compress --help`` and parses these before torch, torch-pruning or ONNX load;
:mod:`hfkd.compress.prune` and :mod:`hfkd.compress.pipeline` use them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

CRITERIA = ("l1", "l2", "taylor", "fpgm", "lamp", "random")
TARGETS = ("macs", "params")


@dataclass
class PruningConfig:
    target: str = field(default="macs", metadata={"help": f"What to shrink to target_ratio: one of {TARGETS}."})
    target_ratio: float = field(default=0.5, metadata={"help": "Fraction of the MACs (or params) to keep, in (0, 1)."})
    criterion: str = field(default="l2", metadata={
        "help": f"Channel importance: one of {CRITERIA} (l1/l2: weight magnitude; taylor: |weight x gradient| on a "
                "batch of training images; fpgm: geometric median; lamp: layer-adaptive magnitude)."})
    global_pruning: bool = field(default=False, metadata={
        "help": "Rank channels across all layers (uneven widths) instead of the same ratio in every layer."})
    max_layer_ratio: float = field(default=0.9, metadata={"help": "Most any one layer may lose, in (0, 1)."})
    search_steps: int = field(default=6, metadata={
        "help": "Bisection steps for the per-layer ratio that just meets the target (each prunes a fresh copy)."})
    prune_heads: bool = field(default=True, metadata={
        "help": "Remove whole attention heads of transformers models (their head size is kept)."})
    ignored_layers: List[str] = field(default_factory=list, metadata={
        "help": "Module names never pruned (the classifier always is)."})
    round_to: Optional[int] = field(default=None, metadata={"help": "Keep channel counts multiples of this."})

    def __post_init__(self):
        problems = []
        if self.target not in TARGETS:
            problems.append(f"target must be one of {TARGETS} (got {self.target!r})")
        if not 0 < self.target_ratio < 1:
            problems.append(f"target_ratio is the fraction to keep and must be in (0, 1) (got {self.target_ratio})")
        if self.criterion not in CRITERIA:
            problems.append(f"criterion must be one of {CRITERIA} (got {self.criterion!r})")
        if not 0 < self.max_layer_ratio < 1:
            problems.append(f"max_layer_ratio must be in (0, 1) (got {self.max_layer_ratio})")
        if self.search_steps < 0:
            problems.append(f"search_steps must be >= 0 (got {self.search_steps})")
        if problems:
            raise ValueError("invalid pruning settings: " + "; ".join(problems))


@dataclass
class CompressionArguments:
    recovery_method: str = field(default="kd", metadata={
        "help": "hfkd method that fine-tunes the pruned student (kd, meal_v2, supervised, ...)."})
    quantize: bool = field(default=True, metadata={"help": "Export to ONNX and quantize to int8 (onnxruntime)."})
    calibration_samples: int = field(default=256, metadata={"help": "Training images that calibrate int8 ranges."})
    calibration_method: str = field(default="minmax", metadata={"help": "minmax, entropy or percentile."})
    latency_rounds: int = field(default=30, metadata={"help": "Rounds of the side-by-side latency measurement."})
    latency_threads: int = field(default=1, metadata={
        "help": "CPU threads of PyTorch and ONNX Runtime while timing (1: stable on a shared machine, where two "
                "OpenMP threads can wait on each other for seconds)."})

    def __post_init__(self):
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1 (got {self.calibration_samples})")
        if self.latency_threads < 1:
            raise ValueError(f"latency_threads must be >= 1 (got {self.latency_threads})")
        if self.latency_rounds < 1:
            raise ValueError(f"latency_rounds must be >= 1 (got {self.latency_rounds})")
