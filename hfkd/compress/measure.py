"""What every compression step is judged by: size, MACs, CPU latency side by side, and top-1.

Latency is a median over rounds in which every model runs once, in a rotating
order, in the same process: load from other programs falls on all of them
alike, so the ratios between rows are what to read, not the milliseconds.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.transforms import ImageClassificationDataset, create_image_transform

Predict = Callable[[np.ndarray], np.ndarray]  # float32 NCHW images -> logits


def eval_arrays(dataset, preprocess, image_column: str, label_column: str,
                limit: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """The split as (images, labels) arrays after the student's eval transform; ``limit`` rows drawn with ``seed``."""
    if limit is not None and limit < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(limit))
    rows = ImageClassificationDataset(dataset, create_image_transform(preprocess, is_training=False),
                                      image_column, label_column)
    images = np.stack([rows[i]["pixel_values"].numpy() for i in range(len(rows))]).astype(np.float32)
    labels = np.asarray(rows.labels, dtype=np.int64)
    return images, labels


def torch_predict(backbone) -> Predict:
    backbone.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return backbone(torch.from_numpy(x)).logits.float().numpy()

    return predict


def top1(predict: Predict, images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> float:
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((predict(images[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


def interleaved_latency(predicts: Dict[str, Predict], input_shape: Sequence[int], batch_sizes=(1, 32),
                        rounds: int = 30, warmup: int = 3, seed: int = 0) -> Dict[str, Dict[str, float]]:
    """Median milliseconds per batch, ``{name: {"b1": ms, "b32": ms}}``, every model run once per round."""
    rng = np.random.default_rng(seed)
    names = list(predicts)
    out: Dict[str, Dict[str, float]] = {n: {} for n in names}
    for bs in batch_sizes:
        x = rng.standard_normal((bs, *input_shape)).astype(np.float32)
        for n in names:
            for _ in range(warmup):
                predicts[n](x)
        times: Dict[str, list] = {n: [] for n in names}
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:  # rotate who runs first
                start = time.perf_counter()
                predicts[n](x)
                times[n].append(time.perf_counter() - start)
        for n in names:
            out[n][f"b{bs}"] = 1000 * statistics.median(times[n])
    return out
