"""Face-detector interface shared by every backend, image checks and face ordering.

A detector is any object with `detect(image_rgb_u8 [H,W,3] uint8) -> list[DetectedFace]`
and a `name`. Boxes and points are in the pixel coordinates of the image that was passed in.
A detector whose faces are known per frame in advance (mediapipe.py) also has
`detect_frame(index, frame)`; the tracker then asks it by frame index.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ...errors import InputError
from ...images import to_rgb_u8

log = logging.getLogger("liveportrait")

MIN_SIDE = 16  # smaller than this cannot hold a detectable face for any backend

ORDERS = ("large-small", "small-large", "left-right", "right-left", "top-bottom", "bottom-top")


@dataclass
class DetectedFace:
    """One detected face.

    box:      [4] float32 `x0, y0, x1, y1` in image pixels.
    score:    detector confidence (scale depends on the backend; higher = surer).
    points5:  [5,2] float32 (left eye, right eye, nose, left mouth corner, right mouth corner,
              as seen in the image) or None.
    points106:[106,2] float32 insightface 2d106det landmarks or None.
    """

    box: np.ndarray
    score: float
    points5: Optional[np.ndarray] = None
    points106: Optional[np.ndarray] = None

    @property
    def area(self) -> float:
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(max(w, 0.0) * max(h, 0.0))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2],
                        np.float32)


class FaceDetector:
    """Base class: subclasses implement `_detect` on a checked RGB uint8 [H,W,3] image."""

    name = "base"

    def detect(self, image_rgb_u8: np.ndarray, name: str = "image") -> List[DetectedFace]:
        """Faces in an RGB uint8 [H,W,3] image (grey/RGBA/float 0..1 are converted; empty or
        1×1 images raise InputError naming `name`). Order: as the backend returns them."""
        img = to_rgb_u8(image_rgb_u8, name)
        if min(img.shape[:2]) < MIN_SIDE:
            return []  # too small to hold a face; callers report "no face" with the input name
        return self._detect(img)

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        """Detection with a lenient threshold, used to check that a tracked face is still there
        (a turned head scores low but is not gone). Default: `detect`."""
        return self.detect(image_rgb_u8)


def shrink_to(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink `img` (INTER_AREA) so its longer side is at most `max_side` (0 = never).

    Returns (image, s) with s the scale applied: detections map back to the input by `/ s`.
    """
    h, w = img.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return img, 1.0
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(img, (max(round(w * s), 1), max(round(h * s), 1)),
                      interpolation=cv2.INTER_AREA), s


def order_faces(faces: Sequence[DetectedFace], order: str = "large-small") -> List[DetectedFace]:
    """Sort faces by the reference's `direction` rules (stable sort).

    large-small / small-large: box area; left-right / right-left: box x0;
    top-bottom / bottom-top: box y0.
    """
    if order not in ORDERS:
        raise InputError(f"face order {order!r} is not one of {', '.join(ORDERS)}.")
    key = {
        "large-small": lambda f: -f.area, "small-large": lambda f: f.area,
        "left-right": lambda f: float(f.box[0]), "right-left": lambda f: -float(f.box[0]),
        "top-bottom": lambda f: float(f.box[1]), "bottom-top": lambda f: -float(f.box[1]),
    }[order]
    return sorted(faces, key=key)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> List[int]:
    """Greedy NMS with the `+1` pixel area convention.

    boxes [N,4] x0,y0,x1,y1; scores [N]. Returns kept indices, best score first.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: List[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_thresh]
    return keep


BACKENDS = ("insightface", "offline", "yunet", "opencv-haar", "dlib-hog")


def make_detector(backend: str = "offline", model_dir: Optional[str] = None, **opts) -> FaceDetector:
    """Build a face detector by name.

    backend: 'insightface' (buffalo_l det_10g + 2d106det; reference; non-commercial licence;
        model_dir = models root or buffalo_l folder), 'offline' (no download: dlib HOG when
        dlib is installed, else OpenCV's bundled Haar cascade), 'yunet' (MIT model fetched on
        first use; model_dir = file or folder), 'dlib-hog', 'opencv-haar'.
    opts: backend options (det_thresh, max_side, device, …), see each backend class.
    """
    b = (backend or "").lower().replace("_", "-")
    if b == "insightface":
        from .insightface import InsightFaceDetector

        return InsightFaceDetector(model_dir, **opts)
    if b == "yunet":
        from .yunet import YuNetDetector

        return YuNetDetector(model_dir, **opts)
    if b in ("offline", "dlib-hog", "dlib"):
        from .dlib_hog import DlibHogDetector, dlib_available
        from .opencv import HaarDetector, haar_available

        if b != "offline" or dlib_available() or not haar_available():
            return DlibHogDetector(**opts)
        log.info("face detector: dlib not installed, using OpenCV's Haar cascade")
        return HaarDetector(**opts)
    if b in ("opencv-haar", "opencv", "haar"):
        from .opencv import HaarDetector

        return HaarDetector(**opts)
    raise InputError(f"face detector {backend!r} is not one of {', '.join(BACKENDS)}.")
