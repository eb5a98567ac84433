"""A teacher-cache generation whose process of rank KILL_RANK SIGKILLs itself in its teacher's forward call KILL_AT.

    python tests/scripts/cache_killed.py OUT_DIR KILL_AT [KILL_RANK]     (PYTHONPATH: the repository and tests/)

KILL_AT 0 kills nothing; each process then prints how many teacher calls it made.  The same generation as
tests/test_teacher_cache_resume.py's: 32 digits, 3 views, batch 8 (12 teacher calls in all), shards of 16 rows
(SHARD_CAP bytes): 6 shards of 2 batches, shared out 3 per process on two.  Under torchrun, only the process of
rank KILL_RANK (default 0) is killed; torchrun then ends the others.
"""
import os
import signal
import sys

from helpers.models import tiny_student, tiny_teacher

from hfkd import cache_teacher_outputs
from hfkd.cache.format import estimated_bytes_per_view
from hfkd.cache.generate import SHARD_HEADER_BYTES
from hfkd.data import load_image_dataset
from hfkd.data.transforms import AugmentConfig

AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)
ROWS_PER_SHARD = 16
# 16 rows of one teacher's 10 full float32 logits and the stream's headers: 6 shards of 2 batches each
SHARD_CAP = SHARD_HEADER_BYTES + ROWS_PER_SHARD * estimated_bytes_per_view(1, 10, None, "float32")


def generate(out_dir, teacher, student):
    train = load_image_dataset().train.select(range(32))
    return cache_teacher_outputs([teacher], train, out_dir, student=student, augment=AUGMENT, num_views=3, seed=0,
                                 batch_size=8, command="hfkd cache (test)", max_shard_size=SHARD_CAP)


def main(out_dir: str, kill_at: int, kill_rank: int = 0) -> None:
    student, teacher = tiny_student(), tiny_teacher()
    forward, calls = teacher.forward, [0]
    rank = int(os.environ.get("RANK", "0"))

    def killed_forward(*a, **kw):
        calls[0] += 1
        if calls[0] == kill_at and rank == kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up runs: what a kill -9 or an OOM killer leaves
        return forward(*a, **kw)
    teacher.forward = killed_forward
    generate(out_dir, teacher, student)
    print(f"CALLS rank {rank}: {calls[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
