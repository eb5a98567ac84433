"""FEED: Feature-level Ensemble for Knowledge Distillation (Park & Kwak, arXiv 1909.10754).

Parallel FEED (``create_method("feed", beta=500)``): one non-linear transform (NTL) per teacher maps
the student's feature map to that teacher's channels, and the student is trained with

    L = CE(z_s, y) + beta * sum_n mean | phi(NTL_n(F_s)) - phi(F_n) |,   phi(v) = v / ||v||_2 per sample

where ``F_n`` is teacher ``n``'s map at the same stage (detached) and ``mean`` runs over the
batch and the ``C*H*W`` elements (:func:`hfkd.losses.feed_loss`).  The teachers' maps are never
averaged: each keeps its own transform, which is what makes the ensemble "feature-level".
Sequential FEED (Born-Again style generations) is this method with a single teacher of the
student's architecture, driven by ``recipes/feed.py --generations G``.

Where each piece comes from (docs/methods.md, "FEED"; no official FEED code exists):

* paper: the loss above, one NTL per teacher, the NTLs dropped at test time, the last feature map
  before pooling, sequential FEED as recursive self-distillation;
* Factor Transfer's official code (``Models/FeatureProjection.py``, ``train_student.py``), which
  FEED extends: the NTL layout ``conv3x3(C_s->C_s) -> conv3x3(C_s->C_t) -> conv3x3(C_t->C_t)``,
  stride 1, padding 1, with bias, no BatchNorm, and a ``LeakyReLU(0.1)`` after **each** of the
  three convolutions (the last one included; LeakyReLU is a bijection, so the output can still be
  negative, which teachers without a final ReLU such as ConvNeXt and ViTs need); the L1 loss with
  mean reduction over B*D elements and ``beta = 500``; the NTLs trained with the student's
  optimiser settings;
* our choices: spatial sizes that differ are matched by resizing the *transformed student map* to
  the teacher's ``H x W`` (area averaging when shrinking, bilinear otherwise); token maps ``[N, L, D]`` (ViTs) are
  turned into ``[N, D, h, w]`` grids of their patch tokens (prefix tokens such as [CLS] dropped), so
  3x3 convolutions see neighbouring patches and CNN and ViT maps can be paired; channels-last
  maps (timm models with ``output_fmt == "NHWC"``, e.g. Swin) are permuted to channels-first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import feed_loss
from ..models.backbone import OutputRequest
from .base import DistillationMethod, LossOutput, MethodContext, dry_forward
from .configs import FEEDConfig, Stage
from .registry import register_method

__all__ = ["FEED", "FEEDConfig", "FeatureLayout", "NonLinearTransform", "infer_layout", "to_channels_first", "match_spatial"]

# Prefix tokens ([CLS], distillation, register tokens) tried when a model does not declare them.
_MAX_PREFIX_TOKENS = 8


@dataclass(frozen=True)
class FeatureLayout:
    """How one model's feature map at a stage is laid out, found once by a dry forward.

    ``kind`` is ``"nchw"``, ``"nhwc"``, ``"tokens"`` (``[N, L, D]`` with ``prefix_tokens`` leading
    non-patch tokens and the patches on a ``grid``) or ``"vector"`` (``[N, D]``).
    """

    kind: str
    channels: int
    prefix_tokens: int = 0
    grid: Optional[Tuple[int, int]] = None


def _patch_grid(num_patches: int, input_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """``(h, w)`` with ``h * w == num_patches`` and the input's aspect ratio, or ``None``."""
    if num_patches <= 0:
        return None
    height, width = input_hw
    h = max(1, round(math.sqrt(num_patches * height / width)))
    w = num_patches // h
    return (h, w) if h * w == num_patches else None


