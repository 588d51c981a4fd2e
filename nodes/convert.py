"""ComfyUI IMAGE / MASK ↔ the core's uint8 frames. Conversions only, no LivePortrait math."""
from __future__ import annotations

import numpy as np
import torch

from . import comfy as C


def image_to_u8(image: torch.Tensor, name: str = "image") -> np.ndarray:
    """IMAGE [B,H,W,C] float 0..1 (C = 3, or 4 with alpha: dropped; 1: grey) → [B,H,W,3] uint8
    (the core's rounding rule, liveportrait_core/images.py)."""
    from ..liveportrait_core.errors import InputError
    from ..liveportrait_core.images import batch_to_u8

    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise InputError(f"{name}: expected a ComfyUI IMAGE [B,H,W,C], got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}.")
    if image.ndim == 4 and image.shape[0] == 0:
        raise InputError(f"{name}: the IMAGE batch is empty (0 frames).")
    if image.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name}: expected 1, 3 or 4 channels, got {image.shape[-1]}.")
    return batch_to_u8(image, name)


def u8_to_image(frames) -> torch.Tensor:
    """[B,H,W,3] uint8 (numpy or tensor) → IMAGE float32 0..1 on ComfyUI's intermediate device."""
    from ..liveportrait_core.images import u8_to_float

    return u8_to_float(frames).to(C.intermediate_device())


def mask_batch(mask: torch.Tensor, size: tuple[int, int], n: int) -> np.ndarray:
    """MASK [B,H,W] or [H,W] (any size, e.g. LoadImage's 64×64 zeros) → float32 [n or 1,h,w] at
    `size` (h, w), 1 = selected."""
    import torch.nn.functional as F

    m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)
    m = m[:, 0].clamp(0, 1)
    if m.shape[0] not in (1, n):
        m = m[:n] if m.shape[0] > n else torch.cat([m, m[-1:].expand(n - m.shape[0], -1, -1)])
    return m.cpu().numpy()
