"""The multi-task network of thesis §3 (SPEC §1) and the two baselines it is compared against.

``build_model(ModelConfig(...))`` returns a plain ``nn.Module`` whose ``forward(x)`` takes
``x: float [N, 3, H, W]`` (H and W multiples of :data:`INPUT_MULTIPLE` = 32, at least 32) and
returns a dict of logits keyed by the output names of its task vocabulary (``model.task``,
:func:`task_spec`), grade first:

* ``"multitask"``: grade logits ``[N, num_grades]`` and lesion logits ``[N, num_lesion_classes, H, W]``;
* ``"vgg16"`` (classifier baseline): grade logits only;
* ``"unet-vgg16"`` (segmenter baseline): lesion logits only.

No softmax is applied to the outputs. ``shared_depth``, ``deep_fusion`` and ``shallow_fusion``
only concern ``"multitask"``; the baselines ignore them. State-dict keys name where each weight
lives (``shared.block1.0.weight``, ``cls_branch.block4…``, ``seg_branch.block4…``,
``decoder…``, ``seg_head…``, ``deep_fusion…``, ``shallow_fusion…``, ``grade_head.fc…``); the
baselines' VGG16 lives under ``encoder.block1…block5``. :func:`load_imagenet_vgg16` copies
torchvision's ImageNet VGG16 into every VGG block copy.

Full model (width 1.0, depth 3, both fusions): 40,770,500 parameters, 334.6 GFLOP per image
at 512² (multiply-add = 2, ``torch.utils.flop_counter``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from drtrt.config import from_dict as _config_from_dict
from drtrt.config import to_dict as _config_to_dict
from drtrt.errors import ArtefactError, ConfigError
from drtrt.task import TaskSpec
from drtrt.train.fusion import DeepFusion, ShallowFusion, conv_norm_act

ARCHS = ("multitask", "vgg16", "unet-vgg16")
SHARED_DEPTHS = (3, 4, 5)
INPUT_MULTIPLE = 32                       # five 2× poolings: four in the encoder, one in the U-Net centre
VGG16_WIDTHS = (64, 128, 256, 512, 512)   # output channels of VGG16 blocks 1..5
VGG16_CONVS = (2, 2, 3, 3, 3)             # 3×3 convs per block
DECODER_FILTERS = 20                      # TernausNet uses 32; 20 gives SPEC's ~41 M params / ~340 GFLOP
SHALLOW_DOWN = (32, 64, 128, 256)         # stride-2 convs from the full-res lesion softmax to /16


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options (SPEC §1). Invalid values raise :class:`ConfigError`."""

    arch: str = "multitask"     # "multitask" | "vgg16" (classifier baseline) | "unet-vgg16" (segmenter baseline)
    shared_depth: int = 3       # VGG16 blocks shared by both tasks (multitask only): 3, 4 or 5
    deep_fusion: bool = True    # thesis Fig. 3 (CBAM at level 5), multitask only
    shallow_fusion: bool = True  # thesis Fig. 7, multitask only
    width: float = 1.0          # channel multiplier; 1.0 = VGG16 widths (ImageNet weights apply)
    batch_norm: bool = False    # torchvision vgg16_bn layout (BN after every conv)
    num_grades: int = 5
    num_lesion_classes: int = 5

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown model arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        if isinstance(self.shared_depth, bool) or self.shared_depth not in SHARED_DEPTHS:
            raise ConfigError(f"model shared_depth must be one of {', '.join(map(str, SHARED_DEPTHS))}, "
                              f"got {self.shared_depth!r}")
        if not isinstance(self.width, (int, float)) or not math.isfinite(self.width) or self.width <= 0:
            raise ConfigError(f"model width must be a number > 0 (1.0 = VGG16 widths), got {self.width!r}")
        if not isinstance(self.num_grades, int) or self.num_grades < 2:
            raise ConfigError(f"model num_grades must be an integer >= 2, got {self.num_grades!r}")
        if not isinstance(self.num_lesion_classes, int) or self.num_lesion_classes < 2:
            raise ConfigError(f"model num_lesion_classes must be an integer >= 2 (background + lesions), "
                              f"got {self.num_lesion_classes!r}")

    def to_dict(self) -> dict:
        return _config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return _config_from_dict(cls, d, where="model.")


