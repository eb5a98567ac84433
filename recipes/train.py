"""Supervised training (teachers, no-KD baselines): ``hfkd train``.

    python recipes/train.py                                   # cifar_resnet20 on the embedded digits
    accelerate launch recipes/train.py --student convnext_atto --num_train_epochs 8
    python recipes/train.py --dataset path/to/imagefolder --student resnet18 --dry_run
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Eval metrics; the model in --output_dir/student.
    return distill(argv, method="supervised", fixed_method=True, prog="recipes/train.py")


if __name__ == "__main__":
    main()
