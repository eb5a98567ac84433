"""MEAL V2 (Shen & Savvides, 2020): distil an ensemble's averaged probabilities, no hard labels, + discriminator.

    python recipes/meal_v2.py                 # demo, offline: cached digit teachers, baseline vs MEAL V2 student
    accelerate launch recipes/meal_v2.py --config recipes/configs/meal_v2_resnet50_imagenet.yaml
    python recipes/meal_v2.py --teachers resnet18 convnext_atto --student resnet10t --use_discriminator false
    python recipes/meal_v2.py --teacher_cache outputs/teacher_cache   # no teacher run: see recipes/cache_teachers.py

Any flag overrides the YAML file.  The paper's student starts from pretrained weights, which the
paper calls critical: ``--student_pretrained true`` loads timm's / the Hub's weights, or a folder's
with ``--student path/to/trained/student --student_pretrained true``.

The demo downloads nothing, so its "pretrained" student is the demo student trained with
cross-entropy on the digits (cached like the demo teachers).  From that same initialisation it
fine-tunes twice with the same budget: with cross-entropy (the baseline row) and with MEAL V2.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_STUDENT, demo_teachers, results_table
from hfkd.pipeline import load_data, run_with_baseline, write_results
from hfkd.training.args import DistillationArguments


@dataclass
class MEALv2Arguments:
    use_discriminator: bool = field(default=True, metadata={"help": "Add the discriminator loss (official: yes)."})
    discriminator_weight: float = field(default=1.0, metadata={"help": "Weight of the discriminator loss."})
    discriminator_reduction: int = field(default=8, metadata={"help": "Width reduction of D's layers: C -> C/r -> C/r^2 -> 2."})
    discriminator_lr: Optional[float] = field(
        default=None, metadata={"help": "D's learning rate; default: the student's (what the official code ran)."})
    hard_label_weight: float = field(default=0.0, metadata={"help": "Extra CE on true labels (paper: 0, none)."})
    baseline: bool = field(default=True, metadata={"help": "Also train the student without KD, for comparison."})


# The embedded demo: digits at 32 px, the cached demo teachers, the demo student fine-tuned from its cached
# supervised weights.  Fine-tuning gets half the from-scratch learning rate of the other demos.  The crops are
# stronger than the demo teachers' (scale 0.25-1 instead of 0.6-1): the paper trains with RandomResizedCrop
# (0.08-1), where the teachers' soft labels describe what is left in the crop and the hard label may not.
DEFAULTS = dict(student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, output_dir="outputs/meal_v2", num_train_epochs=6,
                learning_rate=1e-3, weight_decay=0.05, save_strategy="no", aug_scale=[0.25, 1.0],
                aug_hflip=DEMO_AUGMENT.hflip, aug_color_jitter=DEMO_AUGMENT.color_jitter)


def main(argv=None):
    model_args, data_args, args, meal = parse_args(
        (ModelArguments, DataArguments, DistillationArguments, MEALv2Arguments), argv, defaults=DEFAULTS)
    teachers = model_args.teachers
    if not teachers:  # the demo (from a teacher cache: no teacher is loaded, only the student's initialisation)
        data = load_data(data_args, seed=args.seed)
        teachers = [] if args.teacher_cache else demo_teachers(data)
        if model_args.student == DEMO_STUDENT and not model_args.student_pretrained:
            # MEAL V2 starts from a trained student: the demo's stand-in for timm's pretrained weights.
            (initialisation,) = demo_teachers(data, names=[DEMO_STUDENT], seed=0)
            model_args = dataclasses.replace(model_args, student=initialisation, student_pretrained=True)
    method = create_method("meal_v2", use_discriminator=meal.use_discriminator,
                           discriminator_weight=meal.discriminator_weight,
                           discriminator_reduction=meal.discriminator_reduction,
                           discriminator_lr=meal.discriminator_lr, hard_label_weight=meal.hard_label_weight)
    rows = run_with_baseline(method, model_args, data_args, args, teachers, baseline=meal.baseline)
    write_results(args.output_dir, results_table(rows), rows)
    return rows


if __name__ == "__main__":
    main()
