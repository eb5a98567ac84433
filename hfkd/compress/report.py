"""The before/after table of a compression run, as Markdown (printed, and in the model card)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

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
    from jinja2 import Template
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "hub", "templates", "compression_section.md.j2")
    with open(path, encoding="utf-8") as f:
        template = Template(f.read(), trim_blocks=True, lstrip_blocks=True)
    return template.render(c=compression, table=compression_table(compression.get("rows") or [])).strip()
