"""SPADE generator G (docs/ARCHITECTURE.md, Networks): warped feature (B,256,64,64) → image (B,3,512,512)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv2d, SNConv2d, instance_norm


class SPADE(nn.Module):
    """SPADE(x, seg) = IN(x)·(1+γ) + β with γ, β = conv(ReLU(conv(nearest-resize(seg)))).

    Keys `mlp_shared.0.*` (conv 3×3 label_nc→128), `mlp_gamma.*`, `mlp_beta.*` (3×3 128→norm_nc).
    """

    def __init__(self, norm_nc: int, label_nc: int = 256, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = instance_norm(x)
        if seg.shape[2:] != x.shape[2:]:  # nearest resize; the same size is an exact no-op
            seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        gamma, beta = self.mlp_gamma(actv), self.mlp_beta(actv)
        return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
    """Residual block: conv_1(LReLU0.2(norm_1(conv_0(LReLU0.2(norm_0(x)))))) + shortcut, where
    the shortcut is conv_s(norm_s(x)) (1×1 SN-conv, no bias, no activation) if fin ≠ fout."""

    def __init__(self, fin: int, fout: int, label_nc: int = 256):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        # Registration order = key order: conv_0, conv_1, conv_s, norm_0, norm_1, norm_s.
        self.conv_0 = SNConv2d(fin, fmid, 3, padding=1)
        self.conv_1 = SNConv2d(fmid, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmid, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        # All SPADEs of the block work at x's resolution: resize the map once, not per SPADE.
        if seg.shape[2:] != x.shape[2:]:
            seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        xs = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return xs + dx


class SPADEGenerator(nn.Module):
    """G: feature (B,256,64,64) (= W's `out`, also the SPADE conditioning map) → (B,3,512,512)
    image in [0,1], in the input's dtype.

    fc 3×3 256→512 → 6 × SPADEResnetBlock(512,512) → nearest×2 → up_0 (512→256) → nearest×2 →
    up_1 (256→64) → LReLU(0.2) → conv_img.0 3×3 64→12 → PixelShuffle(2) → sigmoid. 182 entries.
    Spectral-normalised convs use the eval weight weight_orig / (u·(W v)) (see blocks.SNConv2d).
    """

    def __init__(self, label_nc: int = 256, block_expansion: int = 64, max_features: int = 512,
                 out_channels: int = 64, upscale: int = 2):
        super().__init__()
        nf = min(max_features, block_expansion * 8)  # 512
        self.fc = Conv2d(label_nc, nf, 3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(nf, nf, label_nc))
        self.up_0 = SPADEResnetBlock(nf, nf // 2, label_nc)
        self.up_1 = SPADEResnetBlock(nf // 2, out_channels, label_nc)
        self.conv_img = nn.Sequential(
            Conv2d(out_channels, 3 * upscale * upscale, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)
