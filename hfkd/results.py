"""The metrics that results tables report, and how each is shown (one place for recipes and benchmarks)."""
from __future__ import annotations

from typing import Optional

# key -> (column title, factor, decimals): accuracies and ECE in percent, the NLL as it is.
METRIC_FORMATS = {
    "eval_accuracy": ("top-1 (%)", 100, 2),
    "eval_top5_accuracy": ("top-5 (%)", 100, 2),
    "eval_loss": ("NLL", 1, 3),
    "eval_ece": ("ECE (%)", 100, 2),
}
RESULT_METRICS = tuple(METRIC_FORMATS)


def format_metric(key: str, value: Optional[float], std: Optional[float] = None, signed: bool = False) -> str:
    """``value`` (and ``± std``) of metric ``key`` in its table units; ``-`` when it was not measured."""
    if value is None:
        return "-"
    _, factor, decimals = METRIC_FORMATS[key]
    text = f"{factor * value:{'+' if signed else ''}.{decimals}f}"
    return text if std is None else f"{text} ± {factor * std:.{decimals}f}"


def metric_titles(keys=RESULT_METRICS) -> list:
    return [METRIC_FORMATS[k][0] for k in keys]
