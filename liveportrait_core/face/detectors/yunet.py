"""YuNet face detector (OpenCV's `cv2.FaceDetectorYN`), a permissively licensed (MIT) ONNX model.

The model file (`face_detection_yunet_2023mar.onnx`, ~230 kB) is fetched on first use with
huggingface_hub from the `opencv/face_detection_yunet` repository, unless a local path is given
or the file already sits in the given folder. Nothing is downloaded at import time.
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional

import cv2
import numpy as np

from ...errors import WeightsError
from .base import DetectedFace, FaceDetector, shrink_to

log = logging.getLogger("liveportrait")

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_REPO = "opencv/face_detection_yunet"


def find_or_fetch_yunet(model: Optional[str] = None, download: bool = True) -> str:
    """Path of the YuNet ONNX.

    model: a .onnx file, or a folder holding it (also `<folder>/yunet/`), or None (the
    huggingface_hub cache). A missing file is downloaded into that folder when `download`;
    an offline or failed download raises WeightsError naming the file and the folder.
    """
    if model and os.path.isfile(model):
        return model
    folder = None
    if model:
        if model.lower().endswith(".onnx"):
            raise WeightsError(f"YuNet face detector: model file not found: {model}")
        for sub in ("", "yunet", "facedetection"):
            cand = os.path.join(model, sub, YUNET_FILE)
            if os.path.isfile(cand):
                return cand
        folder = os.path.join(model, "yunet") if os.path.isdir(os.path.join(model, "yunet")) else model
    where = folder or "the huggingface_hub cache"
    if not download:
        raise WeightsError(f"YuNet face detector: {YUNET_FILE} not found in {where}; "
                           f"downloading is off. Put the file there.")
    try:
        from huggingface_hub import hf_hub_download

        from ...hub import quiet_hub

        kw = {"local_dir": folder} if folder else {}
        log.warning("YuNet face detector: fetching %s from huggingface.co/%s into %s …", YUNET_FILE,
                    YUNET_REPO, where)
        with quiet_hub():  # one line above, one message on failure below (no per-retry lines)
            return hf_hub_download(YUNET_REPO, YUNET_FILE, **kw)
    except Exception as e:  # offline, blocked, disk full, …
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise WeightsError(
            f"YuNet face detector: {YUNET_FILE} is not in {where} and could not be downloaded "
            f"from the Hugging Face repository {YUNET_REPO} ({type(e).__name__}: {first}). Put the "
            f"file (https://huggingface.co/{YUNET_REPO}/resolve/main/{YUNET_FILE}) in "
            f"{folder or 'a folder and pass that folder with --detector-dir'} by hand, or use the "
            f"'offline' detector.") from None


class YuNetDetector(FaceDetector):
    """cv2.FaceDetectorYN wrapper. Returns boxes, scores (0..1) and 5 points (eyes, nose tip,
    mouth corners, image-left first, as insightface's).

    model: file/folder (see find_or_fetch_yunet). det_thresh: score threshold.
    max_side: shrink the image to this longer side before detection (speed), 0 = never.
    """

    name = "yunet"
    box_to_extent = (0.08, 0.14, -0.08, 0.0)

    def __init__(self, model: Optional[str] = None, det_thresh: float = 0.6,
                 nms_thresh: float = 0.3, max_side: int = 960, download: bool = True):
        self.path = find_or_fetch_yunet(model, download)
        try:
            self._det = cv2.FaceDetectorYN.create(self.path, "", (320, 320), float(det_thresh),
                                                  float(nms_thresh), 5000)
        except cv2.error as e:
            raise WeightsError(f"YuNet face detector: cannot load {self.path} ({e}). Delete the "
                               f"file so it is fetched again.") from e
        self.max_side, self.det_thresh = int(max_side), float(det_thresh)

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        self._det.setScoreThreshold(min(self.det_thresh, 0.3))
        try:
            return self.detect(image_rgb_u8)
        finally:
            self._det.setScoreThreshold(self.det_thresh)

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:
        h, w = img.shape[:2]
        img, s = shrink_to(img, self.max_side)
        self._det.setInputSize((img.shape[1], img.shape[0]))
        _, rows = self._det.detect(np.ascontiguousarray(img[:, :, ::-1]))
        faces = []
        for r in ([] if rows is None else np.asarray(rows, np.float32).reshape(-1, 15)):
            box = np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]], np.float32) / s
            faces.append(DetectedFace(box, float(r[14]), r[4:14].reshape(5, 2) / s))
        faces.sort(key=lambda f: -f.score)
        return faces
