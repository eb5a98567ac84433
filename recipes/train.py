"""Supervised training (teachers, no-KD baselines).

    python recipes/train.py                                   # resnet18 on the embedded digits
    accelerate launch recipes/train.py --student convnext_atto --num_train_epochs 8
    python recipes/train.py --config recipes/configs/train_demo.yaml
"""
from dataclasses import dataclass

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE
from hfkd.pipeline import build_student, load_data, run
from hfkd.training.args import DistillationArguments


@dataclass
class SupervisedArguments:
    label_smoothing: float = 0.0


DEFAULTS = dict(student="resnet18", image_size=DEMO_IMAGE_SIZE, output_dir="outputs/train", num_train_epochs=4,
                learning_rate=2e-3, weight_decay=0.05, save_strategy="epoch", aug_scale=list(DEMO_AUGMENT.scale),
                aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)


def main(argv=None):
    model_args, data_args, args, sup = parse_args(
        (ModelArguments, DataArguments, DistillationArguments, SupervisedArguments), argv, defaults=DEFAULTS)
    data = load_data(data_args, seed=args.seed)
    student = build_student(model_args, data, seed=args.seed)
    _, metrics = run(create_method("supervised", label_smoothing=sup.label_smoothing), student, [], data, args, data_args)
    print({k: v for k, v in metrics.items() if k.startswith("eval_")})
    return metrics


if __name__ == "__main__":
    main()
