"""The training data path at ImageNet sizes: hfkd's against timm's own, samples per second.

    python benchmarks/data_path.py --rounds 5                   # 1 process x 1 thread, and 2 workers
    python benchmarks/data_path.py --rounds 5 --workers 0       # per core only
    python benchmarks/data_path.py --profile hfkd               # cProfile of one pass of an arm, in one process
    python benchmarks/data_path.py --draft                      # Pillow's JPEG draft mode: reach, speed, pixels

Both arms read the same imagefolder of JPEGs (made once in ``--folder``; default 500 x 375, quality 90, the
size of a typical ImageNet training image) and produce the same batches: read, decode to RGB, RandomResizedCrop
to 224 (scale 0.08-1, bicubic), horizontal flip, colour jitter 0.4, to-tensor, normalise, collate 64 samples.

* hfkd: ``load_image_dataset(folder)`` (an ``imagefolder`` through ``datasets``) wrapped in
  ``ImageClassificationDataset`` with ``create_image_transform`` (timm's transform, every sample seeded from
  (seed, epoch, index), batches read with ``__getitems__``), as the trainer builds it.
* timm: ``timm.data.ImageDataset(folder)`` (files read by path) with ``timm.data.create_transform``, the same
  settings, unseeded, as timm's ``train.py`` reads an image folder.

One arm is one pass of a shuffled ``DataLoader`` over ``--images`` samples. The arms run in interleaved rounds
whose order rotates, so the load of a shared machine hits both alike; the ratio hfkd / timm is taken per round
and reported as median [min, max]. ``--workers 0`` runs in the main process with one torch thread (the cost per
core); ``--workers 2`` uses the machine's two cores.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time

import numpy as np
import torch

from hfkd.data import load_image_dataset
from hfkd.data.augment import AugmentConfig
from hfkd.data.transforms import ImageClassificationDataset, collate_rows, create_image_transform
from hfkd.models.preprocess import PreprocessConfig

PREPROCESS = PreprocessConfig(input_size=(3, 224, 224))
AUGMENT = AugmentConfig()  # timm's defaults: scale (0.08, 1), ratio (3/4, 4/3), hflip 0.5, colour jitter 0.4


def make_folder(folder: str, images: int, width: int, height: int, quality: int, classes: int = 4) -> str:
    """An imagefolder of JPEGs with natural-image statistics (smooth shapes plus grain), made once."""
    from PIL import Image

    marker = os.path.join(folder, f".made-{images}-{width}x{height}-q{quality}")
    if os.path.exists(marker):
        return folder
    rng = np.random.default_rng(0)
    for i in range(images):
        label = f"class{i % classes}"
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        # A low-resolution random field upsampled (smooth regions and edges) plus pixel noise (texture): JPEGs of
        # about the size ImageNet's are at this resolution, so decoding costs what it costs there.
        coarse = Image.fromarray(rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, label, f"{i:05d}.jpg"), quality=quality)
    open(marker, "w").close()
    return folder


def hfkd_dataset(folder: str):
    data = load_image_dataset(folder, validation_fraction=0.0)
    transform = create_image_transform(PREPROCESS, is_training=True, augment=AUGMENT)
    return ImageClassificationDataset(data.train, transform, data.image_column, data.label_column, seed=0)


def timm_dataset(folder: str):
    from timm.data import ImageDataset, create_transform

    transform = create_transform(
        input_size=PREPROCESS.input_size, is_training=True, scale=AUGMENT.scale, ratio=AUGMENT.ratio,
        hflip=AUGMENT.hflip, color_jitter=AUGMENT.color_jitter, interpolation=PREPROCESS.interpolation,
        mean=PREPROCESS.mean, std=PREPROCESS.std)
    return ImageDataset(folder, transform=transform)


def one_pass(dataset, batch_size: int, workers: int, epoch: int) -> float:
    """Samples per second of one shuffled pass (loader start-up included, as a training epoch pays it)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    # hfkd's arm collates as the trainer does (a batch made in one buffer is used as it is)
    collate = collate_rows if isinstance(dataset, ImageClassificationDataset) else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(epoch), collate_fn=collate)
    start, samples = time.perf_counter(), 0
    for batch in loader:
        pixels = batch["pixel_values"] if isinstance(batch, dict) else batch[0]
        samples += len(pixels)
    return samples / (time.perf_counter() - start)


