"""Label names given by the user (``--label_names``, a list or a file with one name per line), and their checks.

Data without a label column (a flat folder of photos, a Parquet file with only images) has no class names; a
zero-shot teacher needs them to write its prompts and the student needs their count for its head.  They come from
here, from the dataset's label column, or from a teacher's config (:data:`LABEL_SOURCES`).  Imports no torch: the
command line reads the names while it parses.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from ..settings import shorten

#: where a run's label names come from, as the dry run and the start banner say it
FROM_DATASET = "the dataset's label column"
FROM_OPTION = "--label_names"
FROM_TEACHER = "the teacher's config"


def read_label_names(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``--label_names`` as a list: the names themselves, or one existing file holding one name per line.

    Blank lines and the spaces around a name are ignored (a file saved with a final newline, or by Windows).
    ``None`` or an empty list: not given.
    """
    if values is None:
        return None
    if isinstance(values, str):  # YAML `label_names: labels.txt`
        values = [values]
    values = list(values)
    if not values:
        return None
    if len(values) == 1 and os.path.isfile(str(values[0])):
        path = str(values[0])
        try:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise ValueError(f"--label_names file {shorten(path)} is not UTF-8 text ({e}); save it as UTF-8 with one "
                             "label name per line") from None
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise ValueError(f"--label_names file {shorten(path)} holds no label name; write one name per line")
        return check_label_names(names, f"--label_names file {shorten(path)}")
    if len(values) == 1:  # most likely a file name with a typo: one class is no classification
        raise ValueError(f"--label_names gives one name, {shorten(values[0])}, and no file of that name exists; give "
                         "every class's name (at least two), or the path of a file with one name per line")
    return check_label_names([str(v).strip() for v in values], "--label_names")


def check_label_names(names: Sequence[str], where: str = "--label_names",
                      num_classes: Optional[int] = None, classes_of: str = "") -> List[str]:
    """Non-empty, each name non-blank, no name twice, and (when ``num_classes`` is known) one name per class."""
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"{where} is empty: give one name per class, e.g. --label_names cat dog 'red fox', or a "
                         "file with one name per line")
    blank = [i for i, n in enumerate(names) if not n.strip()]
    if blank:
        raise ValueError(f"{where}: name {blank[0]} is blank; every class needs a name")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where} names {shorten(repeated)} more than once; each class needs its own name (a "
                         "zero-shot teacher would score repeated names alike)")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{where} gives {len(names)} names but {classes_of or 'the model'} has {num_classes} "
                         f"classes; give one name per class, in the order of its outputs")
    return names
