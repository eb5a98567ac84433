"""A teacher-cache generation that SIGKILLs itself in the teacher's forward call number KILL_AT.

    python tests/scripts/cache_killed.py OUT_DIR KILL_AT     (PYTHONPATH: the repository and tests/)

The same generation as tests/test_teacher_cache_resume.py's (32 digits, 3 views, batch 8: 4 calls per view).
"""
import os
import signal
import sys

from helpers.models import tiny_student, tiny_teacher

from hfkd import cache_teacher_outputs
from hfkd.data import load_image_dataset
from hfkd.data.transforms import AugmentConfig

AUGMENT = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)


def generate(out_dir, teacher, student):
    train = load_image_dataset().train.select(range(32))
    return cache_teacher_outputs([teacher], train, out_dir, student=student, augment=AUGMENT, num_views=3, seed=0,
                                 batch_size=8, command="hfkd cache (test)")


def main(out_dir: str, kill_at: int) -> None:
    student, teacher = tiny_student(), tiny_teacher()
    forward, calls = teacher.forward, [0]

    def killed_forward(*a, **kw):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up runs: what a kill -9 or an OOM killer leaves
        return forward(*a, **kw)
    teacher.forward = killed_forward
    generate(out_dir, teacher, student)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
