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

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def load_recipe(name: str):
    path = os.path.join(RECIPES, f"{name}.py")
    if not os.path.isfile(path):
        raise SystemExit(f"no recipe {path}; choose pskd or bake")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# table name: (result key, factor, decimals)
METRICS = {"top-1 (%)": ("eval_accuracy", 100, 2), "NLL": ("eval_loss", 1, 3), "ECE (%)": ("eval_ece", 100, 2)}


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
    results = {metric: {name: [] for name in names} for metric in METRICS}
    for seed in known.seeds:
        rows = recipe.main([*rest, "--seed", str(seed), "--output_dir", os.path.join(root, f"seed{seed}")])
        base = next(r for r in rows if r["role"].startswith("student, no KD"))
        ours = next(r for r in rows if r["role"] == f"student, {known.method}")
        for metric, (key, scale, _) in METRICS.items():
            results[metric]["baseline"].append(scale * base[key])
            results[metric][known.method].append(scale * ours[key])
    lines = [f"| student | metric | mean ± std over seeds {known.seeds} | per seed |", "|---|---|---|---|"]
    for metric, (_, _, digits) in METRICS.items():
        per_name = results[metric]
        diffs = [b - a for a, b in zip(per_name["baseline"], per_name[known.method])]
        for name, values in (*per_name.items(), (f"{known.method} - baseline", diffs)):
            m, s = _mean_std(values)
            sign = "+" if name.endswith("baseline") and name != "baseline" else ""
            lines.append(f"| {name} | {metric} | {m:{sign}.{digits}f} ± {s:.{digits}f} | "
                         f"{', '.join(f'{v:{sign}.{digits}f}' for v in values)} |")
    table = "\n".join(lines)
    print("\n" + table + "\n", flush=True)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "seeds.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(root, "seeds.json"), "w", encoding="utf-8") as f:
        json.dump({"seeds": known.seeds, **results}, f, indent=2)
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
