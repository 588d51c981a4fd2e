"""LivePortrait's 203-point landmark model (`landmark.onnx`, 224² input) and detector guides.

The face is cropped with `crop_image(img, guide, dsize=224, scale=1.5,
vy_ratio=-0.1)` (rotation on), fed as RGB float32/255 NCHW to input `'input'`, and output #2
(`[1,406]`, crop units 0..1) ×224 is mapped back to image pixels with the crop's M_c2o.

Guides: the reference guides the model with insightface's 106 points (or, when tracking a video,
with the previous frame's 203 points). Detectors that give only a box (and maybe 5 points) are
turned into a pseudo 68-point guide whose eye/mouth points and extent imitate the 106-point set,
then the model is run a second time guided by its own 203 points, so the result no longer
depends on the detector's box convention.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from ..errors import WeightsError
from ..weights import LANDMARK_FILE
from .crop import LANDMARK_RUNNER, crop_image, transform_points
from .detectors.base import DetectedFace
from .detectors.ort import onnx_session

INPUT_SIZE = 224
NUM_POINTS = 203

# Default box → 106-extent calibration: (left, top, right, bottom) offsets in box sides.
DEFAULT_BOX_TO_EXTENT = (0.08, 0.12, -0.08, 0.0)


def find_landmark_model(path: Optional[str]) -> str:
    """landmark.onnx from a file path, a folder holding it, or a weights root
    (`<root>/liveportrait/landmark.onnx`, `<root>/landmark.onnx`). Raises WeightsError."""
    if path and os.path.isfile(path):
        return path
    tried = []
    if path:
        for sub in ("", "liveportrait", "pretrained_weights/liveportrait", "liveportrait/liveportrait"):
            cand = os.path.normpath(os.path.join(path, sub, LANDMARK_FILE))
            tried.append(cand)
            if os.path.isfile(cand):
                return cand
    raise WeightsError(
        f"203-point landmark model: {LANDMARK_FILE} not found"
        + (f" (looked for {'; '.join(tried)})" if tried else " (no path given)")
        + ". It ships with the LivePortrait weights (liveportrait/landmark.onnx); download the "
        "weights or give the file's path.")


class LandmarkRunner:
    """Runs landmark.onnx. `run(image [H,W,3] uint8 RGB, guide [K,2] image px) → [203,2] f32`.

    model: path to landmark.onnx (or a folder/weights root holding it).
    device: None/'auto' (CUDA when onnxruntime has it), 'cpu', 'cuda[:N]'.
    cpu_threads: onnxruntime intra-op threads on CPU (the reference uses 4).
    """

    def __init__(self, model: str, device: Optional[str] = None, cpu_threads: int = 4):
        self.path = find_landmark_model(model)
        self.session = onnx_session(self.path, "203-point landmarks", device,
                                    cpu_threads=min(cpu_threads, os.cpu_count() or 1))
        names = [i.name for i in self.session.get_inputs()]
        self.input_name = "input" if "input" in names else names[0]
        if len(self.session.get_outputs()) < 3:
            raise WeightsError(f"{self.path}: expected a landmark model with 3 outputs (the third "
                               f"holds the 203 points); this file has "
                               f"{len(self.session.get_outputs())}.")

    def crop(self, image: np.ndarray, guide: np.ndarray):
        """The 224² model-input crop (CropResult) of the face `guide` [K,2] describes."""
        p = LANDMARK_RUNNER
        return crop_image(image, guide, dsize=INPUT_SIZE, scale=p.scale, vx_ratio=p.vx_ratio,
                          vy_ratio=p.vy_ratio, rotate=True)

    def raw(self, crop_u8: np.ndarray) -> np.ndarray:
        """Model output #2 for one 224² RGB uint8 crop → [406] float32 (crop units)."""
        x = (crop_u8.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})
        return np.asarray(outs[2], np.float32)[0].reshape(-1)

    def run(self, image: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """203 landmarks [203,2] float32 in image pixels, guided by `guide` [K,2] (any supported
        layout: 106 from insightface, previous 203, 68, 5, …)."""
        c = self.crop(image, guide)
        pts = self.raw(c.crop).reshape(-1, 2)[:NUM_POINTS] * INPUT_SIZE
        return transform_points(pts, c.M_c2o)

    def from_face(self, image: np.ndarray, face: DetectedFace,
                  box_to_extent: Sequence[float] = DEFAULT_BOX_TO_EXTENT,
                  refine: int = 1) -> np.ndarray:
        """203 landmarks of a detected face: reference path (106 guide) when the detector gave
        106 points, else a pseudo guide from box/5 points plus `refine` self-guided re-runs."""
        if face.points106 is not None:
            return self.run(image, face.points106)
        lmk = self.run(image, pseudo_guide(face, box_to_extent))
        for _ in range(max(int(refine), 0)):
            lmk = self.run(image, lmk)
        return lmk


def pseudo_guide(face: DetectedFace,
                 box_to_extent: Sequence[float] = DEFAULT_BOX_TO_EXTENT) -> np.ndarray:
    """A 68-point guide [68,2] float32 for a face that has only a box (and maybe 5 points).

    Only what the crop reads is meaningful: eye corners (36, 39 / 42, 45) and mouth corners
    (48, 54) orient the crop; the remaining points are the corners of the face extent (the box
    adjusted by `box_to_extent` = (left, top, right, bottom) offsets in box widths/heights,
    rotated with the eye line), which sizes it like the 106-point extent would.
    """
    x0, y0, x1, y1 = (float(v) for v in face.box)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    a, b, c, d = box_to_extent
    ex0, ey0, ex1, ey1 = x0 + a * w, y0 + b * h, x1 + c * w, y1 + d * h
    if face.points5 is not None:
        p5 = np.asarray(face.points5, np.float32).reshape(5, 2)
        le, re, lm, rm = p5[0], p5[1], p5[3], p5[4]
        v = re - le
        ang = float(np.arctan2(v[1], v[0])) if np.linalg.norm(v) > 1e-3 else 0.0
    else:
        le = np.array([x0 + 0.3 * w, y0 + 0.38 * h], np.float32)
        re = np.array([x0 + 0.7 * w, y0 + 0.38 * h], np.float32)
        lm = np.array([x0 + 0.35 * w, y0 + 0.78 * h], np.float32)
        rm = np.array([x0 + 0.65 * w, y0 + 0.78 * h], np.float32)
        ang = 0.0
    cx, cy = (ex0 + ex1) / 2, (ey0 + ey1) / 2
    hw, hh = (ex1 - ex0) / 2, (ey1 - ey0) / 2
    cs, sn = np.cos(ang), np.sin(ang)
    corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]], np.float64)
    corners = corners @ np.array([[cs, sn], [-sn, cs]]) + [cx, cy]
    g = np.repeat(corners, 17, axis=0).astype(np.float32)  # 68 points
    g[36] = g[39] = le
    g[42] = g[45] = re
    g[48], g[54] = lm, rm
    return g
