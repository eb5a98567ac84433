"""Two processes call write_results without an accelerator, as the recipes do (test_reliability_ddp.py).

With ``before`` as the second argument, nothing of Accelerate is set up first: the helper that answers
"which process am I" must still find the launcher's ranks.
"""
import os
import sys

from accelerate import PartialState

from hfkd.cli.pipeline import write_results

if __name__ == "__main__":
    before = sys.argv[2:] == ["before"]
    if not before:
        PartialState(cpu=True)  # what the trainer's Accelerator sets up in a recipe on a CPU
    # The launcher's rank, read from its variable so that the row itself sets nothing of Accelerate up.
    write_results(sys.argv[1], "RESULTS-TABLE", [{"rank": int(os.environ["RANK"])}])
    PartialState().wait_for_everyone()
