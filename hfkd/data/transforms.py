"""timm transforms over a ``datasets`` split, with augmentation that resumes exactly.

timm's random transforms draw from Python's ``random``, NumPy and torch's global
generators.  Each sample is transformed with those generators seeded from
``(seed, epoch, index)``, and the generators are restored afterwards, so
augmentation neither depends on nor disturbs the training RNG: a mid-epoch
resume, or a data-loader worker, sees the same images.

Seeding is cheap (a few microseconds); saving and restoring the three global
states is not (NumPy's alone costs ~65 us).  A batch is therefore transformed
under one save/restore (:func:`seeded_batch`), and the data loader asks for
whole batches (``__getitems__``), which also reads the rows from ``datasets``
in one call.  The pixels are the same as seeding and restoring around every
sample (docs/performance.md).

A batch's tensors are made in one buffer (:func:`seeded_pixels`): when the transform ends with timm's
to-tensor and normalise, those two run in place in the batch's own slot, the same float operations in
the same order, and :func:`collate_rows` hands the buffer to the loader instead of stacking copies.
"""
from __future__ import annotations

import math
import random
import warnings
from contextlib import contextmanager
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..models.preprocess import PreprocessConfig
from ..settings import shorten
from .augment import AugmentConfig
from .checks import BAD_IMAGE_POLICIES, image_file, read_encoded, read_rows


def create_image_transform(preprocess: PreprocessConfig, is_training: bool,
                           augment: Optional[AugmentConfig] = None) -> Callable:
    """timm's transform for a model's preprocessing; training adds ``augment``."""
    from timm.data import create_transform

    kwargs = dict(
        input_size=preprocess.input_size, interpolation=preprocess.interpolation,
        mean=preprocess.mean, std=preprocess.std, crop_pct=preprocess.crop_pct, crop_mode=preprocess.crop_mode,
    )
    a = augment or AugmentConfig()
    if is_training and a.preset == "cifar":
        return _cifar_train_transform(preprocess, a)
    if is_training:
        kwargs.update(scale=tuple(a.scale), ratio=tuple(a.ratio), hflip=a.hflip, color_jitter=a.color_jitter,
                      auto_augment=a.auto_augment, re_prob=a.re_prob)
    transform = create_transform(is_training=is_training, **kwargs)
    return _with_lighting(transform, a.pca_lighting) if is_training and a.pca_lighting else transform


#: the label of a row of data without labels: not a class index, so a loss that reads it fails instead of training
NO_LABEL = -1


# -- paper presets: CIFAR crops and PCA lighting --------------------------------------------------------
# The ImageNet RGB covariance's eigen-decomposition used by AlexNet-style lighting, as in fb.resnet.torch, PS-KD
# (loader/custom_dataloader.py L121-125) and pycls / BAKE (imagenet/pycls/datasets/imagenet.py L29-36).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class PCALighting:
    """Add ``eigvec @ (alpha * eigval)`` to every pixel of a ``[3, H, W]`` tensor, ``alpha ~ N(0, alphastd^2)``.

    Applied to the ``[0, 1]`` tensor before normalisation, as the official code does; the draw uses
    torch's generator, so the per-sample seeding makes it reproducible.
    """

    def __init__(self, alphastd: float, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC):
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.to(img.dtype).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alphastd={self.alphastd})"


class _FitSize:
    """Resize to ``(height, width)`` only when the image has another size (CIFAR images pass untouched)."""

    def __init__(self, size: Tuple[int, int], interpolation: str):
        self.size, self.interpolation = tuple(size), interpolation

    def __call__(self, img):
        from timm.data.transforms import str_to_pil_interp

        h, w = self.size
        return img if img.size == (w, h) else img.resize((w, h), str_to_pil_interp(self.interpolation))


def _cifar_train_transform(preprocess: PreprocessConfig, a: AugmentConfig) -> Callable:
    """RandomCrop(size, padding) + horizontal flip (+ colour jitter) + to-tensor (+ lighting) + normalise."""
    from torchvision import transforms

    size = preprocess.image_size
    steps: list = [_FitSize(size, preprocess.interpolation),
                   transforms.RandomCrop(size, padding=a.crop_padding, padding_mode=a.padding_mode)]
    if a.hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(a.hflip))
    if a.color_jitter:
        steps.append(transforms.ColorJitter(a.color_jitter, a.color_jitter, a.color_jitter))
    steps.append(transforms.ToTensor())
    if a.pca_lighting:
        steps.append(PCALighting(a.pca_lighting))
    steps.append(transforms.Normalize(preprocess.mean, preprocess.std))
    return transforms.Compose(steps)


