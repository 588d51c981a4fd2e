"""Stitching and eye/lip retargeting MLPs (docs/ARCHITECTURE.md, Networks).

Three plain MLPs `Linear, ReLU, …, Linear` (keys `mlp.0`, `mlp.2`, …). Inputs are flattened
keypoints `[B,63]` (row-major over `[B,21,3]`) concatenated with ratios; outputs are raw deltas.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class RetargetMLP(nn.Module):
    """`Linear → ReLU → … → Linear` with a ReLU after every hidden layer."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes, output_size]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


# Sub-dict name in the upstream .pth → (attribute, input, hidden, output); models.yaml values.
MLP_SPECS = {
    "retarget_shoulder": ("stitching_mlp", 126, (128, 128, 64), 65),
    "retarget_mouth": ("lip_mlp", 65, (128, 128, 64), 63),
    "retarget_eye": ("eye_mlp", 66, (256, 256, 128, 128, 64), 63),
}


class StitchingRetargeting(nn.Module):
    """The three MLPs of `stitching_retargeting_module`.

    stitching(x [B,126]) → [B,65]: 63 keypoint deltas + (Δtx, Δty).
    eye(x [B,66]) → [B,63];  lip(x [B,65]) → [B,63].
    State-dict keys: `<subdict>.mlp.N.weight|bias` with subdict in MLP_SPECS.
    """

    def __init__(self):
        super().__init__()
        self.retarget_shoulder = RetargetMLP(*MLP_SPECS["retarget_shoulder"][1:])
        self.retarget_mouth = RetargetMLP(*MLP_SPECS["retarget_mouth"][1:])
        self.retarget_eye = RetargetMLP(*MLP_SPECS["retarget_eye"][1:])

    def stitching(self, x: torch.Tensor) -> torch.Tensor:
        return self.retarget_shoulder(x)

    def eye(self, x: torch.Tensor) -> torch.Tensor:
        return self.retarget_eye(x)

    def lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.retarget_mouth(x)
