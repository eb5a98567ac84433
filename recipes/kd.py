"""Classic knowledge distillation (Hinton et al., 2015): ``hfkd distill --method kd``.

    python recipes/kd.py                      # demo: cached digit teachers, baseline vs KD student
    accelerate launch recipes/kd.py --teachers resnet18 --student resnet10t --temperature 4 --alpha 0.9
    python recipes/kd.py --dry_run            # the resolved settings, model sizes and step counts
    python recipes/kd.py --teacher_cache outputs/teacher_cache   # no teacher run: see recipes/cache_teachers.py
    python recipes/kd.py --help               # every option, grouped: model, data, training, method, run

The loss is ``(1 - alpha) CE + alpha T^2 KL(p_teachers || softmax(z_s / T))`` (docs/methods.md).
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Baseline + KD student, results table in --output_dir.
    return distill(argv, method="kd", fixed_method=True, prog="recipes/kd.py")


if __name__ == "__main__":
    main()