def task_spec(cfg: ModelConfig) -> TaskSpec:
    """The task vocabulary of a model built from ``cfg``: drtrt's (:class:`~drtrt.task.TaskSpec`)
    with the heads the architecture has, and numbered names if the class counts differ from it."""
    task = TaskSpec().with_heads(grade=cfg.arch != "unet-vgg16", lesion=cfg.arch != "vgg16")
    if cfg.num_grades != task.n_grades:
        task = replace(task, grade_names=tuple(f"grade {g}" for g in range(cfg.num_grades)),
                       referable_min_grade=min(task.referable_min_grade, cfg.num_grades - 1))
    if cfg.num_lesion_classes != task.n_lesion_classes:
        codes = tuple(f"L{c}" for c in range(1, cfg.num_lesion_classes))
        task = replace(task, lesion_codes=codes, lesion_long_names=tuple(f"lesion class {c[1:]}" for c in codes))
    return task


def scaled(channels: int, width: float) -> int:
    """Channel count at width multiplier ``width`` (never below 4)."""
    return max(4, int(round(channels * width)))


def _check_input(x: torch.Tensor) -> None:
    """Eager-mode shape check; skipped while tracing/exporting so shapes stay symbolic."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    ok = x.dim() == 4 and x.shape[1] == 3 and all(s > 0 and s % INPUT_MULTIPLE == 0 for s in x.shape[2:])
    if not ok:
        raise ConfigError(f"model input must be [N, 3, H, W] with H and W positive multiples of {INPUT_MULTIPLE}, "
                          f"got {list(x.shape)}; resize or pad the image")


class VGGStage(nn.Module):
    """VGG16 blocks ``first..last`` as ``block{i}`` children; returns every block's pre-pool feature.

    Block ``i > 1`` max-pools its input first, so a stage starting at block 4 takes block 3's
    pre-pool feature. Each block is ``nn.Sequential(conv, [bn], relu, ...)`` like torchvision's.
    """

    def __init__(self, first: int, last: int, width: float, batch_norm: bool):
        super().__init__()
        self.first, self.last = first, last
        in_ch = 3 if first == 1 else scaled(VGG16_WIDTHS[first - 2], width)
        for i in range(first, last + 1):
            out_ch = scaled(VGG16_WIDTHS[i - 1], width)
            layers: list[nn.Module] = []
            for _ in range(VGG16_CONVS[i - 1]):
                layers.extend(conv_norm_act(in_ch, out_ch, 3, batch_norm=batch_norm))
                in_ch = out_ch
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.out_channels = in_ch

    def blocks(self) -> list[tuple[int, nn.Sequential]]:
        return [(i, getattr(self, f"block{i}")) for i in range(self.first, self.last + 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in self.blocks():
            if i > 1:
                x = F.max_pool2d(x, 2)
            x = block(x)
            feats.append(x)
        return feats


class DecoderBlock(nn.Module):
    """3×3 conv at the input resolution, bilinear 2× upsample, 3×3 conv (no ConvTranspose)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, batch_norm: bool):
        super().__init__()
        self.conv = conv_norm_act(in_ch, mid_ch, 3, batch_norm=batch_norm)
        self.up_conv = conv_norm_act(mid_ch, out_ch, 3, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.up_conv(x)


class UNetDecoder(nn.Module):
    """TernausNet-16 decoder (Iglovikov & Shvets 2018) with bilinear upsampling.

    ``forward([f1, f2, f3, f4], f5)`` with ``f_k`` at /2**(k-1): centre = pool(f5) → /32 →
    back to /16; then cat with f5, f4, f3, f2 (each followed by a 2× upsample) and f1; output
    at full resolution with ``out_channels`` channels.
    """

    def __init__(self, width: float, batch_norm: bool, filters: int = DECODER_FILTERS):
        super().__init__()
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in VGG16_WIDTHS)
        f = {k: scaled(filters * k, width) for k in (1, 2, 4, 8, 16)}
        self.center = DecoderBlock(c5, f[16], f[8], batch_norm)
        self.dec5 = DecoderBlock(f[8] + c5, f[16], f[8], batch_norm)
        self.dec4 = DecoderBlock(f[8] + c4, f[16], f[8], batch_norm)
        self.dec3 = DecoderBlock(f[8] + c3, f[8], f[2], batch_norm)
        self.dec2 = DecoderBlock(f[2] + c2, f[4], f[1], batch_norm)
        self.dec1 = conv_norm_act(f[1] + c1, f[1], 3, batch_norm=batch_norm)
        self.out_channels = f[1]

    def forward(self, skips: list[torch.Tensor], bottom: torch.Tensor) -> torch.Tensor:
        f1, f2, f3, f4 = skips
        x = self.center(F.max_pool2d(bottom, 2))
        x = self.dec5(torch.cat([x, bottom], dim=1))
        x = self.dec4(torch.cat([x, f4], dim=1))
        x = self.dec3(torch.cat([x, f3], dim=1))
        x = self.dec2(torch.cat([x, f2], dim=1))
        return self.dec1(torch.cat([x, f1], dim=1))


