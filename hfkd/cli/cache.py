"""``recipes/cache_teachers.py`` (and ``hfkd cache``): build a teacher cache, optionally push it to the Hub.

    python recipes/cache_teachers.py                     # demo, offline: the demo teachers on the digits
    accelerate launch recipes/cache_teachers.py --teachers resnet50 convnext_tiny --student resnet18 \\
        --dataset ORG/DATA --num_views 10 --storage topk --top_k 10 --dtype float16 --output_dir caches/in1k
    python recipes/meal_v2.py --teacher_cache outputs/teacher_cache

Views are made in the student's preprocessing and with the augmentation given by the ``--aug_*``
flags, which must be the ones the student trains with (the trainer checks).
"""
from __future__ import annotations

import shlex
import sys

from ..lazy import lazy_function
from .arguments import CacheArguments, DataArguments, ModelArguments
from .distill import require_student
from .parser import parse_args
from .preset import Preset, cache_preset

# The cache writer, the demo and the models import torch: loaded once the settings are parsed,
# so that `hfkd cache --help` and a bad option answer without it.
cache_teacher_outputs = lazy_function("..cache.generate", "cache_teacher_outputs", __package__)
push_teacher_cache = lazy_function("..cache.hub", "push_teacher_cache", __package__)
verify_teacher_cache = lazy_function("..cache.lookup", "verify_teacher_cache", __package__)
parse_shard_size = lazy_function("..cache.generate", "parse_shard_size", __package__)
is_main_process = lazy_function("..launch", "is_main_process", __package__)
resolve_teachers = lazy_function(".demo", "resolve_teachers", __package__)
build_student = lazy_function(".pipeline", "build_student", __package__)
build_teachers = lazy_function(".pipeline", "build_teachers", __package__)
load_data = lazy_function(".pipeline", "load_data", __package__)
classes_from_teachers = lazy_function(".pipeline", "classes_from_teachers", __package__)


def main(argv=None) -> str:
    # ``hfkd cache`` passes its argv; recipes/cache_teachers.py reads sys.argv (argparse names the script).
    prog = {"prog": "hfkd cache"} if argv is not None else {}
    preset = Preset(cache_preset, (ModelArguments, DataArguments, CacheArguments))
    try:
        (model_args, data_args, cache), _ = parse_args((ModelArguments, DataArguments, CacheArguments), argv,
                                                       preset=preset, **prog)
        if cache.verify:
            return _verify(cache.verify)
        require_student(model_args.student, data_args.dataset)
        if data_args.streaming and cache.hash_images:  # a stream's cache is keyed by sample key (hfkd/cache/)
            raise ValueError("--hash_images hashes every image of a loaded split; a stream's cache is matched by its "
                             "shards and each sample's key instead: drop --hash_images")
        parse_shard_size(cache.max_shard_size)  # before the data and the teachers are loaded
    except ValueError as e:
        raise SystemExit(f"{prog.get('prog', 'recipes/cache_teachers.py')}: error: {e}") from None
    for line in preset.describe():
        print(line, flush=True)
    data = classes_from_teachers(load_data(data_args, seed=cache.seed), model_args)
    teacher_paths = resolve_teachers(model_args.teachers, data_args.dataset, what="a teacher cache")
    student = build_student(model_args, data)
    teachers = build_teachers(model_args, student, teacher_paths)
    folder = cache_teacher_outputs(
        teachers, data.train, cache.output_dir, student=student,
        augment=None if cache.no_augment else data_args.augment(), num_views=cache.num_views,
        top_k=cache.top_k if cache.storage == "topk" else None, dtype=cache.dtype, ensemble=cache.ensemble,
        seed=cache.seed, batch_size=cache.batch_size, image_column=data.image_column, label_column=data.label_column,
        hash_images=cache.hash_images, max_shard_size=cache.max_shard_size,
        sample_key_column=cache.sample_key_column,
        dataset_info={"id": data.source, "revision": data.revision, "train_split": data_args.train_split},
    )
    if is_main_process():
        stream = (f" --dataset {shlex.quote(str(data_args.dataset))} --streaming true --max_steps N"
                  if data_args.streaming else "")
        print(f"teacher cache written to {folder}\ntrain from it: python recipes/meal_v2.py --teacher_cache {folder}"
              f"{stream}")
        if cache.push_to_hub:
            push_teacher_cache(folder, cache.hub_dataset_id, private=cache.hub_private_repo or None)
            print(f"pushed to the Hub dataset {cache.hub_dataset_id}")
    return folder


def _verify(source: str) -> str:
    """``hfkd cache --verify SOURCE``: exit 1 with the damaged file named, or print what was checked."""
    try:
        cache = verify_teacher_cache(source)
    except (ValueError, OSError) as e:  # TeacherCacheError (the damaged file and the fix), or nothing there
        sys.exit(f"hfkd cache --verify: {e}")
    print(f"teacher cache {source} is intact: {len(cache.metadata.files)} file(s), sizes and sha256 match its "
          f"manifest; {cache.metadata.num_samples} images x {cache.metadata.num_views} view(s)")
    return cache.folder
