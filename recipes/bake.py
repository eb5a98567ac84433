"""BAKE (Ge et al., 2021): self-distillation from the batch's own knowledge ensemble, class-aware batches.

    python recipes/bake.py                     # demo, offline: digits, baseline vs BAKE, same student
    accelerate launch recipes/bake.py --config recipes/configs/bake_resnet50_imagenet.yaml
    python benchmarks/self_distillation_seeds.py bake --seeds 0 1 2    # mean +- std over seeds

The same as ``hfkd distill --method bake``.  ``per_device_train_batch_size`` is BAKE's batch:
``B / (M + 1)`` anchors, each with ``M`` same-class partners.  The baseline is trained as the paper
compares (``--baseline_protocol``, see hfkd/cli/workflows/bake.py and docs/bake.md).
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Baseline (by its protocol) + BAKE student, results table in --output_dir.
    return distill(argv, method="bake", fixed_method=True, prog="recipes/bake.py")


if __name__ == "__main__":
    main()