class GradeHead(nn.Module):
    """Global average pooling → one fully connected layer (no VGG FC6/FC7)."""

    def __init__(self, in_ch: int, num_grades: int):
        super().__init__()
        self.fc = nn.Linear(in_ch, num_grades)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.mean(x, dim=(2, 3)))


class _Net(nn.Module):
    """Common attributes: ``config``, ``task`` (its vocabulary), ``output_names`` (the task's outputs),
    and ``vgg_blocks()`` for ImageNet loading."""

    config: ModelConfig
    task: TaskSpec
    output_names: tuple[str, ...]

    def _name(self, cfg: ModelConfig) -> None:
        self.config, self.task = cfg, task_spec(cfg)
        self.output_names = self.task.outputs

    def vgg_blocks(self) -> list[tuple[int, nn.Sequential]]:
        """Every VGG16 block copy in the model as ``(block number 1..5, module)``."""
        return [blk for stage in self.modules() if isinstance(stage, VGGStage) for blk in stage.blocks()]


class MultiTaskNet(_Net):
    """Shared VGG16 blocks → classification and segmentation branches joined by the fusion modules."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self._name(cfg)
        d, w, bn = cfg.shared_depth, cfg.width, cfg.batch_norm
        self.shared = VGGStage(1, d, w, bn)
        if d < 5:
            self.cls_branch = VGGStage(d + 1, 5, w, bn)
            self.seg_branch = VGGStage(d + 1, 5, w, bn)
        c5 = scaled(VGG16_WIDTHS[4], w)
        self.deep_fusion = DeepFusion(c5, c5, c5, bn) if cfg.deep_fusion else None
        self.decoder = UNetDecoder(w, bn)
        self.seg_head = nn.Conv2d(self.decoder.out_channels, cfg.num_lesion_classes, 1)
        self.shallow_fusion = (ShallowFusion(cfg.num_lesion_classes, c5, tuple(scaled(c, w) for c in SHALLOW_DOWN), bn)
                               if cfg.shallow_fusion else None)
        self.grade_head = GradeHead(c5, cfg.num_grades)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        shared = self.shared(x)
        if self.config.shared_depth < 5:
            seg_feats = shared + self.seg_branch(shared[-1])
            cls5 = self.cls_branch(shared[-1])[-1]
        else:
            seg_feats, cls5 = shared, shared[-1]
        seg5 = seg_feats[4]
        if self.deep_fusion is not None:
            seg5, cls5 = self.deep_fusion(seg5, cls5)
        lesion_logits = self.seg_head(self.decoder(seg_feats[:4], seg5))
        if self.shallow_fusion is not None:
            cls5 = self.shallow_fusion(lesion_logits, cls5)
        return {self.task.grade_output: self.grade_head(cls5), self.task.lesion_output: lesion_logits}


class VGG16Classifier(_Net):
    """Baseline: VGG16 blocks 1–5 → global average pooling → FC."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self._name(cfg)
        self.encoder = VGGStage(1, 5, cfg.width, cfg.batch_norm)
        self.grade_head = GradeHead(self.encoder.out_channels, cfg.num_grades)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        return {self.task.grade_output: self.grade_head(self.encoder(x)[-1])}


