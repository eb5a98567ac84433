"""Wall time of the same short MEAL V2 run with plain ``python`` and with ``accelerate launch`` (1 process).

    python benchmarks/launch_threads.py --rounds 3 --steps 40 [--before PATH_TO_AN_OLDER_CHECKOUT] [--concurrent]

Each round runs every variant once, in turn (interleaved, so load from elsewhere on the machine hits
all of them alike), or with ``--concurrent`` all at the same time (side by side under the same load,
for a machine too busy for sequential rounds); the medians over rounds are printed with the
train-loop time from each run's lineage (``train_runtime_seconds``).  ``--before`` adds the same two runs from another checkout of
hfkd (e.g. the commit before a change), each with its own ``PYTHONPATH``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(root, launcher, steps, out):
    recipe = os.path.join(root, "recipes", "meal_v2.py")
    flags = ["--max_steps", str(steps), "--baseline", "false", "--eval_teachers", "false", "--eval_strategy", "no",
             "--disable_tqdm", "true", "--output_dir", out]
    if launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", recipe, *flags]
    else:
        cmd = [sys.executable, recipe, *flags]
    env = dict(os.environ, PYTHONPATH=root, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("OMP_NUM_THREADS", None)
    # stderr to a file: a pipe nobody reads while polling could fill up and stall the run
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(out + ".err", "w"))


def finish(proc, began, out):
    while proc.poll() is None:  # its own end, not that of the runs started with it
        time.sleep(0.2)
    wall = time.perf_counter() - began
    if proc.returncode:
        raise RuntimeError(open(out + ".err").read()[-2000:])
    with open(os.path.join(out, "student", "hfkd.json")) as f:
        lineage = json.load(f)
    return wall, lineage["train_runtime_seconds"], lineage["hardware"]["torch_threads"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--before", default=None, help="another hfkd checkout to compare with")
    p.add_argument("--concurrent", action="store_true", help="start the variants of a round together")
    a = p.parse_args(argv)
    variants = [("after", ROOT, "python"), ("after", ROOT, "accelerate")]
    if a.before:
        variants = [("before", a.before, "python"), ("before", a.before, "accelerate")] + variants
    results = {(tag, launcher): [] for tag, _, launcher in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            batches = [variants] if a.concurrent else [[v] for v in variants]
            for batch in batches:
                began, running = time.perf_counter(), []
                for tag, root, launcher in batch:
                    out = os.path.join(tmp, f"{tag}-{launcher}-{r}")
                    running.append((tag, launcher, out, start(root, launcher, a.steps, out)))
                while running:  # in the order they end
                    done = next((x for x in running if x[3].poll() is not None), None)
                    if done is None:
                        time.sleep(0.2)
                        continue
                    running.remove(done)
                    tag, launcher, out, proc = done
                    results[(tag, launcher)].append(finish(proc, began, out))
                    print(tag, launcher, r, results[(tag, launcher)][-1], flush=True)
    print("\n| code | launcher | wall (s), median | train loop (s), median | torch threads |")
    print("|---|---|---|---|---|")
    for (tag, launcher), rs in results.items():
        print(f"| {tag} | {launcher} | {statistics.median(w for w, _, _ in rs):.1f} | "
              f"{statistics.median(t for _, t, _ in rs):.1f} | {rs[0][2]} |")


if __name__ == "__main__":
    main()
