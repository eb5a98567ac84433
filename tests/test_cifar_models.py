"""The CIFAR networks: parameter counts of the official code, feature maps at 32 px, timm and hfkd plumbing."""
import pytest
import timm
import torch

import hfkd.models  # noqa: F401  (registers the networks with timm)
from hfkd.models import OutputRequest, create_backbone
from hfkd.models.cifar import CIFAR_MEAN, CIFAR_STD, WRN_MEAN, cifar_model_names, describe_model

# Parameter counts with 100 classes.  Each was obtained by instantiating the official network at the commit
# named in the README of docs/cifar.md and summing its parameters; the papers' rounded figures (CIFAR-10 heads)
# are given where the paper states one.
OFFICIAL_PARAMS_100 = {
    # PS-KD (lgcnsai/PS-KD-Pytorch@9aa0828) models/preact_resnet.py CIFAR_ResNet18_preActBasic(num_classes=100)
    "cifar_preact_resnet18": 11_217_444,
    # BAKE (yxgeee/BAKE@07c4f66) small_scale/models/resnet.py CIFAR_ResNet10/18/34(num_classes=100)
    "cifar_resnet10": 4_946_724,
    "cifar_resnet18": 11_217_444,
    "cifar_resnet34": 21_325_604,
    # Factor Transfer (Jangho-Kim/Factor-Transfer-pytorch@e8d6ac6) Models/resnet.py ResNet_simple, 1x1 projections
    "cifar_resnet20_ft": 278_324,
    "cifar_resnet56_ft": 861_620,
    "cifar_resnet110_ft": 1_736_564,
    # Wide ResNet (szagoruyko/wide-residual-networks) pytorch/resnet.py resnet(depth, width, 100); the paper's
    # Table 1 (CIFAR-10): WRN-40-2 2.2M, WRN-16-4 2.7M, WRN-28-10 36.5M.
    "cifar_wrn16_2": 703_284,
    "cifar_wrn16_4": 2_772_020,
    "cifar_wrn40_2": 2_255_156,
    "cifar_wrn28_10": 36_536_884,
}
# He et al. 2016 (§4.2, Table 6) CIFAR-10 ResNets with option-A shortcuts: 0.27M, 0.85M, 1.7M parameters.
HE_PAPER_PARAMS_10 = {"cifar_resnet20": 0.27e6, "cifar_resnet32": 0.46e6, "cifar_resnet56": 0.85e6,
                      "cifar_resnet110": 1.7e6}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS_100))
def test_parameter_counts_equal_the_official_code(name):
    assert describe_model(name, num_classes=100)["params"] == OFFICIAL_PARAMS_100[name]


@pytest.mark.parametrize("name", sorted(HE_PAPER_PARAMS_10))
def test_he_resnets_match_the_paper_and_differ_from_ft_by_the_projections(name):
    count = describe_model(name, num_classes=10)["params"]
    figure = HE_PAPER_PARAMS_10[name]
    assert abs(count - figure) <= 0.005e6 if figure < 1e6 else abs(count - figure) <= 0.05e6
    # FT's projections: conv1x1 16->32 and 32->64 plus their BatchNorms: 512 + 64 + 2048 + 128 parameters.
    assert describe_model(name + "_ft", num_classes=10)["params"] - count == 2752


@pytest.mark.parametrize("name,shape", [
    ("cifar_resnet18", (512, 4, 4)), ("cifar_preact_resnet18", (512, 4, 4)), ("cifar_resnet34", (512, 4, 4)),
    ("cifar_resnet20", (64, 8, 8)), ("cifar_resnet56", (64, 8, 8)), ("cifar_resnet56_ft", (64, 8, 8)),
    ("cifar_wrn16_2", (128, 8, 8)), ("cifar_wrn40_2", (128, 8, 8)),
])
def test_last_feature_map_is_spatial_at_32px(name, shape):
    assert describe_model(name)["feature_map"] == shape


def test_every_registered_name_builds_through_timm_and_hfkd():
    names = cifar_model_names()
    assert all(timm.is_model(n) for n in names)
    b = create_backbone("cifar_resnet20", num_classes=7, pretrained=False)
    assert b.library == "timm" and b.num_classes == 7
    assert b.preprocess.input_size == (3, 32, 32) and b.preprocess.mean == CIFAR_MEAN and b.preprocess.std == CIFAR_STD
    assert b.preprocess.crop_pct == 1.0
    assert create_backbone("cifar_wrn16_2", num_classes=3, pretrained=False).preprocess.mean == WRN_MEAN


def test_backbone_outputs_pooled_maps_and_stages():
    b = create_backbone("cifar_resnet20", num_classes=5, pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    out = b(x, OutputRequest(pooled=True, feature_stages=("last", 0, 1)))
    assert out.feature_maps[0].shape == (2, 16, 32, 32) and out.feature_maps[1].shape == (2, 32, 16, 16)
    assert out.feature_maps["last"].shape == (2, 64, 8, 8)
    assert torch.allclose(out.pooled, out.feature_maps["last"].mean((2, 3)))
    assert torch.allclose(b.model.get_classifier()(out.pooled), out.logits, atol=1e-6)
    assert torch.allclose(b.model(x), out.logits, atol=1e-6)
    feats = timm.create_model("cifar_wrn16_2", features_only=True)
    assert [f.shape[1:] for f in feats(x)] == [(32, 32, 32), (64, 16, 16), (128, 8, 8)]


def test_pskd_bake_block_quirks():
    """The official pre-activation network: post-activated stem, identity shortcut of relu(bn(x)), no final BN."""
    m = timm.create_model("cifar_resnet18", num_classes=10).eval()
    assert isinstance(m.stem[1], torch.nn.BatchNorm2d) and isinstance(m.norm, torch.nn.Identity)
    block = m.stages[0][1]
    x = torch.randn(1, 64, 8, 8)
    act = torch.relu(block.bn1(x))
    expected = block.conv2(torch.relu(block.bn2(block.conv1(act)))) + act
    assert torch.allclose(block(x), expected)
    wrn_block = timm.create_model("cifar_wrn40_2").stages[1][1].eval()  # an identity block: shortcut is x
    y = torch.randn(1, 64, 8, 8)
    expected = wrn_block.conv2(torch.relu(wrn_block.bn2(wrn_block.conv1(torch.relu(wrn_block.bn1(y)))))) + y
    assert torch.allclose(wrn_block(y), expected)


def test_option_a_shortcut_subsamples_and_zero_pads():
    block = timm.create_model("cifar_resnet20").stages[1][0]
    x = torch.randn(2, 16, 8, 8)
    short = block._shortcut(x)
    assert short.shape == (2, 32, 4, 4)
    assert torch.equal(short[:, :16], x[:, :, ::2, ::2]) and not short[:, 16:].any()


def test_saved_student_loads_with_plain_timm(tmp_path):
    from hfkd import save_student

    student = create_backbone("cifar_resnet20", num_classes=4, pretrained=False).eval()
    save_student(student, str(tmp_path / "s"))
    plain = timm.create_model(f"local-dir:{tmp_path / 's'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain(x), student.model(x), atol=1e-6)
    assert tuple(timm.data.resolve_model_data_config(plain)["input_size"]) == (3, 32, 32)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="shortcut must be"):
        timm.create_model("cifar_resnet20", shortcut="C")
    with pytest.raises(ValueError, match="init must be"):
        timm.create_model("cifar_resnet20", init="xavier")
