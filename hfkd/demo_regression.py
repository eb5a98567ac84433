"""The embedded regression demo: how far was a digit rotated (``hfkd.data.rotated_digits``)?

Models have a Gaussian head (a mean and a log-variance of the angle, in units of ``max_angle``);
the teacher is trained once with the Gaussian NLL and cached beside the classification demo teachers.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from .demo import DEFAULT_TEACHER_EPOCHS, demo_cache_path, train_supervised
from .tasks import RegressionTask

# Teacher architecture -> epochs (one teacher: the demo compares matching methods, not ensembles).  Trained for 6
# epochs, like the classification teachers, the ResNet-20 (MAE 5.2 degrees) was worse than the students it was to
# teach (ResNet-8 baselines: 4.3), which makes "gap closed" meaningless; 20 epochs (460 steps) train it further.
REGRESSION_TEACHERS = {"cifar_resnet20": 20}


def regression_task(max_angle: float) -> RegressionTask:
    """One target, the angle in degrees, predicted in units of ``max_angle``."""
    return RegressionTask(num_targets=1, target_scale=max_angle)


def regression_demo_teachers(data, task: RegressionTask, names: Optional[Sequence[str]] = None,
                             seed: int = 0) -> List[str]:
    """Folders of the Gaussian-head demo teachers, training (and caching) those that are missing."""
    paths = []
    for name in names or REGRESSION_TEACHERS:
        epochs = REGRESSION_TEACHERS.get(name, DEFAULT_TEACHER_EPOCHS)
        path = demo_cache_path("demo_teachers", name, epochs, seed, task=f"rotation{task.target_scale:g}-")
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            trainer, _ = train_supervised(name, data, path + ".run", epochs, seed=seed, task=task)
            trainer.save_model(path)
        paths.append(path)
    return paths