def infer_layout(model: nn.Module, feature_map: torch.Tensor, input_hw: Tuple[int, int]) -> FeatureLayout:
    """The layout of ``feature_map``, the output of ``model`` (the raw timm / transformers module)."""
    if feature_map.dim() == 2:
        return FeatureLayout("vector", feature_map.shape[1])
    if feature_map.dim() == 4:
        if getattr(model, "output_fmt", "NCHW") == "NHWC":
            return FeatureLayout("nhwc", feature_map.shape[3])
        return FeatureLayout("nchw", feature_map.shape[1])
    if feature_map.dim() == 3:
        length, channels = feature_map.shape[1], feature_map.shape[2]
        declared = getattr(model, "num_prefix_tokens", None)  # timm ViTs declare theirs
        candidates = [int(declared)] if declared is not None else range(min(length, _MAX_PREFIX_TOKENS + 1))
        for prefix in candidates:
            grid = _patch_grid(length - prefix, input_hw)
            if grid is not None:
                return FeatureLayout("tokens", channels, prefix, grid)
        raise ValueError(
            f"FEED: cannot arrange the {length} tokens of {type(model).__name__}'s feature map on a patch grid of a "
            f"{input_hw[0]}x{input_hw[1]} input; pick another feature stage or a model with a 2-D feature map"
        )
    raise ValueError(
        f"FEED: a feature map of shape {tuple(feature_map.shape)} from {type(model).__name__} is neither "
        "[N, C, H, W], [N, H, W, C], [N, L, D] nor [N, D]"
    )


