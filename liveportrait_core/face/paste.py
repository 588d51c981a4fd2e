"""Paste-back of animated face crops into the original frames (docs/ARCHITECTURE.md, Face crops).

Boundary: frames and crops are RGB uint8 numpy arrays (other inputs go through
`images.to_rgb_u8`); warps are OpenCV's, as the reference, so the default path reproduces the
reference bit for bit. Masks are float32 in 0..1.

Reference path (defaults): the 512² template mask (255 inside, a 16-px ramp to 0 at the crop
border) is warped into the frame with `M_c2o` (INTER_LINEAR, black border) → `mask`; the crop is
warped the same way → `warped`; `out = clip(mask·warped + (1−mask)·frame)` in float32, truncated
to uint8. Extras: a user mask (crop space or image space), wider feathering and colour matching.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional, Tuple, Union

import cv2
import numpy as np

from ..errors import InputError
from ..images import to_rgb_u8
from .crop import CROP_SIZE, F32, warp

TEMPLATE_RAMP = 16  # px of the reference template's border ramp (at crop size 512)


@lru_cache(maxsize=8)  # keyed by (size, ramp) values; the array is returned read-only
def mask_template(size: int = CROP_SIZE, ramp: float = TEMPLATE_RAMP) -> np.ndarray:
    """Procedural paste mask [size,size] uint8; equals the reference mask_template.png exactly
    for size 512, ramp 16.

    `v = floor(255·(1 − min(r, ramp)/ramp))` with `r = √(ex² + ey²)`, `ex = max(ramp − dx, 0)`,
    `dx = min(col, size − col)` (the reference's `size − index` on the far side), same for rows:
    255 inside, a linear ramp to 0 at the border, rounded corners.
    """
    i = np.arange(size, dtype=np.float64)
    e = np.maximum(ramp - np.minimum(i, size - i), 0.0)
    r = np.sqrt(e[None, :] ** 2 + e[:, None] ** 2)
    v = np.clip(np.floor(255.0 * (1.0 - np.minimum(r, ramp) / ramp)), 0, 255).astype(np.uint8)
    v.flags.writeable = False
    return v


def crop_to_image_matrix(M_c2o: np.ndarray, size: int, crop_size: int = CROP_SIZE) -> np.ndarray:
    """M_c2o of a size² crop that is a resize (e.g. upscale) of the crop_size² crop M_c2o refers to.

    Uses OpenCV's pixel-centre convention: pixel x of the size² crop is at
    `(x + 0.5)·crop_size/size − 0.5` in the crop_size² crop. Returns [3,3] float32 (M_c2o itself
    when size == crop_size).
    """
    M_c2o = np.asarray(M_c2o, dtype=F32)
    if size == crop_size:
        return M_c2o
    r = crop_size / size
    A = np.array([[r, 0, 0.5 * r - 0.5], [0, r, 0.5 * r - 0.5], [0, 0, 1]], dtype=np.float64)
    return (M_c2o.astype(np.float64) @ A).astype(F32)


def _as_batch(x: Any, name: str, ndim: int) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == ndim - 1:
        x = x[None]
    if x.ndim != ndim:
        raise InputError(f"{name}: expected {ndim - 1} or {ndim} dims, got shape {tuple(x.shape)}.")
    return x


def _as_mask(x: Any, name: str) -> np.ndarray:
    """Float32 0..1 mask batch [N,h,w] from uint8 (0..255), bool or float (0..1)."""
    m = _as_batch(x, name, 3)
    if m.dtype == np.uint8:
        return m.astype(F32) / 255.0
    return np.clip(m.astype(F32), 0.0, 1.0)


def crop_mask(crop_size: int = CROP_SIZE, feather: float = 0.0,
              user_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Crop-space paste mask [crop_size,crop_size]: uint8 template when there is nothing to add
    (reference path), else float32 0..1.

    feather: extra feathering in crop_size-crop pixels: the template ramp widens from 16 to
    16 + feather px, and a user mask is blurred with σ = feather/2 px.
    user_mask: [h,w] float32 0..1 in crop space (resized to crop_size²); it restricts the template
    (product), so the crop border always fades out.
    """
    if feather < 0:
        raise InputError(f"feather: must be ≥ 0 pixels, got {feather}.")
    ramp = TEMPLATE_RAMP * crop_size / CROP_SIZE + feather
    tmpl = mask_template(crop_size, ramp)
    if user_mask is None and feather == 0:
        return tmpl
    m = tmpl.astype(F32) / 255.0
    if user_mask is not None:
        um = np.asarray(user_mask, dtype=F32)
        if um.shape != (crop_size, crop_size):
            um = cv2.resize(um, (crop_size, crop_size), interpolation=cv2.INTER_LINEAR)
        if feather > 0:
            um = cv2.GaussianBlur(um, (0, 0), sigmaX=feather / 2)
        m = m * np.clip(um, 0.0, 1.0)
    return m


def _warped_mask(mask: np.ndarray, M_c2o: np.ndarray, size: Tuple[int, int]
                 ) -> Tuple[slice, slice, np.ndarray]:
    """Warp a crop-space mask (uint8 0..255 or float 0..1) into the frame; return the bounding box
    of its non-zero part and the float32 0..1 values inside it (u8/255, as the reference)."""
    full = warp(mask, M_c2o, size)
    nz = full > 0
    rows = np.flatnonzero(nz.any(axis=1))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), F32)
    cols = np.flatnonzero(nz.any(axis=0))
    rs, cs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    roi = full[rs, cs]
    return rs, cs, (roi.astype(F32) / 255.0 if roi.dtype == np.uint8 else roi.astype(F32))


