"""PS-KD (Kim et al., ICCV 2021): the student distils its own predictions of the previous epoch.

    python recipes/pskd.py                     # demo, offline: digits, baseline vs PS-KD, same student
    accelerate launch recipes/pskd.py --config recipes/configs/pskd_preactresnet18_cifar100.yaml
    python benchmarks/self_distillation_seeds.py pskd --seeds 0 1 2    # mean +- std over seeds

No teacher: the targets are (1 - a_t) onehot + a_t p_prev, a_t = alpha_T (t+1)/E, p_prev the
softmax of the image's training pass in the previous epoch (docs/pskd.md).  Any flag
overrides the YAML file.
"""
from dataclasses import dataclass, field

from hfkd import create_method
from hfkd.cli import DataArguments, ModelArguments, parse_args
from hfkd.demo import DEMO_AUGMENT, DEMO_IMAGE_SIZE, DEMO_STUDENT, results_table
from hfkd.pipeline import run_with_baseline, write_results
from hfkd.training.args import DistillationArguments


@dataclass
class PSKDArguments:
    alpha_T: float = field(default=0.8, metadata={"help": "Weight of the past predictions in the last epoch."})
    bank_dtype: str = field(default="float32", metadata={"help": "float32 or float16 (half the N x C bank)."})
    baseline: bool = field(default=True, metadata={"help": "Also train the student with plain CE, for comparison."})


# The embedded demo: digits at 32 px, the demo student from scratch.  PS-KD regularises a whole training
# run: with 8 epochs the student is still underfitting when a_t grows and PS-KD lost 2.9 points (3 seeds);
# 20 epochs let the baseline reach ~99 % first (docs/pskd.md, "Demo").
DEFAULTS = dict(student=DEMO_STUDENT, image_size=DEMO_IMAGE_SIZE, output_dir="outputs/pskd", num_train_epochs=20,
                learning_rate=2e-3, weight_decay=0.05, save_strategy="no", eval_strategy="no",
                aug_scale=list(DEMO_AUGMENT.scale), aug_hflip=DEMO_AUGMENT.hflip,
                aug_color_jitter=DEMO_AUGMENT.color_jitter)


def main(argv=None):
    model_args, data_args, args, pskd = parse_args((ModelArguments, DataArguments, DistillationArguments,
                                                    PSKDArguments), argv, defaults=DEFAULTS)
    if model_args.teachers:
        raise ValueError("PS-KD is self-distillation and takes no --teachers; use recipes/kd.py to distil teachers")
    method = create_method("pskd", alpha_T=pskd.alpha_T, bank_dtype=pskd.bank_dtype)
    rows = run_with_baseline(method, model_args, data_args, args, teacher_paths=[], baseline=pskd.baseline)
    write_results(args.output_dir, results_table(rows), rows)
    return rows


if __name__ == "__main__":
    main()
