"""Mean +- std over seeds of a self-distillation recipe against its no-KD baseline.

    python benchmarks/self_distillation_seeds.py pskd --seeds 0 1 2
    python benchmarks/self_distillation_seeds.py bake --seeds 0 1 2 --num_train_epochs 8

Runs ``recipes/<method>.py`` once per seed (every other flag is passed to the recipe, so
``--config`` works too), each in ``<output_dir>/seed<k>``, and prints a Markdown table of the
baseline's and the method's top-1, NLL and ECE as mean +- sample std, plus the per-seed differences.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys

from hfkd.results import METRIC_FORMATS, format_metric

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def load_recipe(name: str):
    path = os.path.join(RECIPES, f"{name}.py")
    if not os.path.isfile(path):
        raise SystemExit(f"no recipe {path}; choose pskd or bake")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


METRICS = ("eval_accuracy", "eval_loss", "eval_ece")


def _mean_std(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=["pskd", "bake"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output_dir", default=None)
    known, rest = parser.parse_known_args(argv)
    recipe = load_recipe(known.method)
    root = known.output_dir or f"outputs/{known.method}_seeds"
    names = ("baseline", known.method)
    results = {key: {name: [] for name in names} for key in METRICS}
    for seed in known.seeds:
        rows = recipe.main([*rest, "--seed", str(seed), "--output_dir", os.path.join(root, f"seed{seed}")])
        base = next(r for r in rows if r["role"].startswith("student, no KD"))
        ours = next(r for r in rows if r["role"] == f"student, {known.method}")
        for key in METRICS:
            results[key]["baseline"].append(base[key])
            results[key][known.method].append(ours[key])
    lines = [f"| student | metric | mean ± std over seeds {known.seeds} | per seed |", "|---|---|---|---|"]
    for key in METRICS:
        title = METRIC_FORMATS[key][0]
        base, ours = results[key]["baseline"], results[key][known.method]
        diffs = [b - a for a, b in zip(base, ours)]
        for name, values, signed in (("baseline", base, False), (known.method, ours, False),
                                     (f"{known.method} - baseline", diffs, True)):
            m, s = _mean_std(values)
            per_seed = ", ".join(format_metric(key, v, signed=signed) for v in values)
            lines.append(f"| {name} | {title} | {format_metric(key, m, s, signed=signed)} | {per_seed} |")
    table = "\n".join(lines)
    print("\n" + table + "\n", flush=True)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "seeds.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(root, "seeds.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": known.seeds, **results}, f, indent=2)  # raw values (fractions, nats)
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
