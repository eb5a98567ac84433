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
    "eval_mae": ("MAE", 1, 3),
    "eval_rmse": ("RMSE", 1, 3),
    "gap_closed": ("gap closed vs KD (%)", 100, 1),
    # evaluation without labels (hfkd.tasks.evaluation.evaluate_agreement)
    "eval_agreement": ("top-1 agreement with the teachers (%)", 100, 2),
    "eval_distillation_loss": ("distillation loss", 1, 4),
}
RESULT_METRICS = ("eval_accuracy", "eval_top5_accuracy", "eval_loss", "eval_ece")
REGRESSION_METRICS = ("eval_mae", "eval_rmse", "eval_loss")
#: the results of a run whose eval split has no labels: no accuracy, the student against its teachers
UNLABELLED_METRICS = ("eval_agreement", "eval_distillation_loss")


def format_metric(key: str, value: Optional[float], std: Optional[float] = None, signed: bool = False) -> str:
    """``value`` (and ``± std``) of metric ``key`` in its table units; ``-`` when it was not measured."""
    if value is None:
        return "-"
    _, factor, decimals = METRIC_FORMATS[key]
    text = f"{factor * value:{'+' if signed else ''}.{decimals}f}"
    return text if std is None else f"{text} ± {factor * std:.{decimals}f}"


def metric_titles(keys=RESULT_METRICS) -> list:
    return [METRIC_FORMATS[k][0] for k in keys]


def results_table(rows: Sequence[Dict[str, Any]], keys: Sequence[str] = RESULT_METRICS) -> str:
    """A Markdown table of result rows (``hfkd.cli.pipeline.result_row``): the metrics ``keys`` (top-1, top-5, NLL,
    ECE by default), the gap closed vs KD when a row has one, and parameters."""
    gap = ("gap_closed",) if any(r.get("gap_closed") is not None for r in rows) else ()
    return markdown_table(rows, tuple(keys) + gap)


def gap_closed(method: Optional[float], kd: Optional[float], teacher: Optional[float]) -> Optional[float]:
    """The share of the teacher-student gap left by classic KD that a method closes: ``(m - kd) / (teacher - kd)``.

    The same number for accuracy-like and error metrics (for an error, ``(kd - m) / (kd - teacher)`` is this
    ratio with both signs flipped).  1 = the method reaches the teacher, 0 = no better than KD, negative =
    worse.  ``None`` when a value is missing or KD already matches the teacher.
    """
    if method is None or kd is None or teacher is None or teacher == kd:
        return None
    return (method - kd) / (teacher - kd)


def summarize_seeds(rows: Sequence[Dict[str, Any]], keys: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per (model, role): mean and sample standard deviation over the rows' ``seed``s of each key."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["role"]), []).append(r)
    out = []
    for (model, role), rs in groups.items():
        row: Dict[str, Any] = {"model": model, "role": role, "params": rs[0].get("params"), "runs": len(rs),
                               "seeds": sorted({r["seed"] for r in rs})}
        for key in keys:
            values = [r[key] for r in rs if r.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(row)
    return out


def markdown_table(rows: Sequence[Dict[str, Any]], keys: Sequence[str], extra: Sequence[str] = ("params",)) -> str:
    """Rows as a Markdown table: model, role, each metric (``± std`` when the row has ``<key>_std``), extras."""
    titles = ["model", "role", *metric_titles(keys), *extra]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for r in rows:
        cells = [format_metric(k, r.get(k), r.get(k + "_std")) for k in keys]
        for e in extra:
            v = r.get(e)
            if e == "params":
                cells.append(f"{v / 1e6:.2f}M" if v else "-")
            else:
                cells.append("-" if v is None else str(v))
        lines.append(f"| {r['model']} | {r['role']} | {' | '.join(cells)} |")
    return "\n".join(lines)
