"""Classic knowledge distillation (Hinton et al., 2015).

    python recipes/kd.py                      # demo: cached digit teachers, baseline vs KD student
    accelerate launch recipes/kd.py --teachers resnet18 --student resnet10t --temperature 4 --alpha 0.9
    python recipes/kd.py --teacher_cache outputs/teacher_cache   # no teacher run: see recipes/cache_teachers.py
"""
from dataclasses import dataclass

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_STUDENT, demo_teachers, results_table
from hfkd.pipeline import load_data, run_with_baseline, write_results
from hfkd.training.args import DistillationArguments


@dataclass
class KDArguments:
    temperature: float = 4.0
    alpha: float = 0.9
    baseline: bool = True


DEFAULTS = dict(student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, output_dir="outputs/kd", num_train_epochs=4,
                learning_rate=2e-3, weight_decay=0.05, save_strategy="no", aug_scale=list(DEMO_AUGMENT.scale),
                aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)


def main(argv=None):
    model_args, data_args, args, kd = parse_args((ModelArguments, DataArguments, DistillationArguments, KDArguments),
                                                 argv, defaults=DEFAULTS)
    teachers = model_args.teachers
    if not teachers and not args.teacher_cache:  # the demo
        teachers = demo_teachers(load_data(data_args, seed=args.seed))
    method = create_method("kd", temperature=kd.temperature, alpha=kd.alpha)
    rows = run_with_baseline(method, model_args, data_args, args, teachers, baseline=kd.baseline)
    write_results(args.output_dir, results_table(rows), rows)
    return rows


if __name__ == "__main__":
    main()
