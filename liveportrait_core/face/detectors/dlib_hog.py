"""Offline face detector: dlib's HOG frontal-face detector (built into the `dlib-bin` wheel).

Needs no model download: the detector's weights are compiled into the dlib library itself
(Boost Software License). Finds upright frontal and slightly turned faces down to about 40 px
(after the optional downscale); boxes are tight (eyebrows to lower lip/chin), so the landmark
step widens them (`box_to_extent`).
"""
from __future__ import annotations

from typing import List

import cv2
import numpy as np

from ...errors import WeightsError
from .base import DetectedFace, FaceDetector


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


class DlibHogDetector(FaceDetector):
    """dlib HOG + linear SVM face detector (offline).

    det_thresh: SVM score threshold (dlib's own default is 0; −0.3…0.5 sensible, higher = stricter).
    max_side: images are shrunk (INTER_AREA) so their longer side is at most this before
        detection (speed); boxes are returned in the original image's pixels. 0 = never shrink.
    upsample: dlib pyramid upsampling steps (1 finds faces from ~40 px of the shrunk image).
    """

    name = "offline"
    # 106-extent ≈ dlib box widened down to the chin (measured on the reference photo).
    box_to_extent = (0.06, 0.06, -0.06, 0.12)

    def __init__(self, det_thresh: float = 0.2, max_side: int = 640, upsample: int = 1):
        try:
            import dlib
        except ImportError as e:
            raise WeightsError("The offline face detector needs the dlib library: "
                               "pip install dlib-bin (a prebuilt wheel, no model download).") from e
        self._det = dlib.get_frontal_face_detector()
        self.det_thresh, self.max_side, self.upsample = float(det_thresh), int(max_side), int(upsample)

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        keep, self.det_thresh = self.det_thresh, min(self.det_thresh, -0.5)
        try:
            return self.detect(image_rgb_u8)
        finally:
            self.det_thresh = keep

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:
        h, w = img.shape[:2]
        s = 1.0
        if self.max_side > 0 and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            img = cv2.resize(img, (max(round(w * s), 1), max(round(h * s), 1)),
                             interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._det.run(img, self.upsample, self.det_thresh)
        faces = []
        for r, sc in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32) / s
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            faces.append(DetectedFace(box, float(sc)))
        faces.sort(key=lambda f: -f.score)
        return faces
