"""The trainer's side of the bad-image policy (``on_bad_image``, ``verify_images``; docs/reliability.md).

The data side (reading, naming and skipping an image) is :mod:`hfkd.data.checks`; here the splits are
verified before training and the skipped images are logged and summarised for the lineage.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from ..data.checks import BadImageError, bad_images_error, verify_images
from .callbacks import TrainerCallback

logger = logging.getLogger(__name__)
# How many bad images a log line or the lineage names (all are counted).
LISTED = 100


def verify_splits(train, evaluation, image_column: str, policy: str) -> Tuple[Any, Any, Dict[str, List[BadImageError]]]:
    """Check every image header of both splits; raise listing the bad ones, or return the splits without them."""
    found: Dict[str, List[BadImageError]] = {}
    splits = {"train": train, "eval": evaluation}
    for name, split in splits.items():
        if split is None:
            continue
        bad = verify_images(split, image_column, name)
        if not bad:
            continue
        if policy != "skip":
            raise bad_images_error(bad, name)
        found[name] = bad
        rows = {b.row for b in bad}
        if len(rows) == len(split):
            raise ValueError(f"no image of the {name} split can be read ({len(split)} rows): " + str(bad[0]))
        splits[name] = split.select([i for i in range(len(split)) if i not in rows])
        logger.warning("verify_images: %d bad image(s) of the %s split left out before training: %s", len(bad), name,
                       "; ".join(f"row {b.row} ({b.file})" for b in bad[:10]) + (" ..." if len(bad) > 10 else ""))
    return splits["train"], splits["eval"], found


def _entries(rows, files) -> List[Dict[str, Any]]:
    return [{"row": int(r), "file": f} for r, f in zip(rows, files)]


def bad_image_summary(trainer) -> Optional[Dict[str, Any]]:
    """For the lineage: the policy, and per split the images left out by the verification and skipped in training."""
    args = trainer.args
    verified = getattr(trainer, "verified_bad_images", {}) or {}
    out: Dict[str, Any] = {"on_bad_image": args.on_bad_image, "verify_images": args.verify_images}
    for name, dataset in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset)):
        skipped = dataset.bad_rows if dataset is not None and getattr(dataset, "on_bad_image", None) == "skip" else []
        before = verified.get(name, [])
        if skipped or before:
            out[name] = {
                "left_out_by_verification": len(before),
                "skipped_while_reading": len(skipped),
                "verification": [{"row": b.row, "file": b.file, "reason": b.reason} for b in before[:LISTED]],
                # rows of the split as trained on (after the verification left its bad rows out)
                "skipped": _entries(skipped[:LISTED], dataset.bad_row_files(skipped[:LISTED])),
            }
    return out


class BadImageLog(TrainerCallback):
    """Log the images skipped while reading (``on_bad_image="skip"``), in every split, as soon as they are met."""

    def __init__(self):
        self.reported: Dict[str, set] = {}

    def _report(self, trainer, *unused) -> None:
        for name, dataset in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset)):
            if dataset is None or getattr(dataset, "on_bad_image", None) != "skip":
                continue
            rows = dataset.bad_rows
            seen = self.reported.setdefault(name, set())
            new = [r for r in rows if r not in seen]
            if not new:
                continue
            seen.update(new)
            if trainer.accelerator.is_main_process:
                files = dataset.bad_row_files(new[:10])
                logger.warning("on_bad_image='skip': %d unreadable %s image(s) skipped so far; new: %s", len(rows),
                               name, "; ".join(f"row {r} ({f})" for r, f in zip(new, files))
                               + (" ..." if len(new) > 10 else ""))
            trainer._log({f"{name}_bad_images_skipped": len(rows)})

    def on_step_end(self, trainer) -> None:
        # Finding the marked rows reads one flag per row: at logging steps only, not every step.
        if trainer.state.global_step % trainer.args.logging_steps == 0:
            self._report(trainer)

    on_evaluate = on_epoch_end = on_train_end = _report
