"""One adapter over timm and transformers image classifiers.

A :class:`Backbone` gives every model the same surface: logits, pooled
pre-logit features, feature maps at chosen stages, the preprocessing it
expects and its label names.  Methods ask for what they need through
:class:`OutputRequest`; nothing else is computed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .preprocess import PreprocessConfig

Stage = Union[int, str]
LAST_STAGE = "last"


@dataclass(frozen=True)
class OutputRequest:
    """What a caller needs beyond logits."""

    pooled: bool = False
    feature_stages: Tuple[Stage, ...] = ()

    def merge(self, other: "OutputRequest") -> "OutputRequest":
        stages = tuple(dict.fromkeys(self.feature_stages + other.feature_stages))
        return OutputRequest(self.pooled or other.pooled, stages)


@dataclass
class BackboneOutput:
    logits: torch.Tensor
    pooled: Optional[torch.Tensor] = None
    feature_maps: Dict[Stage, torch.Tensor] = field(default_factory=dict)


class Backbone(nn.Module):
    """Base adapter.  Subclasses implement :meth:`_forward`."""

    library: str = "torch"

    def __init__(
        self,
        model: nn.Module,
        preprocess: PreprocessConfig,
        num_classes: int,
        label_names: Optional[Sequence[str]] = None,
        source: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.num_classes = int(num_classes)
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and len(self.label_names) != self.num_classes:
            raise ValueError(
                f"{len(self.label_names)} label names for a model with {self.num_classes} classes"
            )
        # Where the weights came from: {"name": ..., "revision": ..., "pretrained": ...}; kept for lineage.
        self.source = dict(source or {})

    @property
    def name(self) -> str:
        return str(self.source.get("name") or type(self.model).__name__)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def set_label_names(self, names: Optional[Sequence[str]]) -> None:
        if names is None:
            return
        names = [str(n) for n in names]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} label names for a model with {self.num_classes} classes")
        self.label_names = names

    def forward(self, pixel_values: torch.Tensor, request: OutputRequest = OutputRequest()) -> BackboneOutput:
        return self._forward(pixel_values, request)

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:  # pragma: no cover
        raise NotImplementedError


class TimmBackbone(Backbone):
    library = "timm"

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:
        model = self.model
        indices = [s for s in request.feature_stages if s != LAST_STAGE]
        maps: Dict[Stage, torch.Tensor] = {}
        if indices:
            if not hasattr(model, "forward_intermediates"):
                raise ValueError(
                    f"timm model {self.name} has no forward_intermediates(); use feature stage "
                    f"'{LAST_STAGE}' or a model that supports intermediate features"
                )
            final, inter = model.forward_intermediates(x, indices=[int(i) for i in indices])
            maps.update(dict(zip(indices, inter)))
        else:
            final = model.forward_features(x)
        if LAST_STAGE in request.feature_stages:
            maps[LAST_STAGE] = final
        pooled = model.forward_head(final, pre_logits=True) if request.pooled else None
        logits = model.forward_head(final)
        return BackboneOutput(logits=logits, pooled=pooled, feature_maps=maps)


class TransformersBackbone(Backbone):
    library = "transformers"

    def _classifier(self) -> nn.Module:
        head = getattr(self.model, "classifier", None)
        if head is None:
            raise ValueError(
                f"{type(self.model).__name__} has no `classifier` module, so its pooled features "
                "cannot be read; use a model with a standard classification head"
            )
        return head

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:
        captured: List[torch.Tensor] = []
        handle = None
        if request.pooled:
            # The classifier's input is the pooled pre-logit vector for every HF image classifier.
            handle = self._classifier().register_forward_pre_hook(lambda m, args: captured.append(args[0]))
        try:
            out = self.model(pixel_values=x, output_hidden_states=bool(request.feature_stages))
        finally:
            if handle is not None:
                handle.remove()
        maps: Dict[Stage, torch.Tensor] = {}
        for stage in request.feature_stages:
            idx = -1 if stage == LAST_STAGE else int(stage)
            maps[stage] = out.hidden_states[idx]
        pooled = captured[0].flatten(1) if request.pooled else None
        return BackboneOutput(logits=out.logits, pooled=pooled, feature_maps=maps)


def pool_hidden_state(hidden: torch.Tensor) -> torch.Tensor:
    """A model without a pooler: the class token of a token sequence ``[N, L, D]`` (what ViT's and DeiT's
    classifiers read), the spatial mean of a feature map ``[N, C, H, W]``."""
    return hidden[:, 0] if hidden.dim() == 3 else hidden.flatten(2).mean(dim=-1)


class HeadlessTransformersBackbone(Backbone):
    """A transformers encoder without a classifier (``AutoModel``: DINOv2, ViT, ...): a feature teacher or a
    headless student.

    Like timm's ``num_classes=0`` it has no classes, and its "logits" are its pooled features: the model's own
    ``pooler_output`` (DINOv2: the class token after the final norm; ResNet, ConvNeXt: the pooled map), else
    :func:`pool_hidden_state` of the last hidden state.  Either is the input the model's own
    ``...ForImageClassification`` head reads, so a classifier made headless keeps its pooled features.
    """

    library = "transformers"

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:
        out = self.model(pixel_values=x, output_hidden_states=bool(request.feature_stages))
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = pool_hidden_state(out.last_hidden_state)
        pooled = pooled.flatten(1)
        maps: Dict[Stage, torch.Tensor] = {}
        for stage in request.feature_stages:
            # the last stage is the encoder's output (after DINOv2's and ViT's final norm), as users read it
            maps[stage] = out.last_hidden_state if stage == LAST_STAGE else out.hidden_states[int(stage)]
        return BackboneOutput(logits=pooled, pooled=pooled if request.pooled else None, feature_maps=maps)


def prefix_tokens(backbone: Backbone) -> int:
    """How many tokens precede the patch tokens in the backbone's token outputs: class, distillation and register
    tokens (0 for a model whose outputs are feature maps or patch tokens only, e.g. a CNN or Swin)."""
    model = backbone.model
    count = getattr(model, "num_prefix_tokens", None)  # timm's vision transformers say it themselves
    if isinstance(count, int):
        return count
    config = getattr(model, "config", None)
    config = getattr(config, "vision_config", None) or config
    for module in model.modules():  # transformers: the embeddings module holds the class token
        if hasattr(module, "cls_token") or hasattr(module, "class_embedding"):
            registers = int(getattr(config, "num_register_tokens", 0) or 0)
            return 1 + int(hasattr(module, "distillation_token")) + registers
    return 0


class ModuleBackbone(Backbone):
    """Any ``nn.Module`` mapping images to logits; no pooled features or maps."""

    library = "torch"

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:
        if request.pooled or request.feature_stages:
            raise ValueError(
                f"{type(self.model).__name__} is a plain nn.Module: hfkd cannot read its pooled features or "
                "feature maps; wrap a timm or transformers model instead"
            )
        return BackboneOutput(logits=self.model(x))


def hub_id(backbone) -> Optional[str]:
    """The Hub repository the weights came from, when they came from one."""
    if not backbone.source.get("pretrained"):
        return None
    if backbone.library == "timm":
        cfg = getattr(backbone.model, "pretrained_cfg", None) or {}
        if cfg.get("hf_hub_id") and cfg.get("source") != "local-dir":
            return cfg["hf_hub_id"]
    name = str(backbone.source.get("name") or "")
    name = name[len("hf-hub:"):] if name.startswith("hf-hub:") else name
    if "/" in name and not name.startswith("local-dir:") and not os.path.exists(name):
        return name.split("@")[0]
    return None