def match_colors(face: np.ndarray, target: np.ndarray, weight: np.ndarray,
                 strength: float = 1.0) -> np.ndarray:
    """Shift the colours of `face` [h,w,3] uint8 so that, inside `weight` [h,w] (0..1), their Lab
    mean and standard deviation per channel equal those of `target` (Reinhard transfer).

    Returns float32 RGB 0..255; strength blends between no change (0) and a full match (1).
    """
    sub = np.s_[::2, ::2] if min(face.shape[:2]) >= 64 else np.s_[:, :]  # stats: every 4th px
    w = weight[sub].astype(F32)
    total = float(w.sum())
    if total < 1.0 or strength <= 0:
        return face.astype(F32)
    lab_f = cv2.cvtColor(face.astype(F32) / 255.0, cv2.COLOR_RGB2LAB)
    lab_t = cv2.cvtColor(np.ascontiguousarray(target[sub]).astype(F32) / 255.0,
                         cv2.COLOR_RGB2LAB)
    wn = (w / total)[..., None]
    lf = lab_f[sub]
    mu_f, mu_t = (lf * wn).sum((0, 1)), (lab_t * wn).sum((0, 1))
    sd_f = np.sqrt(((lf - mu_f) ** 2 * wn).sum((0, 1))) + 1e-3
    sd_t = np.sqrt(((lab_t - mu_t) ** 2 * wn).sum((0, 1))) + 1e-3
    gain = np.clip(sd_t / sd_f, 0.25, 4.0)  # a flat face region must not explode
    lab = (lab_f - mu_f) * gain + mu_t
    rgb = cv2.cvtColor(lab.astype(F32), cv2.COLOR_LAB2RGB) * 255.0
    out = face.astype(F32) + float(strength) * (rgb - face.astype(F32))
    return np.clip(out, 0.0, 255.0)