def _with_lighting(transform, alphastd: float):
    """timm's training pipeline with :class:`PCALighting` inserted just before its normalisation."""
    from torchvision import transforms

    steps = list(transform.transforms)
    at = next((i for i, t in enumerate(steps) if isinstance(t, transforms.Normalize)), None)
    if at is None:
        raise ValueError("pca_lighting: the training transform has no Normalize step to insert the lighting before")
    return transforms.Compose(steps[:at] + [PCALighting(alphastd)] + steps[at:])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63 - 1)


def seed_global_rng(seed: int) -> None:
    """Seed Python's, NumPy's and torch's CPU global generators for one sample."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # The CPU generator only: torch.manual_seed also re-seeds every accelerator (~100 us per call on a
    # CPU-only machine) and the transforms draw from the CPU generator alone.
    torch.default_generator.manual_seed(seed)


@contextmanager
def preserved_global_rng():
    """Restore Python's, NumPy's and torch's CPU global generators on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.default_generator.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.default_generator.set_state(torch_state)


@contextmanager
def seeded_rng(seed: int):
    """Run a block with the global generators seeded, then restore them."""
    with preserved_global_rng():
        seed_global_rng(seed)
        yield


def seeded_batch(transform: Callable, images: Sequence, seed: int, epoch: int, indices: Sequence[int],
                 seeds: Optional[Sequence[int]] = None) -> List:
    """``transform`` each image with the generators seeded from ``(seed, epoch, index)``; restore them once.

    ``seeds``, when given, are the images' own seeds instead (a view provider's, e.g. a teacher cache's).
    """
    if seeds is None:
        seeds = [sample_seed(seed, epoch, int(index)) for index in indices]
    with preserved_global_rng():
        out = []
        for image, image_seed in zip(images, seeds):
            seed_global_rng(int(image_seed))
            out.append(transform(image))
    return out


# -- a batch's tensors in one buffer ------------------------------------------------------------------------
# Per 224-px sample, timm's to-tensor and normalise allocate and copy the image four times (permute, float, divide,
# normalise's clone) and the collate copies it once more into the batch: about 0.4 ms of a 3 ms sample
# (docs/performance.md). Here the uint8 pixels are converted straight into the batch's slot and normalised in place.
_TO_TENSOR = ("MaybeToTensor", "ToTensor")
_UINT8_MODES = {"RGB": 3, "L": 1}


def _tensor_tail(transform: Callable):
    """``(head, tail, mean, std)`` when ``transform`` ends with to-tensor + ``Normalize``; ``None`` otherwise."""
    from torchvision import transforms

    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2:]
    if type(to_tensor).__name__ not in _TO_TENSOR or type(normalize) is not transforms.Normalize:
        return None
    return transforms.Compose(steps[:-2]), transforms.Compose(steps[-2:]), normalize.mean, normalize.std


