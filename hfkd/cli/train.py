"""``hfkd train [options]``: supervised training (teachers, baselines); ``hfkd distill --method supervised``."""
from typing import List, Optional

from .distill import main as distill_main


def main(argv: Optional[List[str]] = None):
    return distill_main(argv, method="supervised", fixed_method=True, prog="hfkd train")
