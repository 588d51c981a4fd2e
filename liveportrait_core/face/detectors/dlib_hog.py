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
from .base import DetectedFace, FaceDetector, shrink_to


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


# eyes, nose tip, mouth corners of an upright face, as fractions of a dlib box (x, y)
FIVE_POINTS = ((0.3, 0.38), (0.7, 0.38), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))


class DlibHogDetector(FaceDetector):
    """dlib HOG + linear SVM face detector (offline).

    det_thresh: SVM score threshold (dlib's own default is 0; −0.3…0.5 sensible, higher = stricter).
    max_side: images are shrunk (INTER_AREA) so their longer side is at most this before
        detection (speed); boxes are returned in the original image's pixels. 0 = never shrink.
    upsample: dlib pyramid upsampling steps (1 finds faces from ~40 px of the shrunk image).
    fallback: when nothing is found, scan finer (small faces) and then copies rotated by ±50°
        (dlib itself covers about ±35° of head roll); costs time only on pictures without a hit.
    """

    name = "offline"
    # 106-extent ≈ dlib box widened down to the chin (measured on the reference photo).
    box_to_extent = (0.06, 0.06, -0.06, 0.12)

    def __init__(self, det_thresh: float = 0.2, max_side: int = 640, upsample: int = 1,
                 fallback: bool = True):
        try:
            import dlib
        except ImportError as e:
            raise WeightsError("The offline face detector needs the dlib library: "
                               "pip install dlib-bin (a prebuilt wheel, no model download).") from e
        self._det = dlib.get_frontal_face_detector()
        self.det_thresh, self.max_side, self.upsample = float(det_thresh), int(max_side), int(upsample)
        self.fallback = bool(fallback)

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        keep = self.det_thresh, self.fallback
        self.det_thresh, self.fallback = min(self.det_thresh, -0.5), False
        try:
            return self.detect(image_rgb_u8)
        finally:
            self.det_thresh, self.fallback = keep

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:
        faces = self._scan(img, self.max_side, self.upsample)
        if faces or not self.fallback:
            return faces
        # nothing found: look for smaller faces (finer scan), then for strongly rolled heads
        h, w = img.shape[:2]
        if self.max_side > 0 and max(h, w) > self.max_side:
            faces = self._scan(img, min(max(h, w), 2 * self.max_side), self.upsample)
        elif max(h, w) <= 400:
            faces = self._scan(img, 0, self.upsample + 1)
        for angle in ((50.0, -50.0) if not faces else ()):
            faces = self._scan_rotated(img, angle)
            if faces:
                break
        return faces

    def _scan(self, img: np.ndarray, max_side: int, upsample: int) -> List[DetectedFace]:
        h, w = img.shape[:2]
        img, s = shrink_to(img, max_side)
        rects, scores, _ = self._det.run(img, upsample, self.det_thresh)
        faces = []
        for r, sc in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32) / s
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            faces.append(DetectedFace(box, float(sc)))
        faces.sort(key=lambda f: -f.score)
        return faces

    def _scan_rotated(self, img: np.ndarray, angle: float) -> List[DetectedFace]:
        """Scan a copy rotated by `angle` degrees (canvas grown to keep every pixel). Each face
        is returned with its upright size as box (centred on the face) and five points placed
        like a typical face's and rotated back, so the crop follows the head's roll."""
        h, w = img.shape[:2]
        M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        c, s = abs(M[0, 0]), abs(M[0, 1])
        nw, nh = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
        M[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
        rot = cv2.warpAffine(img, M, (nw, nh))
        inv = cv2.invertAffineTransform(M)
        faces = []
        for f in self._scan(rot, self.max_side, self.upsample):
            x0, y0, x1, y1 = f.box
            bw, bh = x1 - x0, y1 - y0
            p5 = np.array(FIVE_POINTS, np.float32) * [bw, bh] + [x0, y0]
            p5 = (p5 @ inv[:, :2].T + inv[:, 2]).astype(np.float32)
            cx, cy = ((x0 + x1) / 2, (y0 + y1) / 2) @ inv[:, :2].T + inv[:, 2]
            box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], np.float32)
            faces.append(DetectedFace(box, f.score, p5))
        return faces