def _batch_buffer(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    # A worker's batch reaches the main process through shared memory: made there, it is not copied into it
    # (as torch's default_collate does).
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def _fill_normalised(out: torch.Tensor, images: Sequence, mean, std) -> None:
    """``out[k] = normalize(to_tensor(images[k]))`` for uint8 RGB / L images, bitwise as torchvision computes it."""
    mean = torch.as_tensor(mean, dtype=out.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=out.dtype).view(-1, 1, 1)
    with warnings.catch_warnings():
        # np.asarray of a PIL image is read-only; it is only read (copied into the float slot).
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for slot, image in zip(out, images):
            pixels = torch.from_numpy(np.asarray(image))
            slot.copy_(pixels.view(*pixels.shape[:2], -1).permute(2, 0, 1))
            slot.div_(255).sub_(mean).div_(std)  # to_tensor's divide, then Normalize's subtract and divide


def seeded_pixels(transform: Callable, images: Sequence, seed: int, epoch: int, indices: Sequence[int],
                  seeds: Optional[Sequence[int]] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
    """:func:`seeded_batch`'s tensors, as one ``[n, C, H, W]`` batch when the transform allows it (else a list).

    The random steps run per sample under its seed (before to-tensor and normalise, which draw nothing);
    to-tensor and normalise then write into the batch. The values are bitwise :func:`seeded_batch`'s.
    """
    split = _tensor_tail(transform)
    if split is None:
        return seeded_batch(transform, images, seed, epoch, indices, seeds)
    head, tail, mean, std = split
    heads = seeded_batch(head, images, seed, epoch, indices, seeds)
    first = heads[0] if heads else None
    fast = (first is not None and (torch.as_tensor(std) != 0).all()
            and all(getattr(h, "mode", None) == first.mode and getattr(h, "size", None) == first.size for h in heads)
            and getattr(first, "mode", None) in _UINT8_MODES)
    if not fast:  # other modes, sizes that differ, or a zero std (Normalize's own error): the steps themselves
        return [tail(h) for h in heads]
    width, height = first.size
    out = _batch_buffer((len(heads), _UINT8_MODES[first.mode], height, width), torch.get_default_dtype())
    _fill_normalised(out, heads, mean, std)
    return out


class RowBatch(list):
    """A batch's rows whose ``pixel_values`` are views of one ``[n, C, H, W]`` tensor, :attr:`pixel_values`."""

    def __init__(self, rows, pixel_values: torch.Tensor):
        super().__init__(rows)
        self.pixel_values = pixel_values


def collate_rows(rows):
    """torch's ``default_collate``, except that a :class:`RowBatch`'s pixels are its buffer, not a stacked copy."""
    from torch.utils.data import default_collate

    if not isinstance(rows, RowBatch):
        return default_collate(rows)
    rest = default_collate([{k: v for k, v in row.items() if k != "pixel_values"} for row in rows])
    return {"pixel_values": rows.pixel_values, **rest}


class ImageClassificationDataset(torch.utils.data.Dataset):
    """Rows ``{"pixel_values", "labels", "index"}`` from a ``datasets`` split (``labels`` is ``NO_LABEL`` when
    ``label_column`` is ``None``: images without labels).

    ``index`` is the row's position in the split: PS-KD keys its prediction
    bank on it.  ``set_epoch`` (called through ``DataLoader.set_epoch``) changes
    the augmentation draw.  ``view_provider(epoch, index) -> (seed, extra)``, when set, picks
    the seed of the sample's view instead of ``sample_seed(seed, epoch, index)`` and adds the
    ``extra`` fields to the row (a teacher cache uses it to replay stored views with their soft labels).

    ``views_per_image`` (K > 1, FKD's multi-crop) makes K views of each decoded image, each with its own
    seed and extra fields, from ``view_provider.views(epoch, index, K)`` (a teacher cache's stored views): a
    batch of ``n`` indices yields ``n * K`` rows, the views of an image next to each other, and ``dataset[i]`` is
    the list of image ``i``'s K rows.

    ``on_bad_image``: ``"raise"`` stops at an unreadable image (or a decompression bomb), naming its row and file;
    ``"skip"`` leaves it out of its batch and marks the row in :attr:`bad_rows` (a shared-memory mask, so rows
    met by data-loader workers are seen by the main process too).
    """

    def __init__(self, dataset, transform: Callable, image_column: str, label_column: str, seed: int = 0,
                 image_mode: str = "RGB", view_provider: Optional[Callable[[int, int], Tuple[int, dict]]] = None,
                 on_bad_image: str = "raise", views_per_image: int = 1):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: there is nothing to train or evaluate on")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES} (got {on_bad_image!r})")
        if isinstance(views_per_image, bool) or not isinstance(views_per_image, int) or views_per_image < 1:
            raise ValueError(f"views_per_image must be an integer >= 1 (got {shorten(repr(views_per_image))})")
        self.views_per_image = views_per_image
        # label_column None: images without labels; each row's label is NO_LABEL (a method reading it fails loudly)
        self.dataset = dataset.select_columns([image_column] + ([label_column] if label_column is not None else []))
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64)
        self.image_mode = image_mode
        self.view_provider = view_provider
        self.on_bad_image = on_bad_image
        # gpu_decode (set by the trainer): rows carry the image's file bytes and the view's seed, not pixels.
        self.encoded = False
        self._encoded = None
        # One flag per row, in shared memory from the start: workers (persistent or not) write to it.
        self._bad = torch.zeros(len(dataset) if on_bad_image == "skip" else 0, dtype=torch.bool)
        if on_bad_image == "skip":
            self._bad.share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def share_epoch(self) -> "ImageClassificationDataset":
        """Put the epoch in shared memory before data-loader workers start.

        Workers hold copies of the dataset; persistent ones keep theirs across
        epochs, so ``set_epoch`` in the main process reaches them only through
        shared memory.  Without it they would augment every epoch like the first.
        """
        self._epoch.share_memory_()
        return self

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def bad_rows(self) -> List[int]:
        """Rows whose image could not be read and were skipped so far (``on_bad_image="skip"``)."""
        return self._bad.nonzero().flatten().tolist()

    def bad_row_files(self, rows: Sequence[int]) -> List[str]:
        """The file (or "an embedded image") of each of ``rows``, for the log and the lineage."""
        return [image_file(self.dataset, int(r), self.image_column) for r in rows]

    @property
    def labelled(self) -> bool:
        return self.label_column is not None

    @property
    def labels(self):
        """Every row's label (``NO_LABEL`` for each row of data without labels)."""
        return self.dataset[self.label_column] if self.labelled else [NO_LABEL] * len(self.dataset)

    def __getitem__(self, index: int):
        """Row ``index``; with ``views_per_image`` K > 1, the list of its K views' rows (one decode serves them)."""
        rows = self.__getitems__([index])
        return rows if self.views_per_image > 1 else rows[0]

    def __getitems__(self, indices: Sequence[int]) -> List[dict]:
        """A batch of rows: the DataLoader calls this with a batch's indices (one ``datasets`` read)."""
        indices = [int(i) for i in indices]
        if self.encoded:
            images, rows, bad = read_encoded(self._encoded_dataset(), indices, self.image_column, self.on_bad_image)
        else:
            images, rows, bad = read_rows(self.dataset, indices, self.image_column, self.image_mode, self.on_bad_image)
        if bad:
            self._bad[bad] = True
            skipped = set(bad)
            indices = [i for i in indices if i not in skipped]
            if not indices:  # every image of the batch is bad: the next readable row stands in (never an empty batch)
                return self.__getitems__([self._next_readable(max(bad))])
        labels = rows[self.label_column] if self.labelled else [NO_LABEL] * len(indices)
        epoch, k = self.epoch, self.views_per_image
        if k == 1 and self.view_provider is None:
            seeds, extras = [sample_seed(self.seed, epoch, i) for i in indices], [{}] * len(indices)
        elif k == 1:  # the provider picks each view's seed (and adds its fields, e.g. soft labels)
            seeds, extras = zip(*(self.view_provider(epoch, i) for i in indices))
        else:  # K views of each decoded image: the decode (the costly part at real sizes) serves K samples
            seeds, extras = zip(*(view for i in indices for view in self._views(epoch, i, k)))
            images = [image for image in images for _ in range(k)]
            indices = [i for i in indices for _ in range(k)]
            labels = [label for label in labels for _ in range(k)]
        if self.encoded:  # gpu_decode: the bytes and each view's seed; the step decodes and crops on the device
            return [{"image_bytes": data, "view_seed": int(s), "labels": self._target(label), "index": i, **extra}
                    for data, s, label, i, extra in zip(images, seeds, labels, indices, extras)]
        pixels = seeded_pixels(self.transform, images, self.seed, epoch, indices, seeds=seeds)
        rows = [{"pixel_values": p, "labels": self._target(label), "index": i, **extra}
                for p, label, i, extra in zip(pixels, labels, indices, extras)]
        # One buffer: collate_rows (the trainer's loaders) uses it as the batch; default_collate stacks the views.
        return RowBatch(rows, pixels) if isinstance(pixels, torch.Tensor) else rows

    def _encoded_dataset(self):
        """The split with its images as stored (``datasets.Image(decode=False)``), made once."""
        if self._encoded is None:
            from datasets import Image

            if not isinstance(self.dataset.features[self.image_column], Image):
                raise ValueError(f"gpu_decode reads the images' files, but column {self.image_column!r} holds "
                                 f"{type(self.dataset.features[self.image_column]).__name__} values, not "
                                 "datasets.Image ones (e.g. decoded arrays); train without gpu_decode")
            self._encoded = self.dataset.cast_column(self.image_column, Image(decode=False))
        return self._encoded

    def _views(self, epoch: int, index: int, k: int):
        views = getattr(self.view_provider, "views", None)  # None without a provider too
        if views is None:
            raise ValueError(f"views_per_image={k} needs stored views to draw from (a teacher cache's); this "
                             "dataset has none: train with a teacher cache, or with views_per_image=1")
        return views(epoch, index, k)

    def _next_readable(self, after: int) -> int:
        for step in range(1, len(self.dataset) + 1):
            index = (after + step) % len(self.dataset)
            if self._bad[index]:
                continue
            if not read_rows(self.dataset, [index], self.image_column, self.image_mode, "skip")[2]:
                return index
            self._bad[index] = True
        raise ValueError(f"no image of the dataset can be read ({len(self.dataset)} rows, column "
                         f"{self.image_column!r}); check the files with verify_images=True (--verify_images)")

    def _target(self, value):
        return int(value)  # a class index; regression datasets (hfkd.tasks.regression) return float vectors
