"""Feature-fusion modules of the multi-task network (thesis §3.2, SPEC §1).

* :class:`DeepFusion` (thesis Fig. 3) joins the level-5 features of both branches through a
  CBAM (Fig. 4–6) and gives each branch back a gated residual of its own feature.
* :class:`ShallowFusion` (thesis Fig. 7) brings the softmaxed segmentation output down to the
  classification feature's resolution and fuses it with spatial attention only.

Everything here is plain convolutions, sigmoids, element-wise products and mean/max
reductions, so it exports to ONNX opset 17 and quantises like the rest of the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_norm_act(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, batch_norm: bool = False) -> nn.Sequential:
    """``kernel``×``kernel`` conv (same padding), optional BatchNorm, ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ChannelAttention(nn.Module):
    """CBAM channel attention: avg- and max-pooled descriptors through one shared MLP, summed, sigmoid.

    The MLP is two 1×1 convs with ``channels // reduction`` hidden units (at least 1, so tiny
    test widths work).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        mx = torch.amax(x, dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel-mean and channel-max maps → 7×7 conv → sigmoid → multiply."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class CBAM(nn.Module):
    """Channel then spatial attention, plus the residual add of thesis Fig. 4 (output + input)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x)) + x


class DeepFusion(nn.Module):
    """Thesis Fig. 3: fuse ``Seg_5`` and ``Cls_5`` (same spatial size) and return both, refined.

    ``f = CBAM(relu(conv1x1(cat(seg, cls))))``; ``seg' = seg * sigmoid(to_seg(f)) + seg`` and
    ``cls' = cls * sigmoid(to_cls(f)) + cls``.
    """

    def __init__(self, seg_channels: int, cls_channels: int, mid_channels: int, batch_norm: bool = False):
        super().__init__()
        self.compress = conv_norm_act(seg_channels + cls_channels, mid_channels, kernel=1, batch_norm=batch_norm)
        self.cbam = CBAM(mid_channels)
        self.to_seg = nn.Conv2d(mid_channels, seg_channels, 1)
        self.to_cls = nn.Conv2d(mid_channels, cls_channels, 1)

    def forward(self, seg: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.cbam(self.compress(torch.cat([seg, cls], dim=1)))
        seg_out = seg * torch.sigmoid(self.to_seg(fused)) + seg
        cls_out = cls * torch.sigmoid(self.to_cls(fused)) + cls
        return seg_out, cls_out


class ShallowFusion(nn.Module):
    """Thesis Fig. 7: fuse the segmentation output (full resolution) into ``Cls_5`` (/2**steps).

    ``softmax(lesion_logits)`` → ``len(down_channels)`` stride-2 3×3 convs → cat with ``cls``
    → 3×3 conv → spatial attention → 1×1 conv to ``cls`` channels → times ``gate(cls)`` (a
    learned 1×1 conv, not a sigmoid) → plus ``cls``.
    """

    def __init__(self, num_classes: int, cls_channels: int, down_channels: tuple[int, ...],
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        ch = num_classes
        for out in down_channels:
            layers.extend(conv_norm_act(ch, out, kernel=3, stride=2, batch_norm=batch_norm))
            ch = out
        self.down = nn.Sequential(*layers)
        self.merge = conv_norm_act(ch + cls_channels, cls_channels, kernel=3, batch_norm=batch_norm)
        self.attention = SpatialAttention()
        self.project = nn.Conv2d(cls_channels, cls_channels, 1)
        self.gate = nn.Conv2d(cls_channels, cls_channels, 1)

    def forward(self, lesion_logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        seg = self.down(F.softmax(lesion_logits, dim=1))
        fused = self.attention(self.merge(torch.cat([seg, cls], dim=1)))
        return self.project(fused) * self.gate(cls) + cls