def to_channels_first(feature_map: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """``feature_map`` as ``[N, C, H, W]``."""
    if layout.kind == "nchw":
        return feature_map
    if layout.kind == "nhwc":
        return feature_map.permute(0, 3, 1, 2)
    if layout.kind == "vector":
        return feature_map[:, :, None, None]
    h, w = layout.grid
    patches = feature_map[:, layout.prefix_tokens:]
    if patches.shape[1] != h * w:
        raise ValueError(
            f"FEED: the feature map has {feature_map.shape[1]} tokens, but set-up found {layout.prefix_tokens} "
            f"prefix tokens and a {h}x{w} patch grid; the input resolution changed after set-up"
        )
    return patches.transpose(1, 2).reshape(feature_map.shape[0], layout.channels, h, w)


def match_spatial(student_map: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize a (transformed) student map to the teacher's ``H x W`` (identity when equal)."""
    size = tuple(int(v) for v in size)
    if tuple(student_map.shape[-2:]) == size:
        return student_map
    if student_map.shape[-2] >= size[0] and student_map.shape[-1] >= size[1]:
        # Shrinking: each teacher cell gets the mean of the student cells it covers (no aliasing).
        return F.adaptive_avg_pool2d(student_map, size)
    return F.interpolate(student_map, size=size, mode="bilinear", align_corners=False)


class NonLinearTransform(nn.Sequential):
    """Factor Transfer's translator: three convolutions, each followed by ``LeakyReLU(0.1)``.

    ``in -> in -> out -> out`` channels, stride 1, ``padding = kernel_size // 2``, with bias and
    no normalisation, as in FT's ``Translator``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, negative_slope: float = 0.1):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"NonLinearTransform: kernel_size must be odd and >= 1 to keep H x W, got {kernel_size}")
        pad = kernel_size // 2
        widths = [(in_channels, in_channels), (in_channels, out_channels), (out_channels, out_channels)]
        layers: List[nn.Module] = []
        for c_in, c_out in widths:
            layers += [nn.Conv2d(c_in, c_out, kernel_size, stride=1, padding=pad, bias=True),
                       nn.LeakyReLU(negative_slope)]
        super().__init__(*layers)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)


@register_method
class FEED(DistillationMethod):
    """Parallel FEED: ``CE + beta * sum_n mean|phi(NTL_n(F_s)) - phi(F_n)|``, one NTL per teacher.

    Settings in :class:`FEEDConfig`; ``self.stage`` and ``self.teacher_stage`` are the resolved stages.

    The NTLs are built in :meth:`setup` from the channel counts of a dry forward of one dummy
    batch; they are submodules of the method, so they train with the student, are DDP-wrapped and
    checkpointed with it, and are never saved with the student.  Logs: ``ce``, ``feed`` (the sum
    over teachers, before ``beta``) and ``feed_{n}`` per teacher.
    """

    name = "feed"
    citation = (
        "@article{park2019feed,\n  title={FEED: Feature-level Ensemble for Knowledge Distillation},\n"
        "  author={Park, SeongUk and Kwak, Nojun},\n  journal={arXiv preprint arXiv:1909.10754},\n  year={2019}\n}"
    )
    min_teachers = 1
    config_class = FEEDConfig

    def __init__(self, config: Optional[FEEDConfig] = None, **kwargs):
        super().__init__(config, **kwargs)
        self.uses_labels = self.config.ce_weight > 0
        self.stage: Stage = self.config.stage
        self.teacher_stage: Stage = self.stage if self.config.teacher_stage is None else self.config.teacher_stage
        self.student_request = OutputRequest(feature_stages=(self.stage,))
        self.teacher_request = OutputRequest(feature_stages=(self.teacher_stage,))
        self.transforms = nn.ModuleList()
        self.student_layout: Optional[FeatureLayout] = None
        self.teacher_layouts: List[FeatureLayout] = []

    # -- set-up -----------------------------------------------------------------------------------
    def labels_reason(self) -> str:
        return (f"ce_weight={self.config.ce_weight:g} adds a cross-entropy on the labels; ce_weight=0 (--ce_weight 0) "
                "matches the teachers' feature maps alone")

    def setup(self, context: MethodContext) -> None:
        super().setup(context)
        if len(self.transforms):
            # Already built (a second setup on the same method, e.g. a re-run): keep the trained NTLs.
            if len(self.transforms) != len(context.teachers):
                raise ValueError(
                    f"FEED was set up with {len(self.transforms)} teachers and is now given {len(context.teachers)}; "
                    "create a new method for another set of teachers"
                )
        student = context.student
        dummy, s_out = dry_forward(student, self.student_request)
        s_map = s_out.feature_maps[self.stage]
        self.student_layout = infer_layout(student.model, s_map, tuple(dummy.shape[-2:]))
        self.teacher_layouts = []
        for teacher in context.teachers:
            t_map = teacher(dummy, self.teacher_request).feature_maps[self.teacher_stage]
            t_input = teacher.prepare_input(dummy) if hasattr(teacher, "prepare_input") else dummy
            model = teacher.backbone.model if hasattr(teacher, "backbone") else getattr(teacher, "model", teacher)
            self.teacher_layouts.append(infer_layout(model, t_map, tuple(t_input.shape[-2:])))
        if not len(self.transforms):
            for layout in self.teacher_layouts:
                self.transforms.append(
                    NonLinearTransform(self.student_layout.channels, layout.channels, self.config.kernel_size))
        else:
            for n, (ntl, layout) in enumerate(zip(self.transforms, self.teacher_layouts)):
                if (ntl.in_channels, ntl.out_channels) != (self.student_layout.channels, layout.channels):
                    raise ValueError(f"FEED: transform {n} maps {ntl.in_channels}->{ntl.out_channels} channels, "
                                     f"but the models now need {self.student_layout.channels}->{layout.channels}")
        self.transforms.to(dummy.device)

    # -- the loss ---------------------------------------------------------------------------------
    def transformed_student_maps(self, student_map: torch.Tensor,
                                 teacher_maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``NTL_n(F_s)`` resized to each (channels-first) teacher map's ``H x W``."""
        if self.student_layout is None or len(self.transforms) != len(teacher_maps):
            raise RuntimeError("FEED: call setup(context) before computing the loss (the trainer does)")
        s = to_channels_first(student_map, self.student_layout)
        return [match_spatial(ntl(s), t.shape[-2:]) for ntl, t in zip(self.transforms, teacher_maps)]

    def compute_loss(self, batch, student, teachers):
        if len(teachers) != len(self.transforms):
            raise ValueError(f"FEED has {len(self.transforms)} transforms but got {len(teachers)} teacher outputs")
        t_maps = [to_channels_first(t.feature_maps[self.teacher_stage], layout).detach()
                  for t, layout in zip(teachers, self.teacher_layouts)]
        s_maps = self.transformed_student_maps(student.feature_maps[self.stage], t_maps)
        terms = [feed_loss([s], [t]) for s, t in zip(s_maps, t_maps)]
        feature = torch.stack(terms).sum()
        logs: Dict[str, torch.Tensor] = {"feed": feature.detach()}
        logs.update({f"feed_{n}": term.detach() for n, term in enumerate(terms)})
        loss = self.config.beta * feature
        if self.uses_labels:
            ce = F.cross_entropy(student.logits.float(), batch["labels"])
            loss = loss + self.config.ce_weight * ce
            logs["ce"] = ce.detach()
        return LossOutput(loss, logs)
