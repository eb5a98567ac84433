"""The entries of ``hfkd benchmark --methods`` that are no method's name, known without loading torch.

``hfkd/cli/benchmarking.py`` runs each (its ``ENTRIES``); ``hfkd/cli/benchmark.py`` accepts their names.
"""
from __future__ import annotations

from ..methods.registry import get_method_class

#: entry -> whether its runs learn from the fold's (or the user's) teachers
WORKFLOW_ENTRIES = {
    "feed_sequential": False,  # generation 1 learns from the baseline, generation g + 1 from generation g
    "extracurricular_regression": False,  # the rotation demo, with its own teachers trained per fold
    "compress": True,  # the KD student, pruned, recovered by KD from the teachers vs by plain fine-tuning
}


def entry_reads_teachers(entry: str, required: bool = False) -> bool:
    """Whether an entry's runs learn from the fold's (or the user's) teachers; ``required``: cannot run without."""
    if entry in WORKFLOW_ENTRIES:
        return WORKFLOW_ENTRIES[entry]
    cls = get_method_class(entry)
    return cls.min_teachers > 0 if required else cls.max_teachers != 0
