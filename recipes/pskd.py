"""PS-KD (Kim et al., ICCV 2021): the student distils its own predictions of the previous epoch.

    python recipes/pskd.py                     # demo, offline: digits, baseline vs PS-KD, same student
    accelerate launch recipes/pskd.py --config recipes/configs/pskd_preactresnet18_cifar100.yaml
    python recipes/pskd.py --config recipes/configs/pskd_preactresnet18_cifar100.yaml --dry_run
    python benchmarks/self_distillation_seeds.py pskd --seeds 0 1 2    # mean +- std over seeds

No teacher: the targets are (1 - a_t) onehot + a_t p_prev, a_t = alpha_T (t+1)/E, p_prev the
softmax of the image's training pass in the previous epoch (docs/pskd.md).  The same as
``hfkd distill --method pskd``; any flag overrides the YAML file.
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Baseline + PS-KD student, results table in --output_dir.
    return distill(argv, method="pskd", fixed_method=True, prog="recipes/pskd.py")


if __name__ == "__main__":
    main()
