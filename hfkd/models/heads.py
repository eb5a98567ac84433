"""A student without its classification head: a backbone, as feature distillation trains it.

``feature_kd`` without labels trains a student's features, never its classifier; what it saves is the backbone
(timm ``num_classes=0``, a transformers ``AutoModel``), which ``hfkd train`` later gives a new head.  The pooled
features of the headless copy are the ones that were distilled: timm's ``forward_head(pre_logits=True)`` is by
timm's design what a ``num_classes=0`` model returns; for transformers the encoder's own pooled output must be
what its classifier read, which :func:`headless_problem` checks before training.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from ..settings import shorten
from .backbone import Backbone, HeadlessTransformersBackbone, OutputRequest, TimmBackbone, TransformersBackbone


def _headless_transformers_model(model):
    """The encoder of a transformers image classifier (``ViTForImageClassification.vit``), or ``None``."""
    base = getattr(model, "base_model", None)
    return base if base is not None and base is not model else None


def headless_problem(backbone: Backbone) -> Optional[str]:
    """Why ``backbone`` cannot be saved without its head keeping the pooled features it was trained on; else None.

    Runs one small forward pass in eval mode (no gradients, BatchNorm statistics untouched).
    """
    if backbone.num_classes == 0 or isinstance(backbone, TimmBackbone):
        return None
    if not isinstance(backbone, TransformersBackbone):
        return (f"{shorten(backbone.name)} is a plain {type(backbone.model).__name__}: hfkd can save only a timm or "
                "transformers student without its head")
    base = _headless_transformers_model(backbone.model)
    if base is None:
        return f"{shorten(backbone.name)} ({type(backbone.model).__name__}) has no separate encoder (base_model) to save"
    encoder = HeadlessTransformersBackbone(base, backbone.preprocess, 0)
    device = next(backbone.model.parameters()).device
    x = torch.zeros(2, *backbone.preprocess.input_size, device=device)
    was_training = backbone.model.training
    backbone.model.eval()
    try:
        with torch.no_grad():
            want = backbone(x, OutputRequest(pooled=True)).pooled
            got = encoder(x, OutputRequest(pooled=True)).pooled
    finally:
        backbone.model.train(was_training)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        return (f"the classifier of {shorten(backbone.name)} ({type(backbone.model).__name__}) reads other features "
                f"({tuple(want.shape[1:])}) than its encoder's pooled output ({tuple(got.shape[1:])}), so its backbone "
                "saved without the head would not give the features that were distilled")
    return None


def headless_backbone(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` without its classifier (``num_classes`` 0, no label names); ``backbone`` is unchanged.

    timm: the model with ``reset_classifier(0)`` (its config then says ``num_classes: 0``); transformers: the
    classifier's encoder (``model.base_model``), saved as that ``AutoModel`` class, its label map reset.
    """
    if backbone.num_classes == 0:
        return backbone
    source = dict(backbone.source)
    if isinstance(backbone, TimmBackbone):
        model = copy.deepcopy(backbone.model)
        model.reset_classifier(0)
        return TimmBackbone(model, backbone.preprocess, 0, None, source)
    problem = headless_problem(backbone)
    if problem:
        raise ValueError(problem)
    base = copy.deepcopy(_headless_transformers_model(backbone.model))
    # The classifier's label map describes a head that is not saved: the encoder gets transformers' defaults.
    base.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    base.config.label2id = {"LABEL_0": 0, "LABEL_1": 1}
    return HeadlessTransformersBackbone(base, backbone.preprocess, 0, None, source)
