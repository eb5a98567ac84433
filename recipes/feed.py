"""FEED (Park & Kwak, 2019): parallel FEED from several teachers, and sequential (Born-Again style) FEED.

    python recipes/feed.py                     # demo: baseline vs pFEED (2 teachers) vs 2 sFEED generations
    python recipes/feed.py --seeds 0 1 2       # the same, mean +- std over 3 seeds
    python recipes/feed.py --config recipes/configs/feed_resnet56_cifar100.yaml
    accelerate launch recipes/feed.py --student resnet18 --teachers org/resnet50-ft org/convnext-ft --generations 0

The same as ``hfkd distill --method feed``.  What runs per seed (``baseline/``, ``parallel/``,
``generation_{g}/`` under ``--output_dir``) is described in hfkd/cli/workflows/feed.py and docs/feed.md.
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Rows of the results table (mean +- std with several --seeds).
    return distill(argv, method="feed", fixed_method=True, prog="recipes/feed.py")


if __name__ == "__main__":
    main()
