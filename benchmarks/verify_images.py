"""What ``verify_images`` costs next to decoding every image once, measured side by side.

    python benchmarks/verify_images.py                          # 2000 JPEG files, 224 x 224
    python benchmarks/verify_images.py --num_images 5000 --size 512 --format png --repeats 5

The files are written once into a temporary folder as an image-path ``datasets.Dataset``.  Each
repetition runs the verification (PIL opens each file and walks its structure, no pixels) and a full
decode of every image (what one epoch without augmentation reads), in alternating order so that load on
the machine hits both alike.  Reported: the median ratio decode / verify and the median times.  The
ratio says what a run pays up front for ``--verify_images``, in epochs' worth of image decoding.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from hfkd.data.checks import verify_images


def _dataset(folder, n, size, fmt):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i}.{fmt}")
        PILImage.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    features = Features({"image": Image(), "label": Value("int64")})
    return Dataset.from_dict({"image": paths, "label": [0] * n}, features=features)


def _decode_all(dataset):
    for start in range(0, len(dataset), 256):
        for image in dataset[start:start + 256]["image"]:
            image.convert("RGB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        dataset = _dataset(folder, args.num_images, args.size, args.format)
        verify, decode = [], []
        for r in range(args.repeats):
            for name in (("verify", "decode") if r % 2 == 0 else ("decode", "verify")):
                start = time.perf_counter()
                verify_images(dataset, "image") if name == "verify" else _decode_all(dataset)
                (verify if name == "verify" else decode).append(time.perf_counter() - start)
    ratios = [d / v for d, v in zip(decode, verify)]
    print(f"{args.num_images} {args.format} images of {args.size} px: verify {statistics.median(verify):.2f} s, "
          f"decode {statistics.median(decode):.2f} s; decode / verify = {statistics.median(ratios):.1f}x "
          f"(min {min(ratios):.1f}, max {max(ratios):.1f})")


if __name__ == "__main__":
    main()
