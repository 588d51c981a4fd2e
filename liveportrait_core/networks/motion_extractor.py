"""Motion extractor M (docs/ARCHITECTURE.md, Networks): ConvNeXt-V2 "tiny" backbone + seven linear heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GRN, Conv2d, LayerNormFirst, LayerNormLast, Linear

DEPTHS = (3, 3, 9, 3)
DIMS = (96, 192, 384, 768)
NUM_KP = 21
NUM_BINS = 66
# Head name → output size, in upstream registration (= key) order.
HEADS = (("kp", NUM_KP * 3), ("scale", 1), ("pitch", NUM_BINS), ("yaw", NUM_BINS),
         ("roll", NUM_BINS), ("t", 3), ("exp", NUM_KP * 3))


class ConvNeXtV2Block(nn.Module):
    """dwconv 7×7 → LN_last (eps 1e-6) → Linear C→4C → GELU → GRN → Linear 4C→C, plus residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNormLast(dim)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(x)))))
        return r + x.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    """The `detector.*` sub-module: backbone, head norm (eps 1e-6) and the fc_* heads."""

    def __init__(self):
        super().__init__()
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(Conv2d(3, DIMS[0], kernel_size=4, stride=4), LayerNormFirst(DIMS[0]))
        ])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNormFirst(DIMS[i]), Conv2d(DIMS[i], DIMS[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtV2Block(DIMS[i]) for _ in range(DEPTHS[i])]) for i in range(4))
        self.norm = LayerNormLast(DIMS[-1])
        for name, size in HEADS:
            self.add_module(f"fc_{name}", Linear(DIMS[-1], size))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        feat = self.norm(x.mean([-2, -1]))
        return {name: getattr(self, f"fc_{name}")(feat) for name, _ in HEADS}


class MotionExtractor(nn.Module):
    """M: x (B,3,256,256) RGB in [0,1] → raw head outputs.

    Returns dict pitch, yaw, roll (B,66) bin logits; t (B,3); exp (B,63); scale (B,1);
    kp (B,63) (21×3 row-major). All 23 layer norms use eps 1e-6. 212 entries under `detector.`.
    """

    def __init__(self):
        super().__init__()
        self.detector = ConvNeXtV2Detector()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.detector(x)
        return {k: out[k] for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")}
