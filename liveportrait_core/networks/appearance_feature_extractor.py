"""Appearance feature extractor F (docs/ARCHITECTURE.md, Networks): source crop → 3-D feature volume f_s."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Conv2d, DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(nn.Module):
    """F: x (B,3,256,256) RGB in [0,1] (float, module dtype) → f_s (B,32,16,64,64).

    first SameBlock2d 3→64 → DownBlock2d 64→128 → DownBlock2d 128→256 → 1×1 conv 256→512 →
    view as (32 features × 16 depth), channel c ↦ (c // 16, c % 16) → 6 × ResBlock3d(32).
    Inference-only (batch norms use running statistics). 107 state-dict entries.
    """

    def __init__(self):
        super().__init__()
        self.reshape_channel, self.reshape_depth = 32, 16
        self.first = SameBlock2d(3, 64)
        self.down_blocks = nn.ModuleList([DownBlock2d(64, 128), DownBlock2d(128, 256)])
        self.second = Conv2d(256, 512, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(6):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(self.reshape_channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        x = x.view(b, self.reshape_channel, self.reshape_depth, h, w)
        return self.resblocks_3d(x)
