"""Structured pruning with torch-pruning: channels and attention heads are removed, not masked.

torch-pruning traces the network into a dependency graph, so removing an output
channel of one conv also removes the matching input channel of every layer that
consumes it (BatchNorm, depthwise convs, residual additions, squeeze-excite,
attention projections).  hfkd adds the target (a MAC or parameter ratio reached
step by step), the choice of criterion, the protection of the classifier, and
the checks: the input model is never modified, and a model that does not run
after pruning is reported with the layer where it broke.
"""
from __future__ import annotations

import copy
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..models.backbone import Backbone
from .settings import PruningConfig



class LogitsModule(nn.Module):
    """``pixel_values -> logits`` over a Backbone: what is counted, exported and timed."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values).logits


class CompressionError(ValueError):
    """A model hfkd cannot prune, export or quantize; the message names the layer or step and the fix."""


def count_macs_params(backbone: Backbone) -> Tuple[int, int]:
    """(MACs, parameters) of one image at the backbone's input size (torch-pruning's counter)."""
    import torch_pruning as tp

    was_training = backbone.training
    backbone.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(LogitsModule(backbone), _example(backbone))
    finally:
        backbone.train(was_training)
    return int(macs), int(params)


def _example(backbone: Backbone, batch_size: int = 1) -> torch.Tensor:
    device = next(backbone.parameters()).device
    return torch.randn(batch_size, *backbone.preprocess.input_size, device=device)


def _importance(name: str):
    import torch_pruning as tp

    imp = tp.importance
    return {"l1": lambda: imp.GroupMagnitudeImportance(p=1), "l2": lambda: imp.GroupMagnitudeImportance(p=2),
            "taylor": imp.GroupTaylorImportance, "fpgm": imp.FPGMImportance, "lamp": imp.LAMPImportance,
            "random": imp.RandomImportance}[name]()


def _classifier(backbone: Backbone) -> Optional[nn.Module]:
    model = backbone.model
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    if isinstance(getattr(model, "classifier", None), nn.Module):
        return model.classifier
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _attention_heads(model: nn.Module) -> Dict[nn.Module, int]:
    """Projections of attention modules that split into heads: ``{projection: number of heads}``."""
    heads: Dict[nn.Module, int] = {}
    for module in model.modules():
        n = getattr(module, "num_attention_heads", None)
        if not isinstance(n, int):
            continue
        for names in (("q_proj", "k_proj", "v_proj"), ("query", "key", "value")):
            projections = [getattr(module, p, None) for p in names]
            if all(isinstance(p, nn.Linear) for p in projections):
                heads.update({p: n for p in projections})
    return heads


def _head_ratio(heads: Dict[nn.Module, int], max_ratio: float) -> float:
    """The most heads a layer may lose: ``max_ratio``, but always keeping one head."""
    if not heads:
        return 0.0
    fewest = min(heads.values())
    return min(max_ratio, (fewest - 1) / fewest)


def _sync_head_counts(model: nn.Module) -> None:
    """After heads were removed, make the attention modules' own counters match their projections."""
    for module in model.modules():
        q = getattr(module, "q_proj", None) or getattr(module, "query", None)
        if not isinstance(getattr(module, "num_attention_heads", None), int) or not isinstance(q, nn.Linear):
            continue
        head_dim = getattr(module, "head_dim", None) or getattr(module, "attention_head_size", None)
        if head_dim:
            module.num_attention_heads = q.out_features // head_dim
            if hasattr(module, "all_head_size"):
                module.all_head_size = q.out_features


class _LayerTracker:
    """Remembers the innermost module running, so a failing forward can name its layer."""

    def __init__(self, model: nn.Module):
        self.stack: List[str] = []
        self.handles = []
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module, args) -> None:  # hooks must return None, or they replace the inputs / outputs
            self.stack.append(name)
        return hook

    def _leave(self, module, args, output) -> None:
        self.stack.pop()

    def close(self):
        for h in self.handles:
            h.remove()


def check_runs(backbone: Backbone, expected_shape: torch.Size, what: str) -> None:
    """Run one batch; on failure raise :class:`CompressionError` naming the layer that broke."""
    tracker = _LayerTracker(backbone.model)
    try:
        with torch.no_grad():
            out = backbone(_example(backbone, 2)).logits
    except Exception as e:  # noqa: BLE001 - re-raised with the layer's name
        layer = tracker.stack[-1] if tracker.stack else "<model>"
        module = dict(backbone.model.named_modules()).get(layer)
        kind = type(module).__name__ if module is not None else "?"
        raise CompressionError(
            f"{what} broke layer '{layer}' ({kind}): {type(e).__name__}: {str(e).splitlines()[0]}. "
            f"Its shapes depend on widths torch-pruning cannot see; add it (or its parent) to ignored_layers"
        ) from e
    finally:
        tracker.close()
    if out.shape != expected_shape:
        raise CompressionError(f"{what} changed the output shape from {tuple(expected_shape)} to {tuple(out.shape)}")