def paste_back(frames: Any, crops: Any, M_c2o: Any, mask: Any = None, feather: float = 0.0,
               color_match: Union[bool, float] = False, crop_size: int = CROP_SIZE,
               image_mask: Any = None, into: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Paste N animated face crops into their frames.

    frames:  [F,H,W,3] (or [1,H,W,3] / [H,W,3], broadcast) RGB uint8 original frames.
    crops:   [N,S,S,3] RGB uint8 animated crops, any square size S (S ≠ crop_size: a resized
             crop, e.g. from an upscaler; mapped with OpenCV's pixel-centre convention).
    M_c2o:   [N,3,3] (or [3,3], broadcast) float32, crop_size² crop px → frame px.
    mask:    optional crop-space mask [h,w] or [N,h,w] (float 0..1 or uint8); multiplies the template.
    feather: extra feathering in crop_size-crop px (0 = reference).
    color_match: False/0 = off (reference); True/1 = match the pasted face's Lab mean/std to the
             original under the mask; a float in between blends.
    image_mask: optional frame-space mask [H,W] or [N,H,W] (float 0..1 or uint8) multiplied into
             the warped mask of each crop (e.g. to protect a region of the picture).
    into:    optional [N] ints: the output frame of each crop. Several crops with the same value
             (several faces of one frame) are pasted one after the other into that frame. Default:
             crop i → output frame i. Output frames: F if F > 1, else max(into) + 1 (frames[0]
             broadcast).
    Returns (frames [F_out,H,W,3] uint8, a new array — inputs are not modified; masks
    [F_out,H,W] float32 0..1, the blend weight of the pasted faces: the warped mask of the one crop
    of a frame, 1 − Π(1 − mᵢ) for several).
    """
    crops = _as_batch(crops, "crops", 4)
    n, s = crops.shape[0], crops.shape[1]
    if crops.shape[2] != s or crops.shape[3] != 3 or n == 0:
        raise InputError(f"crops: expected square RGB crops [N,S,S,3], got {tuple(crops.shape)}.")
    frames = _as_batch(frames, "frames", 4)
    M = _as_batch(M_c2o, "M_c2o", 3).astype(F32)
    if M.shape[1:] != (3, 3) or M.shape[0] not in (1, n):
        raise InputError(f"M_c2o: expected [{n},3,3] (or one [3,3]) matrices, got {tuple(M.shape)}.")
    if into is None:
        dest = np.arange(n)
        if frames.shape[0] not in (1, n):
            raise InputError(f"frames: {frames.shape[0]} frames for {n} crops; give one, or one "
                             "per crop, or say which frame each crop goes into (into=).")
    else:
        dest = np.asarray(into, dtype=np.int64).reshape(-1)
        if dest.shape[0] != n or dest.min() < 0 or \
                (frames.shape[0] > 1 and dest.max() >= frames.shape[0]):
            raise InputError(f"into: expected {n} frame indices in 0..{frames.shape[0] - 1}, "
                             f"got {dest.tolist()[:8]}.")
    f_out = frames.shape[0] if frames.shape[0] > 1 else int(dest.max()) + 1
    h, w = frames.shape[1:3]
    user = None if mask is None else _as_mask(mask, "mask")
    img_m = None if image_mask is None else _as_mask(image_mask, "image_mask")
    if user is not None and user.shape[0] not in (1, n):
        raise InputError(f"mask: {user.shape[0]} masks for {n} crops; give one, or one per crop.")
    if img_m is not None and (img_m.shape[0] not in (1, n) or img_m.shape[1:] != (h, w)):
        raise InputError(f"image_mask: expected [{n} or 1,{h},{w}], got {tuple(img_m.shape)}.")
    strength = float(color_match)
    pick = lambda a, i: a[i if a.shape[0] > 1 else 0]  # noqa: E731 (broadcast of one item)

    out = np.empty((f_out, h, w, 3), np.uint8)
    for g in range(f_out):
        out[g] = to_rgb_u8(pick(frames, g), "frames")
    masks = np.zeros((f_out, h, w), F32)
    touched = np.zeros(f_out, bool)
    cache_key, cached = None, None
    for i in range(n):
        g, Mi = int(dest[i]), pick(M, i)
        ui = None if user is None else (i if user.shape[0] > 1 else 0)
        if (Mi.tobytes(), ui) != cache_key:  # image source: one mask for every frame
            cached = _warped_mask(crop_mask(crop_size, feather, None if ui is None else user[ui]),
                                  Mi, (w, h))
            cache_key = (Mi.tobytes(), ui)
        rs, cs, m = cached  # outside this box the mask is 0: the blend returns the frame exactly
        if img_m is not None:
            m = m * pick(img_m, i)[rs, cs]
        if touched[g]:
            masks[g, rs, cs] = 1 - (1 - masks[g, rs, cs]) * (1 - m)
        else:
            masks[g, rs, cs] = m
        touched[g] = True
        if m.size == 0:
            continue
        warped = warp(to_rgb_u8(crops[i], "crops"), crop_to_image_matrix(Mi, s, crop_size),
                      (w, h))[rs, cs]
        wf = warped.astype(F32)
        if strength > 0:
            orig = to_rgb_u8(pick(frames, g), "frames")[rs, cs]
            wf = match_colors(warped, orig, m >= 0.5, strength)
        m3 = m[..., None]
        blend = m3 * wf + (1 - m3) * out[g, rs, cs].astype(F32)
        out[g, rs, cs] = np.clip(blend, 0, 255).astype(np.uint8)
    return out, masks
