"""Two processes call write_results without an accelerator, as the recipes do (test_reliability_ddp.py)."""
import sys

from accelerate import PartialState

from hfkd.pipeline import write_results

if __name__ == "__main__":
    state = PartialState(cpu=True)  # what the trainer's Accelerator sets up in a recipe on a CPU
    write_results(sys.argv[1], "RESULTS-TABLE", [{"rank": state.process_index}])
    state.wait_for_everyone()
