"""The CIFAR networks of the distillation papers, registered as timm models.

``import hfkd`` (or ``hfkd.models.cifar``) registers them with timm, so both
``timm.create_model("cifar_resnet18", num_classes=100)`` and
``hfkd.create_backbone("cifar_resnet18", num_classes=100)`` build them.  A saved student records its
architecture by name in ``config.json``; timm can only rebuild it in a process where this module has
been imported (``import hfkd`` first, then ``timm.create_model("local-dir:./student")``).

They take 32 px images: a stride-1 3x3 stem and no max-pool, so the last feature map of a 32 px image
is 4x4 (four stages) or 8x8 (three stages), which is what feature distillation such as FEED needs.

==========================  ======================================================  ==================
timm name                   network and source                                      params (100 cls)
==========================  ======================================================  ==================
``cifar_resnet10/18/34``    BAKE's ``CIFAR_ResNet10/18/34`` (small_scale/models/     4.95M / 11.22M /
                            resnet.py L109-133, L211-258)                            21.33M
``cifar_preact_resnet18``   PS-KD's ``CIFAR_ResNet18_preActBasic`` (models/          11.22M
                            preact_resnet.py L98-121, L228-267): the same network
``cifar_resnet8/20/32/      He et al. 2016 §4.2, option A (parameter-free shortcuts)  0.08M / 0.28M /
56/110``                                                                             0.47M / 0.86M / 1.73M
``cifar_resnet*_ft``        Factor Transfer's ``ResNet20/56/112`` (Models/resnet.py  0.28M / 0.86M /
                            L15-37, L108-153): 1x1-conv + BN projection shortcuts    1.74M
``cifar_wrn16_2/16_4/       Zagoruyko & Komodakis 2016 (pytorch/resnet.py L6-61)     0.70M / 2.77M /
40_2/28_10``                                                                         2.26M / 36.54M
==========================  ======================================================  ==================

Where the official networks disagree with the textbook, the official code wins (it produced the
papers' numbers): the PS-KD / BAKE network has a post-activated stem (conv-BN-ReLU), its identity
shortcuts carry the *pre-activated* input ``relu(bn(x))``, and it has no BN-ReLU after the last stage.
Each family is initialised as its official code does (``init``: PyTorch's defaults for PS-KD, BAKE and
Factor Transfer, He et al.'s for ResNet-20/56/110, Zagoruyko's for WRN).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["CifarNet", "CIFAR_MEAN", "CIFAR_STD", "WRN_MEAN", "WRN_STD", "cifar_model_names", "describe_model"]

# The normalisation of PS-KD (loader/custom_dataloader.py L74-75), BAKE (small_scale/datasets.py L260-261) and
# Factor Transfer (train_teacher.py L58) for CIFAR-10 and CIFAR-100 alike (they are CIFAR-10's statistics).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
# Wide ResNet's official code (pytorch/main.py L68-69): [125.3, 123.0, 113.9] / 255, [63.0, 62.1, 66.7] / 255.
WRN_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
WRN_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """``x -> [shortcut] + conv(relu(bn(conv(relu(bn(x))))))``; a 1x1 conv shortcut when the shape changes.

    ``identity_from_activation``: the identity shortcut carries ``relu(bn1(x))`` (PS-KD / BAKE, where
    the shortcut is applied to the activated tensor) instead of ``x`` (Wide ResNet).  Projection
    shortcuts take the activated tensor in both.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, identity_from_activation: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        self.identity_from_activation = identity_from_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        if self.shortcut is not None:
            short = self.shortcut(act)
        else:
            short = act if self.identity_from_activation else x
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + short


