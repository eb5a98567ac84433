"""Card sections that depend on the task and on a classic-KD reference run: regression results, gap closed."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from jinja2 import Template

from ..results import REGRESSION_METRICS, format_metric, gap_closed, metric_titles
from .markdown import code_span, markdown_text


def reference_teacher(lineage: Dict[str, Any]) -> Dict[str, Any]:
    """The metrics of what the student learned from: the teachers' ensemble when there are several."""
    ensemble = lineage.get("ensemble_metrics") or {}
    if ensemble.get("eval_samples"):
        return ensemble
    teachers = lineage.get("teachers") or []
    return (teachers[0].get("metrics") or {}) if teachers else {}


def _regression_table(lineage: Dict[str, Any], baseline, kd_reference) -> str:
    rows: List[tuple] = [(code_span(t.get("name"), in_table=True), f"teacher {i + 1}", t.get("metrics") or {})
                         for i, t in enumerate(lineage.get("teachers") or [])]
    if (lineage.get("ensemble_metrics") or {}).get("eval_samples"):
        rows.append(("moment-matched Gaussian of the teachers", "teacher ensemble", lineage["ensemble_metrics"]))
    name = code_span((lineage.get("student") or {}).get("name"), in_table=True)
    if baseline:
        rows.append((name, "student without distillation (baseline)", baseline))
    if kd_reference:
        rows.append((name, "student, classic KD (reference)", kd_reference))
    rows.append(("**this model**", f"student, {markdown_text((lineage.get('method') or {}).get('name'))}",
                 lineage.get("metrics") or {}))
    lines = ["| model | role | " + " | ".join(metric_titles(REGRESSION_METRICS)) + " |",
             "|---|---|" + "---|" * len(REGRESSION_METRICS)]
    for model, role, m in rows:
        lines.append(f"| {model} | {role} | " + " | ".join(format_metric(k, m.get(k)) for k in REGRESSION_METRICS) + " |")
    task = lineage.get("task") or {}
    note = (f"Errors in the target's units on the evaluation split; NLL is the Gaussian negative log-likelihood of "
            f"the target divided by {markdown_text(task.get('target_scale', 1.0))} (the scale the model predicts in).")
    return "\n".join(lines) + "\n\n" + note


def task_sections(lineage: Dict[str, Any], baseline: Optional[Dict[str, Any]],
                  kd_reference: Optional[Dict[str, Any]]) -> Dict[str, str]:
    """``{title: markdown}``: a regression results table for regression students, and the gap closed vs KD."""
    sections: Dict[str, str] = {}
    regression = (lineage.get("task") or {}).get("name") == "regression"
    if regression:
        sections["Regression results"] = _regression_table(lineage, baseline, kd_reference)
    unlabelled = without_labels_section(lineage)
    if unlabelled:
        sections["Evaluation without labels"] = unlabelled
    if kd_reference:
        key = "eval_mae" if regression else "eval_accuracy"
        teacher = reference_teacher(lineage).get(key)
        mine = (lineage.get("metrics") or {}).get(key)
        gap = gap_closed(mine, kd_reference.get(key), teacher)
        formula = ("(MAE_KD - MAE_this) / (MAE_KD - MAE_teacher)" if regression
                   else "(top1_this - top1_KD) / (top1_teacher - top1_KD)")
        who = "the teachers' ensemble" if len(lineage.get("teachers") or []) > 1 else "the teacher"
        sections["Gap closed vs classic KD"] = (
            f"**{format_metric('gap_closed', gap)} %** of the teacher-student gap that classic KD leaves is closed "
            f"by this model: {formula}, with {key} = {format_metric(key, mine)} (this model), "
            f"{format_metric(key, kd_reference.get(key))} (the same student trained with classic KD) and "
            f"{format_metric(key, teacher)} ({who}).")
    return sections


def without_labels_section(lineage: Dict[str, Any]) -> Optional[str]:
    """What the card says when the eval split had no labels: no accuracy, and why; the agreement and the loss."""
    metrics = lineage.get("metrics") or {}
    if not metrics.get("eval_accuracy_note"):
        return None
    lines = ["Accuracy was **not measured**: the evaluation images have no labels, so the top-1 and top-5 columns "
             "above are empty. What was measured on them instead:", ""]
    teachers = lineage.get("teachers") or []
    for i in range(len(teachers)):
        value = metrics.get(f"eval_agreement_teacher_{i}")
        if value is not None:
            lines.append(f"- top-1 agreement with teacher {i + 1}: {100 * value:.2f} % of the images")
    if metrics.get("eval_agreement") is not None and len(teachers) > 1:
        lines.append(f"- top-1 agreement with the teachers' ensemble (the mean of their probabilities): "
                     f"{100 * metrics['eval_agreement']:.2f} %")
    if metrics.get("eval_distillation_loss") is not None:
        lines.append(f"- the distillation loss: {metrics['eval_distillation_loss']:.4f}")
    if len(lines) == 2:
        lines.append("- nothing: the teachers' outputs were not available at evaluation (a teacher cache holds the "
                     "training views only)")
    lines += ["", "Agreement says how closely the student follows its teachers, not whether either is right: measure "
              "accuracy on a labelled sample before relying on this model."]
    return "\n".join(lines)


# -- compression (hfkd.compress): the before/after table, printed and in the card --------------------------
COLUMNS = ("step", "format", "params", "MACs", "size", "latency b1 (ms)", "latency b32 (ms)", "top-1 (%)")


def _count(n: Optional[float]) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.3f}M" if n >= 1e4 else f"{n:,.0f}"


def _size(n: Optional[int]) -> str:
    return f"{n / 2**20:.2f} MiB" if n else "-"


def _ms(row: Dict[str, Any], key: str, ref: Optional[Dict[str, Any]]) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    base = (ref or {}).get(key)
    return f"{value:.2f} (x{value / base:.3g})" if base and ref is not row else f"{value:.2f}"


def compression_table(rows: Sequence[Dict[str, Any]]) -> str:
    """One row per step; latencies also as a ratio to the first row (measured side by side)."""
    ref = rows[0] if rows else None
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}" if r.get("top1") is not None else "-"
        lines.append(f"| {r['step']} | {r['format']} | {_count(r.get('params'))} | {_count(r.get('macs'))} | "
                     f"{_size(r.get('size_bytes'))} | {_ms(r, 'latency_b1_ms', ref)} | {_ms(r, 'latency_b32_ms', ref)} "
                     f"| {top1} |")
    return "\n".join(lines)


def compression_section(compression: Dict[str, Any]) -> str:
    """The model card's "Compression" section, from ``lineage["compression"]``."""
    path = os.path.join(os.path.dirname(__file__), "templates", "compression_section.md.j2")
    with open(path, encoding="utf-8") as f:
        template = Template(f.read(), trim_blocks=True, lstrip_blocks=True)
    teachers = ", ".join(code_span(t) for t in (compression.get("recovery") or {}).get("teachers") or [])
    return template.render(c=compression, table=compression_table(compression.get("rows") or []),
                           recovery_teachers=teachers).strip()
