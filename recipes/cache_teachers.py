"""Run the teachers once and store their soft labels (a teacher cache) to distil from without them.

    python recipes/cache_teachers.py                     # demo, offline: the demo teachers on the digits
    accelerate launch recipes/cache_teachers.py --teachers resnet50 convnext_tiny --student resnet18 \
        --dataset ORG/DATA --num_views 10 --storage topk --top_k 10 --dtype float16 --output_dir caches/in1k
    python recipes/meal_v2.py --teacher_cache outputs/teacher_cache

See docs/teacher_cache.md.
"""
from hfkd.cli.cache import main

if __name__ == "__main__":
    main()
