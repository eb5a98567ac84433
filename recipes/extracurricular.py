"""Extracurricular learning (Pouransari et al., CVPRW 2021): ``hfkd distill --method extracurricular``.

    python recipes/extracurricular.py                       # demo: no-KD baseline, classic KD, extracurricular
    python recipes/extracurricular.py --seeds 0 1 2         # the same, mean +- std over seeds, gap closed vs KD
    python recipes/extracurricular.py --regression true     # rotated digits (all 1,437): NLL, point KD, Gaussian KL
    python recipes/extracurricular.py --config recipes/configs/extracurricular_cifar100.yaml --teachers A

What runs per seed (``baseline/``, ``kd/``, ``extracurricular/`` under ``--output_dir``) is described in
hfkd/cli/workflows/extracurricular.py and docs/extracurricular.md.
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Rows of the results table (mean +- std and the gap closed vs KD with several --seeds).
    return distill(argv, method="extracurricular", fixed_method=True, prog="recipes/extracurricular.py")


if __name__ == "__main__":
    main()
