"""Face crop geometry: landmarks → rotated square → similarity warp (docs/ARCHITECTURE.md, Face crops).

Boundary: every function here works on **RGB uint8 HxWx3 numpy images** (what OpenCV warps and
what parity with the reference needs) and float32 landmark arrays in pixel coordinates
(x right, y down). `images.to_rgb_u8` converts anything else a caller may hold (ComfyUI float
0..1 images, torch tensors, greyscale, RGBA) once, at the edge.

Matrices are 3×3 float32: `M_o2c` maps original-image pixels to crop pixels, `M_c2o` is its
inverse. The float32 arithmetic order follows the spec so the matrices match the reference to
about one float32 ulp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import InputError
from ..images import to_rgb_u8

F32 = np.float32


class CropPreset(NamedTuple):
    """`scale`: box side / landmark extent; `vx_ratio`, `vy_ratio`: box shift in box sides."""

    scale: float
    vx_ratio: float
    vy_ratio: float


SOURCE = CropPreset(2.3, 0.0, -0.125)  # source image / source video crops
DRIVING = CropPreset(2.2, 0.0, -0.1)  # driving-video auto-crop
LANDMARK_RUNNER = CropPreset(1.5, 0.0, -0.1)  # 224² input of the 203-point model

NETWORK_SIZE = 256
CROP_SIZE = 512


@dataclass
class CropResult:
    """One face crop.

    crop:      [dsize,dsize,3] uint8 RGB.
    M_o2c:     [3,3] float32, original pixels → crop pixels.
    M_c2o:     [3,3] float32, crop pixels → original pixels.
    landmarks: [K,2] float32 landmarks in crop pixels (None if none were given).
    """

    crop: np.ndarray
    M_o2c: np.ndarray
    M_c2o: np.ndarray
    landmarks: Optional[np.ndarray]


@dataclass
class Rect:
    """Rotated square of a face: centre [2] f32 (px), side (px), angle (radians, float64)."""

    center: np.ndarray
    side: float
    angle: float


# ---------------------------------------------------------------- input boundary


def _as_points(landmarks: Any, name: str = "landmarks") -> np.ndarray:
    if hasattr(landmarks, "detach"):
        landmarks = landmarks.detach().cpu().numpy()
    pts = np.asarray(landmarks, dtype=F32)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise InputError(f"{name}: expected a [K,2] array of landmark points, got {tuple(pts.shape)}.")
    if not np.all(np.isfinite(pts)):
        raise InputError(f"{name}: contains NaN or infinite coordinates.")
    return pts


# ---------------------------------------------------------------- guide points

SUPPORTED_COUNTS = "5, 9, 68, 101, 106, 203 or any count above 101"


def _eyes_lip(pts: np.ndarray, left: Sequence[int], right: Sequence[int], lip: Tuple[int, int]):
    eye = (np.mean(pts[list(left)], axis=0) + np.mean(pts[list(right)], axis=0)) / 2
    return eye, (pts[lip[0]] + pts[lip[1]]) / 2


def guide_points(landmarks: Any) -> np.ndarray:
    """Two guide points [[eye centre], [mouth centre]] ([2,2] float32) of a landmark set.

    The convention is recognised by the point count (checked in the reference's order 101, 106, 68,
    5, 203, >101 (first 101 used), 9). Raises InputError for other counts.
    """
    pts = _as_points(landmarks)
    k = pts.shape[0]
    if k == 101 or (k > 101 and k not in (106, 203)):
        eye, lip = _eyes_lip(pts[:101], (39, 42, 45, 48), (51, 54, 57, 60), (75, 81))
    elif k == 106:
        eye, lip = _eyes_lip(pts, (33, 35, 40, 39), (87, 89, 94, 93), (52, 61))
    elif k == 68:
        eye, lip = _eyes_lip(pts, (36, 39), (42, 45), (48, 54))
    elif k == 5:
        eye, lip = (pts[0] + pts[1]) / 2, (pts[3] + pts[4]) / 2
    elif k == 203:
        eye, lip = _eyes_lip(pts, (0, 6, 12, 18), (24, 30, 36, 42), (48, 66))
    elif k == 9:
        eye, lip = ((pts[2] + pts[3]) / 2 + (pts[0] + pts[1]) / 2) / 2, (pts[5] + pts[6]) / 2
    else:
        raise InputError(
            f"landmarks: {k} points is not a supported landmark layout ({SUPPORTED_COUNTS}).")
    return np.stack([eye, lip], axis=0).astype(F32)


# ---------------------------------------------------------------- rotated square


def parse_rect_from_landmark(landmarks: Any, scale: float = SOURCE.scale, vx_ratio: float = 0.0,
                             vy_ratio: float = SOURCE.vy_ratio) -> Rect:
    """Rotated square box of a face from its landmarks (guide points orient it, all points size it).

    Returns Rect(center [2] float32, side (float32 value), angle radians (float64)).
    """
    pts = _as_points(landmarks)
    eye, lip = guide_points(pts)
    uy = lip - eye
    norm = np.linalg.norm(uy)
    uy = np.array([0, 1], dtype=F32) if norm <= 1e-3 else uy / norm
    ux = np.array((uy[1], -uy[0]), dtype=F32)
    angle = math.acos(float(ux[0]))  # float64 acos of the float32 value, as the reference
    if ux[1] < 0:
        angle = -angle
    c0 = np.mean(pts, axis=0)
    q = (pts - c0) @ np.stack([ux, uy]).T
    lo, hi = q.min(axis=0), q.max(axis=0)
    c1 = (lo + hi) / 2
    size = hi - lo
    size = np.full(2, max(size[0], size[1]), dtype=F32) * scale  # f32 (numpy-2 scalar rule)
    if not (np.isfinite(size[0]) and size[0] > 0):
        raise InputError(f"landmarks: the points span no area (box side {float(size[0])} with "
                         f"scale {scale}); pass the landmarks of a real face and a scale > 0.")
    center = c0 + ux * c1[0] + uy * c1[1]
    center = center + ux * (vx_ratio * size) + uy * (vy_ratio * size)
    return Rect(center=center.astype(F32), side=F32(size[0]), angle=angle)


# ---------------------------------------------------------------- similarity matrix


def rect_to_matrix(rect: Rect, dsize: int = CROP_SIZE, rotate: bool = True) -> np.ndarray:
    """M_o2c [3,3] float32 mapping the rect onto a dsize² crop (its centre to the crop centre)."""
    s = F32(dsize) / F32(rect.side)
    t = F32(dsize / 2)
    cx, cy = F32(rect.center[0]), F32(rect.center[1])
    if rotate:
        c, n = math.cos(rect.angle), math.sin(rect.angle)  # float64, meet float32 values below
        m = [[s * c, s * n, t - s * (c * cx + n * cy)],
             [-s * n, s * c, t - s * (-n * cx + c * cy)]]
    else:
        m = [[s, 0, t - s * cx], [0, s, t - s * cy]]
    return np.vstack([np.array(m, dtype=F32), np.array([0, 0, 1], dtype=F32)])


def invert(M: np.ndarray) -> np.ndarray:
    """Inverse of a 3×3 affine matrix, float32 (float32 LAPACK inverse, as the reference)."""
    return np.linalg.inv(np.asarray(M, dtype=F32)).astype(F32)


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """points [...,2] → `p @ M[:2,:2]ᵀ + M[:2,2]` in float32."""
    M = np.asarray(M, dtype=F32)
    return (np.asarray(points, dtype=F32) @ M[:2, :2].T + M[:2, 2]).astype(F32)


def warp(image: np.ndarray, M: np.ndarray, size: Tuple[int, int],
         flags: int = cv2.INTER_LINEAR) -> np.ndarray:
    """cv2.warpAffine with M[:2] to size=(W,H), black border (the reference's warp)."""
    return cv2.warpAffine(image, np.asarray(M, dtype=F32)[:2], size, flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ---------------------------------------------------------------- crop


def crop_from_matrix(image: Any, M_o2c: np.ndarray, dsize: int = CROP_SIZE,
                     landmarks: Any = None) -> CropResult:
    """Warp `image` (see images.to_rgb_u8) with a given M_o2c into a dsize² crop (INTER_LINEAR, border 0)."""
    img = to_rgb_u8(image)
    M_o2c = np.asarray(M_o2c, dtype=F32)
    crop = warp(img, M_o2c, (dsize, dsize))
    pts = None if landmarks is None else transform_points(_as_points(landmarks), M_o2c)
    return CropResult(crop=crop, M_o2c=M_o2c, M_c2o=invert(M_o2c), landmarks=pts)


def crop_image(image: Any, landmarks: Any, dsize: int = CROP_SIZE, scale: float = SOURCE.scale,
               vx_ratio: float = SOURCE.vx_ratio, vy_ratio: float = SOURCE.vy_ratio,
               rotate: bool = True) -> CropResult:
    """Crop the face described by `landmarks` [K,2] (image px) out of `image` (HxWx3 uint8 RGB).

    Returns CropResult(crop [dsize,dsize,3] uint8, M_o2c, M_c2o [3,3] float32, landmarks [K,2]
    float32 in crop px). `vx_ratio` is honoured (the reference ignores it here; 0 = reference).
    """
    rect = parse_rect_from_landmark(landmarks, scale, vx_ratio, vy_ratio)
    return crop_from_matrix(image, rect_to_matrix(rect, dsize, rotate), dsize, landmarks)


def network_input(crop: np.ndarray, size: int = NETWORK_SIZE) -> np.ndarray:
    """The size² network input of a face crop: cv2.resize with INTER_AREA (uint8 in, uint8 out)."""
    crop = to_rgb_u8(crop, "crop")
    if crop.shape[:2] == (size, size):
        return crop
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def full_frame_crop(image: Any, dsize: int = CROP_SIZE, landmarks: Any = None) -> CropResult:
    """`none` crop mode: the frame already is the face crop.

    The crop is `cv2.resize(image, (dsize, dsize))` (bilinear). M_o2c uses OpenCV's pixel-centre
    convention of resize (`x_c = (x_o + 0.5)·dsize/W − 0.5`), so pasting the dsize² crop back with
    M_c2o lands exactly on the frame. (The reference's no-crop network input is the frame resized
    straight to 256² bilinear: `full_frame_network_input`.)
    """
    img = to_rgb_u8(image)
    h, w = img.shape[:2]
    sx, sy = dsize / w, dsize / h
    M_o2c = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], dtype=F32)
    crop = cv2.resize(img, (dsize, dsize), interpolation=cv2.INTER_LINEAR)
    pts = None if landmarks is None else transform_points(_as_points(landmarks), M_o2c)
    return CropResult(crop=crop, M_o2c=M_o2c, M_c2o=invert(M_o2c), landmarks=pts)


