"""Image conversions at the library's boundaries, with one rounding rule.

Layouts: the library's images are RGB uint8 `[H,W,3]` (batches `[B,H,W,3]`), numpy; the networks
take float32 `[B,3,H,W]` in [0,1]; ComfyUI's IMAGE is float32 `[B,H,W,3]` in [0,1].

**The rule** for every conversion *into* uint8 (`to_rgb_u8`, `frames_to_rgb_u8`, `batch_to_u8`):
float images are 0..1 — NaN becomes 0, values are clipped to [0, 1], multiplied by 255 and
rounded to the nearest integer (ties to even), so float → uint8 → float is exact to half a level;
uint16 images keep their high byte; other integers are clipped to 0..255. Grey (HxW, HxWx1) is
copied to three channels; RGBA drops its alpha.

**The one exception** is `render_to_u8`, the renderer's uint8 output: clip, ×255 and *truncate*,
which is what the reference does with the decoder's output. The end-to-end parity tests compare
our uint8 frames with the reference's bit for bit, and rounding would change about half of the
pixels by one level, so that function keeps the reference's truncation and is used only there.
"""
from __future__ import annotations

from typing import Any, List

import numpy as np
import torch

from .errors import InputError


def _rounded_u8(arr: np.ndarray, name: str) -> np.ndarray:
    """`arr` (any numeric dtype) as uint8 by the module's rule (see the module doc)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name}: unsupported pixel type {arr.dtype}; use uint8 or float.")
    if np.issubdtype(arr.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _numpy(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    return np.asarray(image)


def to_rgb_u8(image: Any, name: str = "image", min_size: int = 2) -> np.ndarray:
    """One image as a contiguous `[H,W,3]` uint8 RGB numpy array (the module's rounding rule).

    Accepts numpy arrays or torch tensors shaped HxW or HxWx1 (grey), HxWx3 or HxWx4 (RGBA:
    alpha dropped); a leading batch dim of 1 is removed. Raises InputError (naming `name`) for
    anything else, or for a side below `min_size` (2 by default: an empty or 1×1 picture cannot
    hold a face).
    """
    arr = _numpy(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(
            f"{name}: expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got shape "
            f"{tuple(arr.shape)}. Pass one RGB picture.")
    if arr.shape[0] < max(min_size, 1) or arr.shape[1] < max(min_size, 1):
        raise InputError(
            f"{name}: the image is {arr.shape[1]}x{arr.shape[0]} pixels; it is empty or too small "
            "to hold a face. Use a real photo or video frame.")
    arr = _rounded_u8(arr, name)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def frames_to_rgb_u8(frames: Any, name: str = "frames") -> List[np.ndarray]:
    """`[F,H,W,C]` / `[H,W,C]` / `[F,H,W]` / a list of images → list of `[H,W,3]` uint8 (all one size)."""
    if isinstance(frames, (list, tuple)):
        out = [to_rgb_u8(f, name) for f in frames]
    else:
        a = _numpy(frames)
        if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4)):  # one image
            a = a[None]
        if a.ndim == 3:  # [F,H,W] grey batch
            a = a[..., None]
        if a.ndim != 4:
            raise InputError(f"{name}: expected frames [F,H,W,3], got shape {tuple(a.shape)}.")
        out = [to_rgb_u8(f, name) for f in a]
    if not out:
        raise InputError(f"{name}: no frames given.")
    shapes = {f.shape for f in out}
    if len(shapes) > 1:
        raise InputError(f"{name}: frames of different sizes {sorted(shapes)}; resize them first.")
    return out


def batch_to_u8(frames: Any, name: str = "frames") -> np.ndarray:
    """A batch `[B,H,W,C]` (or one `[H,W,C]` image; C = 3, 4: alpha dropped, 1: grey) of uint8
    or float 0..1, numpy or torch, as a `[B,H,W,3]` uint8 numpy array (the module's rule)."""
    arr = _numpy(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise InputError(f"{name} must be [B,H,W,3], got shape {tuple(arr.shape)}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    arr = _rounded_u8(arr, name)
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def crops_to_input(crops: Any) -> torch.Tensor:
    """Network input `[N,3,256,256]` float32 in [0,1] from RGB crops `[N,H,W,3]` (or FaceCrops).

    uint8 crops are divided by 255; float crops (0..1, ComfyUI) are used as they are, without
    quantising. Crops of another size are resized with cv2's default (bilinear) filter first, as
    the reference prepares its source; HWC → CHW.
    """
    crops = getattr(crops, "crops", crops)  # FaceCrops
    arr = _numpy(crops)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"face crops must be [N,H,W,3] RGB, got shape {tuple(arr.shape)}.")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and float(arr.max(initial=0.0)) <= 1.0:
            arr = arr * 255.0  # float 0..1 images (ComfyUI); the values stay float
        arr = arr.astype(np.float32)
    if arr.shape[1:3] != (256, 256):
        import cv2

        arr = np.stack([cv2.resize(a, (256, 256)) for a in arr])
    x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0).clamp_(0.0, 1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def render_to_u8(img: torch.Tensor) -> torch.Tensor:
    """Decoder output `[B,3,H,W]` float → `[B,H,W,3]` uint8 CPU tensor: clip, ×255, **truncate**
    (the reference's output conversion; see the module doc for why this one truncates)."""
    x = img.detach().float().permute(0, 2, 3, 1).clamp(0.0, 1.0) * 255.0
    return x.clamp(0.0, 255.0).to(torch.uint8).cpu()


def render_to_float(img: torch.Tensor) -> torch.Tensor:
    """Decoder output `[B,3,H,W]` → `[B,H,W,3]` float32 in [0,1], contiguous, on the CPU (IMAGE)."""
    return img.detach().float().permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu().contiguous()


def u8_to_float(frames: Any) -> torch.Tensor:
    """`[B,H,W,3]` uint8 (numpy or tensor) → float32 in [0,1] (`/255`, exact), on the CPU."""
    t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    return t.float().div(255.0)