def prune_backbone(backbone: Backbone, config: Optional[PruningConfig] = None,
                   calibration_batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                   **kwargs: Any) -> Tuple[Backbone, Dict[str, Any]]:
    """A pruned deep copy of ``backbone`` and a report (params/MACs before and after, steps, settings).

    ``config`` (or keyword arguments building one) sets the target and criterion.
    ``calibration_batch`` ``(pixel_values, labels)`` is needed by the ``taylor``
    criterion.  ``backbone`` itself is never modified, even when pruning fails.
    """

    config = config or PruningConfig(**kwargs)
    if config.criterion == "taylor" and calibration_batch is None:
        raise ValueError("the taylor criterion needs calibration_batch=(pixel_values, labels) to compute gradients")
    work = copy.deepcopy(backbone).eval()  # the input is never touched, whatever happens below
    with torch.no_grad():
        expected = work(_example(work, 2)).logits.shape
    names = dict(work.model.named_modules())
    unknown = [n for n in config.ignored_layers if n not in names]
    if unknown:
        raise ValueError(f"ignored_layers {unknown} are not modules of {backbone.name}; "
                         f"examples of names: {list(names)[1:6]}")
    before_macs, before_params = count_macs_params(work)
    before = before_macs if config.target == "macs" else before_params

    def attempt(ratio: float) -> Tuple[Backbone, int]:
        candidate = _prune_once(work, ratio, config, calibration_batch)
        check_runs(candidate, expected, f"pruning {backbone.name}")
        macs, params = count_macs_params(candidate)
        return candidate, macs if config.target == "macs" else params

    # One-shot pruning at a per-layer ratio found by bisection: torch-pruning's own iterative mode removes at
    # least one attention head per step, which empties small ViTs long before the target.
    low, high = 0.0, config.max_layer_ratio
    best, value = attempt(high)
    if value > config.target_ratio * before:
        raise CompressionError(
            f"pruning {backbone.name} by {high:.0%} per layer keeps {value / before:.2f} of its {config.target}, "
            f"more than the target {config.target_ratio}: raise max_layer_ratio, use global_pruning, or ignore "
            "fewer layers")
    ratio = high
    for _ in range(config.search_steps):
        mid = (low + high) / 2
        candidate, v = attempt(mid)
        if v <= config.target_ratio * before:
            best, value, ratio, high = candidate, v, mid, mid
        else:
            low = mid
    after_macs, after_params = count_macs_params(best)
    report = {"library": "torch-pruning", "library_version": metadata.version("torch-pruning"),
              "settings": dict(vars(config)), "layer_ratio": round(ratio, 4),
              "macs_before": before_macs, "macs_after": after_macs,
              "params_before": before_params, "params_after": after_params}
    return best, report


def _prune_once(backbone: Backbone, ratio: float, config: PruningConfig,
                calibration_batch: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> Backbone:
    """A copy of ``backbone`` with ``ratio`` of every (or, globally, of all) prunable channels removed."""
    import torch_pruning as tp

    pruned = copy.deepcopy(backbone)
    model = LogitsModule(pruned)
    modules = dict(pruned.model.named_modules())
    ignored = [modules[n] for n in config.ignored_layers]
    head = _classifier(pruned)
    if head is not None:
        ignored.append(head)  # the number of classes is not for pruning
    heads = _attention_heads(pruned.model) if config.prune_heads else {}
    try:
        pruner = tp.pruner.MetaPruner(
            model, _example(pruned), importance=_importance(config.criterion), global_pruning=config.global_pruning,
            pruning_ratio=ratio, ignored_layers=ignored, round_to=config.round_to, num_heads=heads,
            in_channel_groups={}, out_channel_groups={},  # fresh dicts: torch-pruning fills its shared defaults
            prune_num_heads=bool(heads), prune_head_dims=not heads, head_pruning_ratio=_head_ratio(heads, ratio))
        if config.criterion == "taylor":
            _taylor_gradients(model, calibration_batch)
        pruner.step()
    except Exception as e:  # noqa: BLE001 - torch-pruning's tracing errors, with the model's name
        raise CompressionError(f"torch-pruning cannot prune {backbone.name}: {type(e).__name__}: {e}") from e
    model.zero_grad(set_to_none=True)
    _sync_head_counts(pruned.model)
    return pruned


def _taylor_gradients(model: Callable, batch: Tuple[torch.Tensor, torch.Tensor]) -> None:
    model.zero_grad(set_to_none=True)
    x, y = batch
    torch.nn.functional.cross_entropy(model(x), y).backward()