def full_frame_network_input(image: Any, size: int = NETWORK_SIZE) -> np.ndarray:
    """Reference no-crop input: the whole frame `cv2.resize`d to size² (bilinear)."""
    return cv2.resize(to_rgb_u8(image), (size, size), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- resize_to_limit


def resize_to_limit(image: Any, max_dim: int = 1280, division: int = 2) -> np.ndarray:
    """Shrink so the longer side is ≤ max_dim (bilinear), then trim bottom/right to multiples of
    `division` (skipped if a side would become 0). max_dim ≤ 0 disables the shrink."""
    img = to_rgb_u8(image, min_size=1)
    h, w = img.shape[:2]
    if max_dim > 0 and max(h, w) > max_dim:
        if h > w:
            nh, nw = max_dim, int(w * max_dim / h)
        else:
            nw, nh = max_dim, int(h * max_dim / w)
        img = cv2.resize(img, (nw, nh))
    d = max(int(division), 1)
    h, w = img.shape[:2]
    nh, nw = h - h % d, w - w % d
    if nh == 0 or nw == 0:
        return img
    return np.ascontiguousarray(img[:nh, :nw])


# ---------------------------------------------------------------- driving-video boxes


def driving_box(landmarks: Any, scale: float = DRIVING.scale, vx_ratio: float = DRIVING.vx_ratio,
                vy_ratio: float = DRIVING.vy_ratio) -> np.ndarray:
    """Unrotated square box [x0,y0,x1,y1] float32 of a face (vx_ratio honoured; 0 = reference)."""
    rect = parse_rect_from_landmark(landmarks, scale, vx_ratio, vy_ratio)
    half = np.full(2, rect.side, dtype=F32) / 2
    return np.concatenate([rect.center - half, rect.center + half]).astype(F32)


def driving_boxes(landmarks: Any, scale: float = DRIVING.scale, vx_ratio: float = DRIVING.vx_ratio,
                  vy_ratio: float = DRIVING.vy_ratio) -> np.ndarray:
    """Per-frame boxes [N,4] float32 of landmarks [N,K,2]."""
    return np.stack([driving_box(p, scale, vx_ratio, vy_ratio) for p in landmarks]).astype(F32)


def global_box(boxes: Any) -> np.ndarray:
    """One box for the whole video: the float32 numpy mean of the float32 boxes [N,4] (as the
    reference; a float64 mean gives different values)."""
    return np.mean(np.asarray(boxes, dtype=F32), axis=0)


def box_to_matrix(box: Sequence[float], dsize: int = CROP_SIZE) -> np.ndarray:
    """M_o2c [3,3] float32 of an unrotated box crop, with the reference's arithmetic."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not x1 - x0 > 0:
        raise InputError(f"box: [x0,y0,x1,y1] = {[x0, y0, x1, y1]} has no width.")
    s = dsize / (x1 - x0)  # float64
    bx, by = F32((x0 + x1) / 2), F32((y0 + y1) / 2)
    t = F32(dsize / 2)
    m = [[s, 0, t - s * bx], [0, s, t - s * by]]  # s·bx in float32 (numpy-2 scalar rule)
    return np.vstack([np.array(m, dtype=F32), np.array([0, 0, 1], dtype=F32)])


def driving_matrix(landmarks: Any, dsize: int = CROP_SIZE, scale: float = DRIVING.scale,
                   vx_ratio: float = DRIVING.vx_ratio, vy_ratio: float = DRIVING.vy_ratio) -> np.ndarray:
    """M_o2c [3,3] float32 of the driving-video auto-crop: one unrotated box, the mean of the
    per-frame boxes of landmarks [N,K,2] (image px), for every frame (the reference's rule)."""
    lmk = np.asarray(landmarks, dtype=F32)
    if lmk.ndim != 3 or len(lmk) == 0:
        raise InputError(f"landmarks: expected [N,K,2] per frame, got {tuple(lmk.shape)}.")
    return box_to_matrix(global_box(driving_boxes(lmk, scale, vx_ratio, vy_ratio)), dsize)


# ---------------------------------------------------------------- videos: per-frame crops, smoothing


def rects_from_landmarks(landmarks: Any, scale: float = SOURCE.scale,
                         vx_ratio: float = SOURCE.vx_ratio, vy_ratio: float = SOURCE.vy_ratio
                         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame rects of landmarks [N,K,2]: (centers [N,2] float32, sides [N] float32,
    angles [N] float64 radians)."""
    rects = [parse_rect_from_landmark(p, scale, vx_ratio, vy_ratio) for p in landmarks]
    return (np.stack([r.center for r in rects]).astype(F32),
            np.array([r.side for r in rects], dtype=F32), np.array([r.angle for r in rects]))


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 ([N,...] float64). The ends are extended by
    point reflection (x₋ₖ = 2x₀ − xₖ), so a steady motion passes unchanged, with no lag and no
    pull at the first and last frames."""
    n = x.shape[0]
    radius = min(int(math.ceil(3 * sigma)), n - 1)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    flat = x.reshape(n, -1)
    head = 2 * flat[:1] - flat[np.arange(radius, 0, -1)]
    tail = 2 * flat[-1:] - flat[n - 2 - np.arange(radius)]
    ext = np.concatenate([head, flat, tail])
    out = np.stack([np.convolve(ext[:, j], k, mode="valid") for j in range(flat.shape[1])], 1)
    return out.reshape(x.shape)


def smooth_rects(centers: np.ndarray, sides: np.ndarray, angles: np.ndarray, strength: float
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Temporal smoothing of per-frame crop rects against box jitter (the reference has none).

    strength: Gaussian σ in frames (0 = no smoothing: the inputs are returned unchanged, i.e. the
    reference behaviour; 1–3 removes landmark jitter; larger values also soften real head moves).
    Centres are smoothed linearly, sides in log space, angles unwrapped. Same shapes/dtypes out.
    """
    if strength < 0:
        raise InputError(f"smoothing strength: must be ≥ 0, got {strength}.")
    if strength == 0 or len(sides) < 2:
        return centers, sides, angles
    c = _gaussian_smooth(np.asarray(centers, np.float64), strength).astype(F32)
    s = np.exp(_gaussian_smooth(np.log(np.asarray(sides, np.float64)), strength)).astype(F32)
    a = _gaussian_smooth(np.unwrap(np.asarray(angles, np.float64)), strength)
    return c, s, a


def video_matrices(landmarks: Any, dsize: int = CROP_SIZE, scale: float = SOURCE.scale,
                   vx_ratio: float = SOURCE.vx_ratio, vy_ratio: float = SOURCE.vy_ratio,
                   rotate: bool = True, smoothing: float = 0.0) -> np.ndarray:
    """M_o2c [N,3,3] float32 of per-frame crops of a video (the reference's source-video path)
    from landmarks [N,K,2] (image px). smoothing: see `smooth_rects` (0 = reference: frame i is
    cropped as `crop_image(frames[i], landmarks[i])`)."""
    lmk = np.asarray(landmarks, dtype=F32)
    if lmk.ndim != 3 or len(lmk) == 0:
        raise InputError(f"landmarks: expected [N,K,2] per frame, got {tuple(lmk.shape)}.")
    centers, sides, angles = smooth_rects(*rects_from_landmarks(lmk, scale, vx_ratio, vy_ratio), smoothing)
    return np.stack([rect_to_matrix(Rect(c, s, float(a)), dsize, rotate) for c, s, a in zip(centers, sides, angles)])
