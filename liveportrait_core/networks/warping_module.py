"""Warping module W with its dense-motion network (docs/ARCHITECTURE.md, Networks).

Geometry (coordinate grids, keypoint translations, Gaussian heatmaps, the softmax mask, the
deformation field and both `grid_sample` calls) is always computed in float32, also when the
module is cast to float16 / bfloat16: sampling positions in [-1, 1] need more than float16's
~5e-4 resolution. The 3-D convolutions run in the module dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .blocks import BatchNorm3d, Conv2d, Conv3d, DownBlock3d, SameBlock2d, UpBlock3d, upcast

NUM_KP = 21
KP_VARIANCE = 0.01


def coordinate_grid(d: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(d,h,w,3) grid with last axis (x, y, z): corner-aligned 2·i/(n−1) − 1 per axis."""

    def axis(n: int) -> torch.Tensor:
        t = torch.arange(n, device=device, dtype=dtype)
        return 2 * (t / (n - 1)) - 1

    z, y, x = axis(d), axis(h), axis(w)
    return torch.stack([x.view(1, 1, w).expand(d, h, w), y.view(1, h, 1).expand(d, h, w),
                        z.view(d, 1, 1).expand(d, h, w)], dim=-1)


class Hourglass3d(nn.Module):
    """3-D U-Net (depth never pooled): encoder DownBlock3d ×5, decoder UpBlock3d ×5 with
    `[upsampled, skip]` concatenation, then conv3d 3³ → BN3d → ReLU. (B,110,D,H,W) → (B,142,D,H,W).
    """

    def __init__(self, in_features: int = 110, block_expansion: int = 32,
                 max_features: int = 1024, num_blocks: int = 5):
        super().__init__()
        self.encoder = nn.Module()
        down, chans = [], [in_features]
        for i in range(num_blocks):
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(DownBlock3d(chans[-1], cout))
            chans.append(cout)
        self.encoder.down_blocks = nn.ModuleList(down)
        self.decoder = nn.Module()
        up, cin = [], chans[-1]
        for i in reversed(range(num_blocks)):
            cout = min(max_features, block_expansion * 2 ** i)
            up.append(UpBlock3d(cin, cout))
            cin = cout + chans[i]
        self.decoder.up_blocks = nn.ModuleList(up)
        self.decoder.conv = Conv3d(cin, cin, 3, padding=1)
        self.decoder.norm = BatchNorm3d(cin)
        self.out_filters = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.encoder.down_blocks:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.decoder.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.decoder.norm(self.decoder.conv(out)))


class DenseMotionNetwork(nn.Module):
    """Predicts the deformation field and occlusion map from f_s and the two keypoint sets."""

    def __init__(self, feature_channel: int = 32, num_kp: int = NUM_KP, compress: int = 4,
                 reshape_depth: int = 16):
        super().__init__()
        self.num_kp, self.compress_channels = num_kp, compress
        n = num_kp + 1
        # Registration order = key order: hourglass, mask, compress, norm, occlusion.
        self.hourglass = Hourglass3d(in_features=n * (compress + 1))
        c = self.hourglass.out_filters
        self.mask = Conv3d(c, n, kernel_size=7, padding=3)
        self.compress = Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = BatchNorm3d(compress)
        self.occlusion = Conv2d(c * reshape_depth, 1, kernel_size=7, padding=3)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        b = feature.shape[0]
        feat = F.relu(self.norm(self.compress(feature)))            # (B,4,D,H,W)
        d, h, w = feat.shape[2:]
        n = self.num_kp + 1
        cdt = upcast(feature).dtype                                  # float32 (float64 stays)
        grid = coordinate_grid(d, h, w, device=feature.device, dtype=cdt)  # (D,H,W,3)
        kp_d = kp_driving.to(cdt).reshape(b, self.num_kp, 1, 1, 1, 3)
        kp_s = kp_source.to(cdt).reshape(b, self.num_kp, 1, 1, 1, 3)

        # Sparse motions (B,22,D,H,W,3): slot 0 identity, slot k+1 = grid − x_d[k] + x_s[k].
        motions = torch.cat([grid.expand(b, 1, d, h, w, 3), grid - kp_d + kp_s], dim=1)

        # Deformed features (B,22,4,D,H,W). Instead of repeating `feat` 22× (batch-major
        # B·22 rows), the 22 motions of an item are stacked along the *output depth* of one
        # grid_sample call on that item's (un-repeated) feature: every output voxel is the same
        # pointwise trilinear sample, without the 22× input copy, and items cannot mix.
        sampled = F.grid_sample(upcast(feat), motions.reshape(b, n * d, h, w, 3), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        deformed = sampled.view(b, self.compress_channels, n, d, h, w).transpose(1, 2)

        # Heatmaps: Gaussian(driving) − Gaussian(source), background slot zeros first.
        def gaussian(kp: torch.Tensor) -> torch.Tensor:
            diff = grid - kp
            return torch.exp(-0.5 * (diff ** 2).sum(-1) / KP_VARIANCE)

        heat = gaussian(kp_d) - gaussian(kp_s)                       # (B,21,D,H,W)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)

        # Channel 5·k + c: c = 0 heatmap, c = 1..4 deformed feature of slot k.
        inp = torch.cat([heat, deformed], dim=2).reshape(b, n * (self.compress_channels + 1), d, h, w)
        prediction = self.hourglass(inp.to(feature.dtype))           # (B,142,D,H,W)

        mask = F.softmax(upcast(self.mask(prediction)), dim=1)       # (B,22,D,H,W) float32
        # deformation = Σ_k m_k · motion_k → (B,D,H,W,3)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1)
        deformation = deformation.permute(0, 2, 3, 4, 1)

        occ_in = prediction.reshape(b, -1, h, w)                     # channel 16·c + depth
        occlusion = torch.sigmoid(self.occlusion(occ_in))
        return {"deformation": deformation, "occlusion_map": occlusion, "mask": mask}


class WarpingModule(nn.Module):
    """W(feature_3d (B,32,16,64,64), kp_source (B,21,3), kp_driving (B,21,3)) →
    dict `out` (B,256,64,64), `occlusion_map` (B,1,64,64) in [0,1], `deformation`
    (B,16,64,64,3) (x,y,z sampling grid). Outputs have the dtype of `feature_3d`.

    Positional order is (feature_3d, kp_source, kp_driving); pass keypoints by keyword to be
    safe (upstream's positional order is (feature_3d, kp_driving, kp_source)). 97 entries.
    """

    def __init__(self):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork()
        self.third = SameBlock2d(512, 256, lrelu=True)
        self.fourth = Conv2d(256, 256, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        b = feature_3d.shape[0]
        for name, kp in (("kp_source", kp_source), ("kp_driving", kp_driving)):
            if tuple(kp.shape) != (b, NUM_KP, 3):
                raise InputError(f"WarpingModule: {name} must have shape ({b}, {NUM_KP}, 3) to match "
                                 f"feature_3d's batch, got {tuple(kp.shape)}")
        dtype = feature_3d.dtype
        dense = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        deformation = dense["deformation"]
        warped = F.grid_sample(upcast(feature_3d), deformation, mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        b, c, d, h, w = warped.shape
        y = self.fourth(self.third(warped.reshape(b, c * d, h, w).to(dtype)))
        occ = dense["occlusion_map"]
        return {"out": y * occ, "occlusion_map": occ, "deformation": deformation.to(dtype)}
