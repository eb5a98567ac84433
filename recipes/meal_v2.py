"""MEAL V2 (Shen & Savvides, 2020): distil an ensemble's averaged probabilities, no hard labels, + discriminator.

    python recipes/meal_v2.py                 # demo, offline: cached digit teachers, baseline vs MEAL V2 student
    accelerate launch recipes/meal_v2.py --config recipes/configs/meal_v2_resnet50_imagenet.yaml
    python recipes/meal_v2.py --teachers resnet18 convnext_atto --student resnet10t --use_discriminator false
    python recipes/meal_v2.py --teacher_cache outputs/teacher_cache   # no teacher run: see recipes/cache_teachers.py

The same as ``hfkd distill --method meal_v2``.  Any flag overrides the YAML file.  The paper's
student starts from pretrained weights, which the paper calls critical: ``--student_pretrained true``
loads timm's / the Hub's weights, or a folder's with ``--student path/to/trained/student --student_pretrained true``.

The demo downloads nothing, so its "pretrained" student is the demo student trained with
cross-entropy on the digits (cached like the demo teachers).  From that same initialisation it
fine-tunes twice with the same budget: with cross-entropy (the baseline row) and with MEAL V2.
"""
from hfkd.cli.distill import main as distill


def main(argv=None):
    # Baseline + MEAL V2 student, results table in --output_dir.
    return distill(argv, method="meal_v2", fixed_method=True, prog="recipes/meal_v2.py")


if __name__ == "__main__":
    main()
