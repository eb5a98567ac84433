"""``recipes/cache_teachers.py`` (and ``hfkd cache``): build a teacher cache, optionally push it to the Hub.

    python recipes/cache_teachers.py                     # demo, offline: the demo teachers on the digits
    accelerate launch recipes/cache_teachers.py --teachers resnet50 convnext_tiny --student resnet18 \\
        --dataset ORG/DATA --num_views 10 --storage topk --top_k 10 --dtype float16 --output_dir caches/in1k
    python recipes/meal_v2.py --teacher_cache outputs/teacher_cache

Views are made in the student's preprocessing and with the augmentation given by the ``--aug_*``
flags, which must be the ones the student trains with (the trainer checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

STORAGES = ("full", "topk")


@dataclass
class CacheArguments:
    output_dir: str = field(default="outputs/teacher_cache", metadata={"help": "A new folder for the cache."})
    num_views: int = field(default=4, metadata={"help": "R: augmented views stored per image."})
    no_augment: bool = field(default=False, metadata={"help": "Fixed labels: one un-augmented view per image (R=1)."})
    storage: str = field(default="full", metadata={"help": "full: all logits; topk: top-k logits + logsumexp."})
    top_k: int = field(default=10, metadata={"help": "k of --storage topk (FKD's marginal smoothing on load)."})
    dtype: str = field(default="float32", metadata={"help": "float32 or float16 storage."})
    ensemble: bool = field(default=False, metadata={"help": "Store the teachers' mean T=1 probabilities, not each."})
    seed: int = field(default=42, metadata={"help": "Augmentation seed: the training run's --seed."})
    batch_size: int = field(default=64, metadata={"help": "Teacher batch size per process."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the cache to the Hub as a dataset repository."})
    hub_dataset_id: Optional[str] = field(default=None, metadata={"help": "ORG/NAME of the Hub dataset repository."})
    hub_private_repo: bool = False

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise ValueError(f"--storage must be one of {STORAGES}, got {self.storage!r}")
        if self.no_augment and self.num_views != 1:
            self.num_views = 1  # fixed labels are one view by definition
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("--push_to_hub needs --hub_dataset_id ORG/NAME")


def _demo_defaults():
    from ..demo import demo_defaults

    # The MEAL V2 demo's student and augmentation (hfkd/demo.py DEMO_DEFAULTS), one view per epoch of it.
    meal_v2 = demo_defaults("meal_v2")
    return dict({k: meal_v2[k] for k in ("student", "image_size", "aug_scale", "aug_hflip", "aug_color_jitter")},
                num_views=meal_v2["num_train_epochs"])


def main(argv=None) -> str:
    from ..arguments import DataArguments, ModelArguments
    from ..cli.parser import parse_args
    from ..demo import demo_teachers
    from ..pipeline import build_student, build_teachers, load_data
    from .generate import cache_teacher_outputs
    from .hub import push_teacher_cache

    # ``hfkd cache`` passes its argv; recipes/cache_teachers.py reads sys.argv (argparse names the script).
    prog = {"prog": "hfkd cache"} if argv is not None else {}
    model_args, data_args, cache = parse_args((ModelArguments, DataArguments, CacheArguments), argv,
                                              defaults=_demo_defaults(), **prog)
    data = load_data(data_args, seed=cache.seed)
    teachers = model_args.teachers or demo_teachers(data)
    student = build_student(model_args, data)
    teachers = build_teachers(model_args, student, teachers)
    folder = cache_teacher_outputs(
        teachers, data.train, cache.output_dir, student=student,
        augment=None if cache.no_augment else data_args.augment(), num_views=cache.num_views,
        top_k=cache.top_k if cache.storage == "topk" else None, dtype=cache.dtype, ensemble=cache.ensemble,
        seed=cache.seed, batch_size=cache.batch_size, image_column=data.image_column, label_column=data.label_column,
        dataset_info={"id": data.source, "revision": data.revision, "train_split": data_args.train_split},
    )
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        print(f"teacher cache written to {folder}\ntrain from it: python recipes/meal_v2.py --teacher_cache {folder}")
        if cache.push_to_hub:
            push_teacher_cache(folder, cache.hub_dataset_id, private=cache.hub_private_repo or None)
            print(f"pushed to the Hub dataset {cache.hub_dataset_id}")
    return folder
