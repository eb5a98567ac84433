"""``hfkd push FOLDER REPO``: upload a saved student folder to the Hub in one commit (card re-rendered)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..lazy import lazy_function

# The Hub upload's modules import torch: loaded once the settings are parsed,
# so that `hfkd push --help` and a bad option answer without it.
push_to_hub = lazy_function("..hub.push", "push_to_hub", __package__)


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(prog="hfkd push", description=__doc__.split(": ", 1)[1])
    parser.add_argument("folder", help="A folder written by DistillationTrainer.save_model (or hfkd.save_student).")
    parser.add_argument("repo_id", metavar="REPO", help="ORG/NAME of the Hub model repository (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing).")
    parser.add_argument("--create_pr", action="store_true", help="Open a pull request instead of committing.")
    parser.add_argument("--commit_message", default=None, help="The commit message.")
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    info = push_to_hub(a.folder, a.repo_id, private=a.private or None, revision=a.revision, create_pr=a.create_pr,
                       commit_message=a.commit_message)
    print(getattr(info, "commit_url", None) or info)
    return info
