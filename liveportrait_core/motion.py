"""`Motion`: LivePortrait's per-frame keypoint parameters, batched over items (frames × faces).

Plain, editable data: every field is a CPU float32 tensor with items on dim 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

NUM_KP = 21


@dataclass
class Motion:
    """Keypoint parameters of N items (frames, or frame × face for several faces).

    pitch, yaw, roll: [N] float32 degrees.
    R:     [N,3,3] float32 rotation, row-vector convention (keypoints are multiplied as kp @ R).
    exp:   [N,21,3] float32 expression deformation δ.
    t:     [N,3] float32 translation (only x, y are used).
    scale: [N,1] float32.
    kp:    [N,21,3] float32 canonical keypoints x_c, or None (motion templates carry none).
    eye_ratio: [N,2] float32 [left, right] eye-open ratios, or None when unknown.
    lip_ratio: [N,1] float32 lip-open ratio, or None when unknown.
    fps:   frames per second of the sequence (25 for a still image, as the reference does).
    face_id: [N] int64 face id per item (0 for a single face).
    frame_index: [N] int64 frame per item.
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    R: torch.Tensor
    exp: torch.Tensor
    t: torch.Tensor
    scale: torch.Tensor
    kp: Optional[torch.Tensor] = None
    eye_ratio: Optional[torch.Tensor] = None
    lip_ratio: Optional[torch.Tensor] = None
    fps: float = 25.0
    face_id: Optional[torch.Tensor] = None
    frame_index: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.R.shape[0])
