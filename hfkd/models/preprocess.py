"""The preprocessing a model expects, and moving a batch from one model's to another's."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torch.nn.functional.interpolate has no lanczos/box; the nearest equivalent keeps the intent.
_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "lanczos": "bicubic",
                "box": "bilinear", "hamming": "bilinear", "random": "bilinear"}


@dataclass
class PreprocessConfig:
    """What a model expects of its input: the fields of timm's data config."""

    input_size: Tuple[int, int, int] = (3, 224, 224)
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    def __post_init__(self):
        self.input_size = tuple(int(v) for v in self.input_size)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.input_size) != 3:
            raise ValueError(f"input_size must be (channels, height, width), got {self.input_size}")
        if len(self.mean) != self.input_size[0] or len(self.std) != self.input_size[0]:
            raise ValueError(f"mean {self.mean} and std {self.std} need one value per channel ({self.input_size[0]})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PreprocessConfig":
        keys = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in keys and v is not None})

    def with_image_size(self, size: Optional[int | Sequence[int]]) -> "PreprocessConfig":
        """A copy at another training resolution (square for an int)."""
        if size is None:
            return self
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        d = self.to_dict()
        d["input_size"] = (self.input_size[0], int(h), int(w))
        return PreprocessConfig.from_dict(d)


def adapt_batch(x: torch.Tensor, source: PreprocessConfig, target: PreprocessConfig) -> torch.Tensor:
    """Turn a batch normalised for ``source`` into the input ``target`` expects.

    Undo the source normalisation, resize to the target size when it differs,
    and normalise with the target's mean/std.  A no-op when both agree.
    """
    same_norm = source.mean == target.mean and source.std == target.std
    same_size = tuple(x.shape[-2:]) == target.image_size
    if same_norm and same_size:
        return x
    dtype = x.dtype
    x = x.float()
    if not same_norm:
        s_mean = x.new_tensor(source.mean).view(1, -1, 1, 1)
        s_std = x.new_tensor(source.std).view(1, -1, 1, 1)
        x = x * s_std + s_mean
    if not same_size:
        mode = _TORCH_MODES.get(target.interpolation, "bilinear")
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, size=target.image_size, mode=mode, **kwargs)
    if not same_norm:
        t_mean = x.new_tensor(target.mean).view(1, -1, 1, 1)
        t_std = x.new_tensor(target.std).view(1, -1, 1, 1)
        x = (x - t_mean) / t_std
    return x.to(dtype)
