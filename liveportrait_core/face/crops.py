"""`FaceCrops`: the face crops of a picture or video, and how to put them back."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch


@dataclass
class FaceCrops:
    """N items (frame × face), each a face crop ready for the networks.

    crops:       [N,256,256,3] uint8 RGB network inputs (INTER_AREA from the crop_size² crop).
    M_c2o:       [N,3,3] float32 affine from crop pixels (crop_size² crop) to image pixels.
    landmarks:   [N,203,2] float32 203-point landmarks in crop pixels, or None (`none` mode
                 without a landmark model).
    frame_index: [N] int64 source frame of each item.
    face_id:     [N] int64 tracked face id of each item (0 for a single face).
    image_size:  (H, W) of the source frames.
    crop_size:   side of the crop M_c2o refers to (512 as the reference).
    missing_frames: frames where no face was found (their previous crop was reused).
    """

    crops: torch.Tensor
    M_c2o: torch.Tensor
    landmarks: Optional[torch.Tensor]
    frame_index: torch.Tensor
    face_id: torch.Tensor
    image_size: Tuple[int, int]
    crop_size: int = 512
    missing_frames: Tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.crops.shape[0])