# -- Pillow's draft mode (JPEG DCT scaling) for downscaled crops -------------------------------------------------
def _jpeg_bytes(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(smooth + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def _crop_full(data: bytes, box, size: int):
    """What timm does: decode the whole image, crop the box, resize it (bicubic)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    top, left, height, width = box
    return image.crop((left, top, left + width, top + height)).resize((size, size), Image.BICUBIC)


def _crop_draft(data: bytes, box, size: int):
    """Decode at 1/2, 1/4 or 1/8 when the box stays at least ``size`` there, then resize the scaled box."""
    import io
    import math

    from PIL import Image

    image = Image.open(io.BytesIO(data))
    full_w, full_h = image.size
    top, left, height, width = box
    scale = max(k for k in (1, 2, 4, 8) if k == 1 or (width / k >= size and height / k >= size))
    if scale > 1:
        image.draft("RGB", (math.ceil(full_w / scale), math.ceil(full_h / scale)))
    image.load()
    fx, fy = image.size[0] / full_w, image.size[1] / full_h
    box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
    return image.resize((size, size), Image.BICUBIC, box=box), scale


def draft_table(size: int = 224, boxes: int = 64, rounds: int = 3) -> None:
    """Per image size: which scale the draft picks for RandomResizedCrop's boxes, the pixels' mean absolute
    difference from the full decode (levels of 255), and the time of decode + crop + resize, full / draft."""
    import random

    from PIL import Image
    from timm.data.transforms import RandomResizedCropAndInterpolation

    print(f"\n## Pillow draft mode, RandomResizedCrop (scale 0.08-1) to {size}, {boxes} boxes per size\n")
    print("| image | boxes decoded at 1/1, 1/2, 1/4, 1/8 | mean abs difference (max), levels of 255 "
          "| full ms | draft ms | full / draft, median [min, max] |\n|---|---|---|---|---|---|")
    for width, height in [(500, 375), (1024, 768), (2048, 1536), (4032, 3024)]:
        data = [_jpeg_bytes(width, height, seed) for seed in range(4)]
        stand_in = Image.new("L", (width, height))
        drawn = []
        for seed in range(boxes):
            random.seed(seed)
            drawn.append(RandomResizedCropAndInterpolation.get_params(stand_in, AUGMENT.scale, AUGMENT.ratio))
        scales, diffs = [], []
        for k, box in enumerate(drawn):
            drafted, scale = _crop_draft(data[k % 4], box, size)
            full = np.asarray(_crop_full(data[k % 4], box, size), dtype=np.float32)
            scales.append(scale)
            diffs.append(float(np.abs(full - np.asarray(drafted, dtype=np.float32)).mean()))
        times = {"full": [], "draft": []}
        for _ in range(rounds):  # interleaved
            for name, crop in (("full", _crop_full), ("draft", lambda d, b, s: _crop_draft(d, b, s)[0])):
                start = time.perf_counter()
                for k, box in enumerate(drawn[:32]):
                    crop(data[k % 4], box, size)
                times[name].append((time.perf_counter() - start) / 32 * 1e3)
        ratios = [f / d for f, d in zip(times["full"], times["draft"])]
        counts = ", ".join(str(scales.count(k)) for k in (1, 2, 4, 8))
        print(f"| {width}x{height} | {counts} | {np.mean(diffs):.2f} ({np.max(diffs):.2f}) | "
              f"{statistics.median(times['full']):.2f} | {statistics.median(times['draft']):.2f} | {_spread(ratios)} |",
              flush=True)


def _spread(values):
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def compare(datasets, rounds: int, batch_size: int, workers: int) -> str:
    """Interleaved rounds of both arms; prints their table and returns the docs' row for this set-up."""
    names = list(datasets)
    rates = {n: [] for n in names}
    load = os.getloadavg()[0]
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            rates[name].append(one_pass(datasets[name], batch_size, workers, epoch=r))
    where = "1 process, 1 thread" if workers == 0 else f"{workers} workers"
    print(f"\n## {where}, {rounds} interleaved rounds\n")
    print("| arm | samples/s median [min, max] |\n|---|---|")
    for name in names:
        print(f"| {name} | {_rates(rates[name])} |")
    ratios = [h / t for h, t in zip(rates["hfkd"], rates["timm"])]
    print(f"\nhfkd / timm: **{_spread(ratios)}**", flush=True)
    load = f"{load:.1f}-{os.getloadavg()[0]:.1f}"
    setup = "per core" if workers == 0 else f"{workers} workers"
    return f"| {setup} (load {load}) | {_rates(rates['hfkd'])} | {_rates(rates['timm'])} | **{_spread(ratios)}** |"


def _rates(values):
    return f"{statistics.median(values):.1f} [{min(values):.1f}, {max(values):.1f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "hfkd-bench-jpegs"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--profile", choices=("hfkd", "timm"), help="cProfile one pass of this arm and stop")
    parser.add_argument("--draft", action="store_true", help="measure Pillow's JPEG draft mode for the crops and stop")
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    if a.draft:
        draft_table()
        return
    folder = make_folder(os.path.join(a.folder, f"{a.images}-{a.width}x{a.height}-q{a.quality}"), a.images,
                         a.width, a.height, a.quality)
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files if f.endswith(".jpg")]
    print(f"{len(sizes)} JPEGs of {a.width}x{a.height}, quality {a.quality}, mean {np.mean(sizes) / 1024:.0f} KiB, "
          f"in {folder}; torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    datasets = {"hfkd": hfkd_dataset(folder), "timm": timm_dataset(folder)}
    if a.profile:
        one_pass(datasets[a.profile], a.batch_size, 0, epoch=0)  # warm the file cache
        profiler = cProfile.Profile()
        profiler.enable()
        one_pass(datasets[a.profile], a.batch_size, 0, epoch=1)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    rows = []
    for workers in a.workers:
        one_pass(datasets["hfkd"], a.batch_size, workers, epoch=-1)  # warm the file cache and the imports
        one_pass(datasets["timm"], a.batch_size, workers, epoch=-1)
        rows.append(compare(datasets, a.rounds, a.batch_size, workers))
    print(f"\n## For docs/performance.md ({a.rounds} interleaved rounds, {a.images} JPEGs of {a.width}x{a.height})\n")
    print("| set-up | hfkd samples/s | timm samples/s | hfkd / timm, median [min, max] |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
