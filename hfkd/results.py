"""The metrics that results tables report, and how each is shown (one place for recipes and benchmarks)."""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

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


def results_table(rows: Sequence[Dict[str, Any]]) -> str:
    """A Markdown table of result rows (``hfkd.pipeline.result_row``): top-1, top-5, NLL, ECE, parameters."""
    titles = ["model", "role", *metric_titles(), "params"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [format_metric(key, r.get(key)) for key in RESULT_METRICS]
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
        lines.append(f"| {r['model']} | {r['role']} | {' | '.join(cells)} | {params} |")
    return "\n".join(lines)


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (model, role): the mean and sample standard deviation over seeds."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["role"]), []).append(r)
    out = []
    for (model, role), rs in groups.items():
        row: Dict[str, Any] = {"model": model, "role": role, "params": rs[0]["params"], "runs": len(rs),
                               "seeds": sorted({r["seed"] for r in rs})}
        for key in RESULT_METRICS:
            values = [r[key] for r in rs if r.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def summary_table(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize` rows: mean ± std per metric and the number of runs."""
    titles = ["model", "role", *metric_titles(), "runs"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [format_metric(key, r[key], r[key + "_std"]) for key in RESULT_METRICS]
        lines.append(f"| {r['model']} | {r['role']} | {' | '.join(cells)} | {r['runs']} |")
    return "\n".join(lines)