class BasicBlock(nn.Module):
    """He et al.'s post-activation block ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    ``shortcut="A"``: subsample by the stride and append zero channels (no parameters, He et al. 2016
    §4.2 on CIFAR); ``"B"``: 1x1 conv + BN projection when the shape changes (Factor Transfer's code).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.extra_channels = stride, c_out - c_in
        self.projection = None
        if shortcut == "B" and (stride != 1 or c_in != c_out):
            self.projection = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self._shortcut(x))


class CifarNet(nn.Module):
    """A stem, stages of residual blocks (stride 1, then 2 per stage), global average pooling and a linear head.

    Implements timm's model interface (``forward_features``, ``forward_head``,
    ``forward_intermediates``, ``feature_info``, ``get_classifier`` / ``reset_classifier``) so timm's
    tooling and hfkd's :class:`~hfkd.models.TimmBackbone` use it like any timm model.
    """

    def __init__(self, block: str, depths: Tuple[int, ...], widths: Tuple[int, ...], stem_width: int,
                 stem_norm: bool = True, final_norm: bool = False, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg", init: str = "torch", **block_kwargs: Any):
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"one depth per stage width: got depths {depths} and widths {widths}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '' (none), got {global_pool!r}")
        block_cls = {"preact": PreActBlock, "basic": BasicBlock}[block]
        self.num_classes, self.drop_rate, self.global_pool = num_classes, drop_rate, global_pool
        stem: List[nn.Module] = [_conv3x3(in_chans, stem_width)]
        if stem_norm:
            stem += [nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        stages, c_in = [], stem_width
        self.feature_info: List[Dict[str, Any]] = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = [block_cls(c_in if j == 0 else width, width, (1 if i == 0 else 2) if j == 0 else 1, **block_kwargs)
                      for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
            self.feature_info.append(dict(num_chs=width, reduction=2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # Pre-activation networks normally end with BN-ReLU (Wide ResNet does); PS-KD's and BAKE's do not.
        self.norm = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)) if final_norm else nn.Identity()
        self.num_features = self.head_hidden_size = c_in
        self.fc = nn.Linear(c_in, num_classes) if num_classes > 0 else nn.Identity()
        _initialise(self, init)

    # -- timm's interface -----------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``[N, C, H/8, W/8]`` (four stages) or ``[N, C, H/4, W/4]`` (three)."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # The official code pools with a fixed 4x4 / 8x8 window, which is global pooling at 32 px.
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's API: the stage outputs at ``indices`` and, unless ``intermediates_only``, the final map."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} only gives NCHW feature maps, not {output_fmt}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        x = self.stem(x)
        intermediates = []
        for i, stage in enumerate(self.stages):
            if stop_early and i > max_index:
                break
            x = stage(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates


def _initialise(model: nn.Module, init: str) -> None:
    """The official initialisations: ``"torch"`` keeps PyTorch's defaults (PS-KD, BAKE and Factor Transfer
    re-initialise nothing); ``"he"``: Kaiming-normal (fan-out) convolutions, unit BN (He et al. 2015/2016);
    ``"wrn"``: Kaiming-normal (fan-in) convolutions and linear weights, BN weights uniform in [0, 1), zero
    biases (Wide ResNet's pytorch/utils.py L17-29)."""
    if init not in ("torch", "he", "wrn"):
        raise ValueError(f"init must be 'torch', 'he' or 'wrn', got {init!r}")
    if init == "torch":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if init == "he" else "fan_in")
        elif isinstance(m, nn.BatchNorm2d):
            if init == "wrn":
                nn.init.uniform_(m.weight)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and init == "wrn":
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)


# -- registration --------------------------------------------------------------------------------------
def _cfg(mean=CIFAR_MEAN, std=CIFAR_STD, pool_size=(4, 4)) -> Dict[str, Any]:
    return dict(num_classes=100, input_size=(3, 32, 32), pool_size=pool_size, crop_pct=1.0, interpolation="bilinear",
                mean=mean, std=std, first_conv="stem.0", classifier="fc", license="apache-2.0")


_ARCHS: Dict[str, Dict[str, Any]] = {}


def _arch(name: str, cfg: Dict[str, Any], **arch: Any) -> None:
    _ARCHS[name] = dict(cfg=cfg, arch=arch)


_PSKD_BAKE = dict(block="preact", widths=(64, 128, 256, 512), stem_width=64, identity_from_activation=True)
for _name, _depths in (("cifar_resnet10", (1, 1, 1, 1)), ("cifar_resnet18", (2, 2, 2, 2)),
                       ("cifar_resnet34", (3, 4, 6, 3)), ("cifar_preact_resnet18", (2, 2, 2, 2))):
    _arch(_name, _cfg(), depths=_depths, **_PSKD_BAKE)
# He et al.'s depths 6n + 2; ResNet-8 (n = 1) is not in their table, a small student for demos.
for _n, _depth in ((8, 1), (20, 3), (32, 5), (56, 9), (110, 18)):
    _arch(f"cifar_resnet{_n}", _cfg(pool_size=(8, 8)), block="basic", depths=(_depth,) * 3, widths=(16, 32, 64),
          stem_width=16, shortcut="A", init="he")
    _arch(f"cifar_resnet{_n}_ft", _cfg(pool_size=(8, 8)), block="basic", depths=(_depth,) * 3,
          widths=(16, 32, 64), stem_width=16, shortcut="B")
for _d, _k in ((16, 2), (16, 4), (40, 2), (28, 10)):
    _arch(f"cifar_wrn{_d}_{_k}", _cfg(WRN_MEAN, WRN_STD, pool_size=(8, 8)), block="preact",
          depths=((_d - 4) // 6,) * 3, widths=(16 * _k, 32 * _k, 64 * _k), stem_width=16, stem_norm=False,
          final_norm=True, init="wrn")


# register_model looks the entrypoint's default config up in its module's ``default_cfgs``.
default_cfgs = generate_default_cfgs({name: spec["cfg"] for name, spec in _ARCHS.items()})


def _entrypoint(name: str):
    arch = _ARCHS[name]["arch"]

    def create(pretrained: bool = False, **kwargs: Any) -> CifarNet:
        features = dict(flatten_sequential=True, out_indices=tuple(range(len(arch["depths"]))))
        return build_model_with_cfg(CifarNet, name, pretrained, feature_cfg=features, **{**arch, **kwargs})

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{name}: see hfkd.models.cifar."
    return create


def cifar_model_names() -> List[str]:
    """The timm names this module registers."""
    return list(_ARCHS)


def describe_model(name: str, num_classes: int = 100, image_size: int = 32) -> Dict[str, Any]:
    """Parameter count and last feature map shape of a timm model, without allocating its weights.

    For dry runs: built on the ``meta`` device, so even large models cost no memory.
    """
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, num_classes=num_classes)
        feature_map = model.forward_features(torch.empty(1, 3, image_size, image_size))
    return {"name": name, "num_classes": num_classes, "params": sum(p.numel() for p in model.parameters()),
            "feature_map": tuple(feature_map.shape[1:]), "image_size": image_size}


for _name in _ARCHS:
    register_model(_entrypoint(_name))
