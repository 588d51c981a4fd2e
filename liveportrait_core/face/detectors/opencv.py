"""Offline face detector: OpenCV's Haar cascade shipped in opencv-python 4.x (`cv2.data`).

Needs no download, but OpenCV 5 no longer ships the cascades (nor `cv2.CascadeClassifier`);
`make_detector('offline')` therefore prefers dlib's HOG detector and uses this one only when
dlib is missing. Haar boxes are loose (forehead to chin, ear to ear) and scores are the
cascade's neighbour counts.
"""
from __future__ import annotations

import os
from typing import List, Optional

import cv2
import numpy as np

from ...errors import WeightsError
from .base import DetectedFace, FaceDetector, shrink_to

CASCADE = "haarcascade_frontalface_default.xml"


def haar_cascade_path(path: Optional[str] = None) -> Optional[str]:
    """The frontal-face cascade file: `path` if given, else OpenCV's bundled one (or None)."""
    if path:
        return path if os.path.isfile(path) else None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    cand = os.path.join(folder, CASCADE) if folder else None
    return cand if cand and os.path.isfile(cand) else None


def haar_available() -> bool:
    return hasattr(cv2, "CascadeClassifier") and haar_cascade_path() is not None


class HaarDetector(FaceDetector):
    """OpenCV Haar-cascade frontal face detector.

    min_neighbors: detections needed to accept a face (higher = fewer false positives).
    max_side: shrink the image to this longer side first (speed), 0 = never.
    cascade: path of a cascade XML (default: OpenCV's bundled frontal-face cascade).
    det_thresh: accepted for a uniform interface and ignored (the cascade has no score).
    """

    name = "opencv-haar"
    box_to_extent = (0.1, 0.16, -0.1, 0.04)

    def __init__(self, min_neighbors: int = 5, max_side: int = 800, cascade: Optional[str] = None,
                 det_thresh: Optional[float] = None):
        path = haar_cascade_path(cascade)
        if not hasattr(cv2, "CascadeClassifier") or path is None:
            raise WeightsError(
                f"OpenCV Haar face detector unavailable: this OpenCV ({cv2.__version__}) has no "
                f"{CASCADE} (OpenCV 5 dropped the cascades). Use the 'offline' detector with "
                "dlib-bin installed, or 'yunet'.")
        self._clf = cv2.CascadeClassifier(path)
        if self._clf.empty():
            raise WeightsError(f"OpenCV Haar face detector: cannot read cascade {path}.")
        self.min_neighbors, self.max_side = int(min_neighbors), int(max_side)

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        keep, self.min_neighbors = self.min_neighbors, min(self.min_neighbors, 2)
        try:
            return self.detect(image_rgb_u8)
        finally:
            self.min_neighbors = keep

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:
        h, w = img.shape[:2]
        img, s = shrink_to(img, self.max_side)
        grey = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        boxes, counts = self._clf.detectMultiScale2(grey, scaleFactor=1.1,
                                                     minNeighbors=self.min_neighbors,
                                                     minSize=(24, 24))
        faces = []
        for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(counts).reshape(-1)):
            box = np.array([x, y, x + bw, y + bh], np.float32) / s
            faces.append(DetectedFace(box, float(n)))
        faces.sort(key=lambda f: -f.score)
        return faces
