"""The network of SPEC §1: outputs, size, ablation switches, gradient paths, ImageNet loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drtrt.errors import ArtefactError, ConfigError
from drtrt.train.model import (ModelConfig, build_model, count_parameters,
                               load_imagenet_vgg16)

pytestmark = pytest.mark.numeric

TINY = 0.125
FULL_MODEL_PARAMS = 40_770_500   # width 1.0, depth 3, both fusions (SPEC: "about 41 M")


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(width=TINY, **kw))


def on_meta(**kw) -> torch.nn.Module:
    """Full-size model without allocating or initialising real weights (for counting only)."""
    with torch.device("meta"):
        return build_model(ModelConfig(**kw))


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("arch,depth", [("multitask", 3), ("multitask", 4), ("multitask", 5),
                                        ("vgg16", 3), ("unet-vgg16", 3)])
def test_output_names_and_shapes(arch, depth, batch_norm):
    model = tiny(arch=arch, shared_depth=depth, batch_norm=batch_norm)
    out = model(torch.randn(2, 3, 64, 96))
    expected = {"multitask": ("grade_logits", "lesion_logits"), "vgg16": ("grade_logits",),
                "unet-vgg16": ("lesion_logits",)}[arch]
    assert tuple(out) == expected == model.output_names
    assert model.config == ModelConfig(arch=arch, shared_depth=depth, width=TINY, batch_norm=batch_norm)
    if "grade_logits" in out:
        assert out["grade_logits"].shape == (2, 5)
    if "lesion_logits" in out:
        assert out["lesion_logits"].shape == (2, 5, 64, 96)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


def test_class_counts_follow_config():
    out = tiny(num_grades=3, num_lesion_classes=2)(torch.randn(1, 3, 32, 32))
    assert out["grade_logits"].shape == (1, 3) and out["lesion_logits"].shape == (1, 2, 32, 32)


def test_plain_module_eval_batch_one():
    model = tiny().eval()
    assert type(model).__module__ == "drtrt.train.model" and not isinstance(model, torch.jit.ScriptModule)
    with torch.no_grad():
        a = model(torch.ones(1, 3, 64, 64))
        b = model(torch.ones(1, 3, 64, 64))
    assert a["grade_logits"].shape == (1, 5) and a["lesion_logits"].shape == (1, 5, 64, 64)
    assert all(torch.equal(a[k], b[k]) for k in a)   # eval mode is deterministic


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_bad_input_shape_is_config_error(shape):
    with pytest.raises(ConfigError, match="multiples of 32"):
        tiny()(torch.randn(*shape))


# ---------------------------------------------------------------- size and switches

def test_full_model_parameter_count():
    n = count_parameters(on_meta())
    assert 0.9 * 41e6 <= n <= 1.1 * 41e6
    assert n == FULL_MODEL_PARAMS


def test_switches_change_the_graph():
    full = on_meta()
    counts = {name: count_parameters(on_meta(**kw)) for name, kw in {
        "no_deep": dict(deep_fusion=False), "no_shallow": dict(shallow_fusion=False),
        "none": dict(deep_fusion=False, shallow_fusion=False), "depth4": dict(shared_depth=4),
        "depth5": dict(shared_depth=5), "vgg16": dict(arch="vgg16"), "unet": dict(arch="unet-vgg16")}.items()}
    n = count_parameters(full)
    assert counts["none"] < counts["no_deep"] < n and counts["none"] < counts["no_shallow"] < n
    assert counts["depth5"] < counts["depth4"] < n
    assert counts["vgg16"] < counts["unet"] < counts["depth5"]
    # torchvision VGG16 convs (14,714,688) + GAP→FC(512→5)
    assert counts["vgg16"] == 14_714_688 + 512 * 5 + 5

    names = lambda m: {k.split(".")[0] for k in m.state_dict()}  # noqa: E731
    assert {"shared", "cls_branch", "seg_branch", "deep_fusion", "decoder", "seg_head",
            "shallow_fusion", "grade_head"} == names(full)
    assert "deep_fusion" not in names(on_meta(deep_fusion=False))
    assert "shallow_fusion" not in names(on_meta(shallow_fusion=False))
    assert {"cls_branch", "seg_branch"}.isdisjoint(names(on_meta(shared_depth=5)))
    assert names(on_meta(arch="vgg16")) == {"encoder", "grade_head"}
    assert names(on_meta(arch="unet-vgg16")) == {"encoder", "decoder", "seg_head"}
    keys = full.state_dict().keys()
    for key in ("shared.block1.0.weight", "shared.block3.4.weight", "cls_branch.block4.0.weight",
                "seg_branch.block5.4.weight", "grade_head.fc.weight"):
        assert key in keys
    assert "shared.block4.0.weight" in on_meta(shared_depth=4).state_dict()
    assert "shared.block1.1.running_mean" in on_meta(batch_norm=True).state_dict()


def test_initialisation():
    model = tiny(batch_norm=True)
    fc = model.grade_head.fc
    assert 0.005 < fc.weight.std().item() < 0.02 and not fc.bias.any()
    bn = model.shared.block1[1]
    assert torch.all(bn.weight == 1) and not bn.bias.any()
    conv = model.seg_branch.block5[0]   # kaiming normal, fan_out, relu: std = sqrt(2 / (out * 3 * 3))
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert 0.8 * expected < conv.weight.std().item() < 1.2 * expected and not conv.bias.any()


# ---------------------------------------------------------------- gradient paths

def _grads(model, loss_name):
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    if loss_name == "grade":
        loss = F.cross_entropy(out["grade_logits"], torch.tensor([0, 3]))
    else:
        loss = F.cross_entropy(out["lesion_logits"], torch.randint(0, 5, (2, 64, 64)))
    loss.backward()

    def total(module):
        return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)
    return total


def test_grade_loss_reaches_segmentation_through_fusion():
    model = tiny()
    total = _grads(model, "grade")
    assert total(model.seg_branch.block4) > 0 and total(model.seg_branch.block5) > 0
    assert total(model.decoder) > 0 and total(model.seg_head) > 0           # through shallow fusion
    assert total(model.deep_fusion) > 0 and total(model.shallow_fusion) > 0


def test_lesion_loss_reaches_classification_through_deep_fusion():
    model = tiny()
    total = _grads(model, "lesion")
    assert total(model.cls_branch.block4) > 0 and total(model.cls_branch.block5) > 0
    assert total(model.shallow_fusion) == 0 and total(model.grade_head) == 0

    unfused = tiny(deep_fusion=False)
    total = _grads(unfused, "lesion")
    assert total(unfused.cls_branch) == 0 and total(unfused.shared) > 0


def test_deep_fusion_alone_links_encoders_not_decoder():
    model = tiny(shallow_fusion=False)
    total = _grads(model, "grade")
    assert total(model.seg_branch.block5) > 0
    assert total(model.decoder) == 0 and total(model.seg_head) == 0


def test_no_fusion_grade_loss_leaves_segmentation_alone():
    model = tiny(deep_fusion=False, shallow_fusion=False)
    total = _grads(model, "grade")
    assert total(model.seg_branch) == 0 and total(model.decoder) == 0 and total(model.seg_head) == 0
    assert total(model.cls_branch) > 0 and total(model.shared) > 0


# ---------------------------------------------------------------- ImageNet weights

@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    """torchvision VGG16 / VGG16-BN state dicts (random, convs only to keep the files small)."""
    import torchvision

    folder = tmp_path_factory.mktemp("hub")
    files = {}
    for bn, name in ((False, "vgg16-397923af.pth"), (True, "vgg16_bn-6c64b313.pth")):
        torch.manual_seed(1)
        net = (torchvision.models.vgg16_bn if bn else torchvision.models.vgg16)(weights=None)
        state = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
        for k, v in state.items():
            if k.endswith(("running_mean", "running_var")):
                v.uniform_(0.5, 1.5)
        files[bn] = folder / name
        torch.save(state, files[bn])
    return files


def test_imagenet_weights_land_in_every_block_copy(fake_imagenet):
    state = torch.load(fake_imagenet[False], weights_only=True)
    model = build_model(ModelConfig())
    msg = load_imagenet_vgg16(model, fake_imagenet[False])
    assert msg.startswith("loaded ImageNet VGG16 weights from") and "(19 conv layers)" in msg
    assert torch.equal(model.shared.block1[0].weight, state["features.0.weight"])
    assert torch.equal(model.shared.block3[4].bias, state["features.14.bias"])
    for branch in (model.cls_branch, model.seg_branch):
        assert torch.equal(branch.block4[0].weight, state["features.17.weight"])
        assert torch.equal(branch.block5[4].weight, state["features.28.weight"])
    out = model(torch.randn(1, 3, 32, 32))
    assert torch.isfinite(out["grade_logits"]).all()


def test_imagenet_bn_weights_and_hub_cache(fake_imagenet, monkeypatch, tmp_path):
    state = torch.load(fake_imagenet[True], weights_only=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = tmp_path / "checkpoints" / "vgg16_bn-6c64b313.pth"
    cached.parent.mkdir()
    cached.write_bytes(fake_imagenet[True].read_bytes())
    model = build_model(ModelConfig(arch="unet-vgg16", batch_norm=True))
    msg = load_imagenet_vgg16(model)
    assert "VGG16-BN" in msg and str(cached) in msg and "(13 conv layers)" in msg
    assert torch.equal(model.encoder.block5[6].weight, state["features.40.weight"])   # conv5_3
    assert torch.equal(model.encoder.block5[7].running_var, state["features.41.running_var"])
    assert torch.equal(model.encoder.block1[1].weight, state["features.1.weight"])


def test_imagenet_missing_file_and_wrong_width(tmp_path, fake_imagenet):
    model = build_model(ModelConfig(arch="vgg16"))
    before = model.encoder.block1[0].weight.clone()
    msg = load_imagenet_vgg16(model, tmp_path / "nope.pth")
    assert "no ImageNet VGG16 weights found" in msg and "from scratch" in msg
    assert torch.equal(model.encoder.block1[0].weight, before)
    # a folder is searched for the torchvision file name
    assert load_imagenet_vgg16(model, fake_imagenet[False].parent).startswith("loaded")

    half = build_model(ModelConfig(width=0.5))
    msg = load_imagenet_vgg16(half, fake_imagenet[False])
    assert "do not apply at width 0.5" in msg and "from scratch" in msg


def test_imagenet_mismatched_file_is_artefact_error(fake_imagenet, tmp_path):
    bn_model = build_model(ModelConfig(arch="vgg16", batch_norm=True))
    with pytest.raises(ArtefactError, match="vgg16_bn-6c64b313.pth"):
        load_imagenet_vgg16(bn_model, fake_imagenet[False])
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtefactError, match="cannot read"):
        load_imagenet_vgg16(bn_model, junk)


# ---------------------------------------------------------------- config

def test_config_round_trip():
    cfg = ModelConfig(arch="multitask", shared_depth=4, deep_fusion=False, width=0.25, batch_norm=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({"width": 1}).width == 1.0
    assert ModelConfig.from_dict({}) == ModelConfig()


@pytest.mark.parametrize("data,match", [
    ({"widht": 0.5}, "did you mean 'width'"),
    ({"arch": "resnet50"}, "multitask, vgg16, unet-vgg16"),
    ({"shared_depth": 2}, "3, 4, 5"),
    ({"width": 0}, "width must be a number > 0"),
    ({"width": -1.0}, "width must be a number > 0"),
    ({"num_lesion_classes": 1}, "num_lesion_classes"),
    ({"deep_fusion": "yes"}, "must be bool"),
])
def test_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(data)


def test_full_model_flop_count_matches_the_spec():
    """SPEC §1: about 340 GFLOP per image at 512² (multiply-add = 2); the count needs no weights."""
    from drtrt.train.model import count_gflop

    assert 320 < count_gflop(ModelConfig(), 512) < 350