class UNetVGG16(_Net):
    """Baseline: U-Net-VGG16 (VGG16 blocks 1–5 encoder + the same decoder as the multi-task model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self._name(cfg)
        self.encoder = VGGStage(1, 5, cfg.width, cfg.batch_norm)
        self.decoder = UNetDecoder(cfg.width, cfg.batch_norm)
        self.seg_head = nn.Conv2d(self.decoder.out_channels, cfg.num_lesion_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_input(x)
        feats = self.encoder(x)
        return {self.task.lesion_output: self.seg_head(self.decoder(feats[:4], feats[4]))}


def init_weights(model: nn.Module) -> None:
    """torchvision VGG init: kaiming-normal (fan_out, relu) convs, BN 1/0, Linear and seg head N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    head = getattr(model, "seg_head", None)
    if head is not None:
        # A 1×1 head with kaiming fan_out over 5 outputs starts with logits of std ≈ 5, i.e. an
        # almost one-hot softmax; start near uniform like the linear grade head instead.
        nn.init.normal_(head.weight, 0, 0.01)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network ``cfg`` describes, randomly initialised (see :func:`load_imagenet_vgg16`)."""
    return {"multitask": MultiTaskNet, "vgg16": VGG16Classifier, "unet-vgg16": UNetVGG16}[cfg.arch](cfg)


def count_gflop(cfg: ModelConfig, size: int) -> float:
    """GFLOP per image (multiply-add = 2) of the architecture ``cfg`` at ``size`` x ``size``, counted
    with PyTorch's FlopCounterMode on a meta-device copy (shapes only: no memory, no arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model(cfg).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def count_parameters(model: nn.Module) -> int:

    """Number of parameters (all are trainable); BN running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters())


IMAGENET_FILES = {False: "vgg16-397923af.pth", True: "vgg16_bn-6c64b313.pth"}


def _torchvision_layer_indices(batch_norm: bool) -> dict[tuple[int, int], int]:
    """(block, conv k) → index of that conv in torchvision's ``vgg16[_bn].features``."""
    out, idx = {}, 0
    for block, n_convs in enumerate(VGG16_CONVS, start=1):
        for k in range(n_convs):
            out[(block, k)] = idx
            idx += 3 if batch_norm else 2
        idx += 1  # max pool
    return out


def load_imagenet_vgg16(model: nn.Module, path: str | Path | None = None) -> str:
    """Copy torchvision's ImageNet VGG16 (``vgg16_bn`` when ``batch_norm``) conv weights into every VGG block.

    Every copy of a block gets them (the shared blocks, and both the classification and the
    segmentation copies of the blocks beyond ``shared_depth``). ``path`` is the ``.pth``
    file (or a folder holding it); without it, the torch hub cache is looked at. Nothing is
    ever downloaded. Returns a one-line message saying what happened; a missing file, or a
    width other than 1.0, means training from scratch. Raises :class:`ArtefactError` when the
    file exists but is not a matching torchvision VGG16 state dict.
    """
    cfg: ModelConfig = model.config
    bn = cfg.batch_norm
    name = IMAGENET_FILES[bn]
    kind = "VGG16-BN" if bn else "VGG16"
    if cfg.width != 1.0:
        return f"ImageNet {kind} weights do not apply at width {cfg.width} (they need width 1.0); training from scratch"
    if path is None:
        file = Path(torch.hub.get_dir()) / "checkpoints" / name
    else:
        file = Path(path).expanduser()
        file = file / name if file.is_dir() else file
    if not file.is_file():
        return f"no ImageNet {kind} weights found at {file}; training from scratch"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise ArtefactError(f"cannot read ImageNet {kind} weights {file}: {exc}; "
                            f"delete it or pass the torchvision '{name}' file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    indices = _torchvision_layer_indices(bn)
    n = 0
    with torch.no_grad():
        for block_no, block in model.vgg_blocks():
            for k in range(VGG16_CONVS[block_no - 1]):
                src = indices[(block_no, k)]
                pairs = [(block[k * (3 if bn else 2)], src)] + ([(block[k * 3 + 1], src + 1)] if bn else [])
                for module, src_idx in pairs:
                    for key, dst in list(module.named_parameters()) + list(module.named_buffers()):
                        src_key = f"features.{src_idx}.{key}"
                        if src_key not in state or tuple(state[src_key].shape) != tuple(dst.shape):
                            found = tuple(state[src_key].shape) if src_key in state else "missing"
                            raise ArtefactError(
                                f"{file} is not a torchvision {kind} state dict: '{src_key}' should have shape "
                                f"{tuple(dst.shape)}, found {found}; pass torchvision's '{name}' "
                                f"(batch_norm={bn} needs that file)")
                        dst.copy_(state[src_key])
                n += 1
    return f"loaded ImageNet {kind} weights from {file} ({n} conv layers)"
