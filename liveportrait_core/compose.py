"""Composition: source Motion + driving Motion + options → the keypoints warping consumes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class KeypointPlan:
    """Per output frame, what warping consumes (ARCHITECTURE.md §9.3).

    x_s:  [N,21,3] float32 source keypoints.
    x_d:  [N,21,3] float32 driving keypoints after composition, stitching, retargeting and
          the driving multiplier.
    source_index: [N] int64 index of the source item (FaceCrops / Motion item) whose
          appearance feature f_s is warped for this output frame.
    fps:  output frame rate.
    face_id: [N] int64 face id of each output item (0 for a single face).
    """

    x_s: torch.Tensor
    x_d: torch.Tensor
    source_index: torch.Tensor
    fps: float = 25.0
    face_id: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.x_d.shape[0])
