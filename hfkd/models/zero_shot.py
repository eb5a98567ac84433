"""Zero-shot teachers: a CLIP model becomes a classifier over any label names through text prompts.

The logits are the model's own scaled image-text cosine similarities (``logit_scale.exp() * cos``), so with one
prompt template they are exactly ``CLIPModel(...).logits_per_image`` for the prompts ``template.format(label)``.
With several templates each class's text embeddings are normalised, averaged and normalised again: the prompt
ensembling of the CLIP paper (Radford et al. 2021, section 3.1.4).  The class embeddings are computed once, when
the teacher is built, and kept as a buffer; only the image tower runs per batch.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import shorten
from .backbone import LAST_STAGE, Backbone, BackboneOutput, OutputRequest, Stage
from .preprocess import PreprocessConfig

# The CLIP paper's single default prompt: better than the bare label name on ImageNet (+1.3 points there).
DEFAULT_PROMPT_TEMPLATES = ("a photo of a {}.",)

# transformers model types whose image-text similarities hfkd reads as class logits.  SigLIP is left out: its
# logits add a learned bias and go through a sigmoid, and its tokenizer (sentencepiece) cannot be built offline
# in the tests.
ZERO_SHOT_MODEL_TYPES = ("clip",)


def is_zero_shot_config(config: Dict[str, Any]) -> bool:
    return isinstance(config, dict) and config.get("model_type") in ZERO_SHOT_MODEL_TYPES


def check_prompt_templates(templates: Optional[Sequence[str]]) -> List[str]:
    """The templates as a list of strings with one ``{}`` each, or a clear error."""
    if templates is None:
        return list(DEFAULT_PROMPT_TEMPLATES)
    if isinstance(templates, str):
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ValueError("prompt_templates is empty: give at least one, e.g. ['a photo of a {}.']")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1 or any(c in t.replace("{}", "") for c in "{}"):
            raise ValueError(
                f"prompt template {shorten(t)} must be a string with exactly one '{{}}' where the label name goes "
                "(and no other braces), e.g. 'a photo of a {}.'"
            )
    return templates


def check_zero_shot_labels(label_names: Optional[Sequence[str]], name: str) -> List[str]:
    if label_names is None or len(list(label_names)) == 0:
        raise ValueError(
            f"{shorten(name)} is a zero-shot (CLIP) model: it has no classes of its own and needs the label names "
            "to build its prompts; pass label_names=[...] (--label_names, a list or a file), or a dataset with "
            "named classes"
        )
    names = [str(n) for n in label_names]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"label names repeat {shorten(dupes)}: a zero-shot teacher would predict them alike")
    return names


def zero_shot_entry(backbone) -> Dict[str, Any]:
    """A zero-shot teacher's prompts and classes for lineage and cache metadata: what its logits mean."""
    if not backbone.source.get("zero_shot"):
        return {}
    return {"prompt_templates": list(backbone.source.get("prompt_templates") or []),
            "label_names": list(backbone.label_names or [])}


class ZeroShotBackbone(Backbone):
    """A CLIP model read as a classifier: ``logits[i, c]`` is the scaled similarity of image i and class c."""

    library = "transformers"

    def __init__(self, model: nn.Module, tokenizer, preprocess: PreprocessConfig, label_names: Sequence[str],
                 prompt_templates: Optional[Sequence[str]] = None, source: Optional[Dict[str, Any]] = None):
        names = check_zero_shot_labels(label_names, str((source or {}).get("name") or type(model).__name__))
        super().__init__(model, preprocess, len(names), names, source)
        self.prompt_templates = check_prompt_templates(prompt_templates)
        # Kept for lineage and cards: the teacher's classes are these prompts, not weights of its own.
        self.source["prompt_templates"] = list(self.prompt_templates)
        self.source["zero_shot"] = True
        self.register_buffer("class_embeddings", self._class_embeddings(tokenizer, names), persistent=False)

    @torch.no_grad()
    def _class_embeddings(self, tokenizer, names: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings averaged over templates and normalised again: (num_classes, dim)."""
        per_template = []
        for template in self.prompt_templates:
            prompts = [template.format(n) for n in names]
            tokens = tokenizer(prompts, padding=True, return_tensors="pt")
            tokens = {k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            text = self.model.get_text_features(**tokens).pooler_output
            per_template.append(F.normalize(text.float(), dim=-1))
        return F.normalize(torch.stack(per_template).mean(0), dim=-1)

    def set_label_names(self, names: Optional[Sequence[str]]) -> None:
        if names is not None and [str(n) for n in names] != self.label_names:
            # The classes are the prompts: other names need other text embeddings, so a new backbone.
            raise ValueError("a zero-shot backbone's label names are fixed when it is built; build another one")

    def _forward(self, x: torch.Tensor, request: OutputRequest) -> BackboneOutput:
        out = self.model.get_image_features(pixel_values=x, output_hidden_states=bool(request.feature_stages))
        image = out.pooler_output
        weights = self.class_embeddings.to(image.dtype)
        logits = self.model.logit_scale.exp() * F.normalize(image, dim=-1) @ weights.t()
        maps: Dict[Stage, torch.Tensor] = {}
        for stage in request.feature_stages:
            maps[stage] = out.hidden_states[-1 if stage == LAST_STAGE else int(stage)]
        # The pooled feature is the image embedding in the joint space (what feature distillation matches).
        return BackboneOutput(logits=logits, pooled=image if request.pooled else None, feature_maps=maps)
