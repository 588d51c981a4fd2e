"""InsightFace `buffalo_l` backend: det_10g.onnx (SCRFD-10G) + 2d106det.onnx, run with onnxruntime.

This is the reference pipeline's detector (docs/ARCHITECTURE.md, Face crops), decoded exactly as the
spec states. LICENCE: the buffalo_l model files are released by InsightFace for
**non-commercial research use only**; users who need commercial use should pick the `yunet`
(MIT-licensed model) or `offline` backend instead. This module only reads the files the user
already has; it never downloads them.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...errors import WeightsError
from .base import DetectedFace, FaceDetector, nms
from .ort import onnx_session

DET_FILE = "det_10g.onnx"
LMK106_FILE = "2d106det.onnx"
STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
LICENCE_NOTE = ("InsightFace buffalo_l models are for non-commercial research use only "
                "(InsightFace licence).")


def find_buffalo_l(model_dir: Optional[str]) -> Tuple[str, List[str]]:
    """Folder holding det_10g.onnx, searched under a models root or a given folder.

    Looks at `model_dir` itself, then `<root>/models/insightface/models/buffalo_l`,
    `<root>/models/insightface/buffalo_l`, `<root>/insightface/models/buffalo_l`,
    `<root>/insightface/buffalo_l`, `<root>/models/buffalo_l` (`model_dir` is ComfyUI's
    `models/insightface`, as the README names it), `<root>/buffalo_l`, and finally insightface's own
    `~/.insightface/models/buffalo_l`. Returns (folder, searched folders); raises WeightsError.
    """
    roots = [os.path.expanduser(os.fspath(model_dir))] if model_dir else []
    searched: List[str] = []
    for root in roots:
        for sub in ("", "models/insightface/models/buffalo_l", "models/insightface/buffalo_l",
                    "insightface/models/buffalo_l", "insightface/buffalo_l", "models/buffalo_l",
                    "buffalo_l"):
            searched.append(os.path.normpath(os.path.join(root, sub)))
    searched.append(os.path.expanduser("~/.insightface/models/buffalo_l"))
    for folder in searched:
        if os.path.isfile(os.path.join(folder, DET_FILE)):
            return folder, searched
    raise WeightsError(
        f"InsightFace face detector: {DET_FILE} (buffalo_l) not found. Looked in: "
        + "; ".join(searched) + ". Put the buffalo_l files (det_10g.onnx, 2d106det.onnx) in "
        "ComfyUI/models/insightface/models/buffalo_l/, or choose the 'offline' or 'yunet' "
        "detector. " + LICENCE_NOTE)


def letterbox(img: np.ndarray, size: int) -> Tuple[np.ndarray, float]:
    """Resize keeping aspect into the top-left of a black size×size canvas."""
    h, w = img.shape[:2]
    if h / w > 1:
        new_h, new_w = size, int(size / (h / w))
    else:
        new_w, new_h = size, int(size * (h / w))
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h))
    return canvas, new_h / h


def anchor_centers(size: int, stride: int) -> np.ndarray:
    """[(size/stride)²·2, 2] float32 anchor centres `(col·s, row·s)`, row-major, each twice."""
    n = size // stride
    rows, cols = np.mgrid[:n, :n]
    c = np.stack([cols, rows], -1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(c, NUM_ANCHORS, axis=0)


def decode_scrfd(outputs: Sequence[np.ndarray], size: int, det_scale: float, thresh: float,
                 nms_thresh: float = 0.4) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SCRFD outputs (scores ×3, distances ×3, keypoint offsets ×3) → boxes, scores, points.

    Returns boxes [M,4] and scores [M] float32 and points [M,5,2] float32 in original image
    pixels, after threshold, descending sort, division by det_scale and +1-convention NMS.
    """
    if len(outputs) < 9:
        raise WeightsError(f"det_10g.onnx: expected 9 outputs (scores, boxes, keypoints at "
                           f"strides 8/16/32), the model has {len(outputs)}.")
    all_s, all_b, all_k = [], [], []
    for i, s in enumerate(STRIDES):
        scores = np.asarray(outputs[i], np.float32).reshape(-1)
        dist = np.asarray(outputs[i + 3], np.float32).reshape(-1, 4) * s
        offs = np.asarray(outputs[i + 6], np.float32).reshape(-1, 10) * s
        c = anchor_centers(size, s)
        if c.shape[0] != scores.shape[0]:
            raise WeightsError(f"det_10g.onnx: stride {s} output has {scores.shape[0]} anchors, "
                               f"expected {c.shape[0]} for a {size}² input.")
        keep = scores >= thresh
        c, d, o = c[keep], dist[keep], offs[keep]
        all_s.append(scores[keep])
        all_b.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                               c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1))
        all_k.append((o.reshape(-1, 5, 2) + c[:, None, :]))
    scores = np.concatenate(all_s)
    order = scores.argsort()[::-1]
    scores = scores[order]
    boxes = (np.concatenate(all_b) / det_scale)[order].astype(np.float32)
    kps = (np.concatenate(all_k) / det_scale)[order].astype(np.float32)
    keep = nms(boxes, scores, nms_thresh)
    return boxes[keep], scores[keep], kps[keep]


def lmk106_normalisation(model_path: str) -> Tuple[float, float]:
    """(mean, std) of the 2d106det input, read from the graph like insightface does.

    Graphs that normalise internally (a Sub/`_minus` and a Mul/`_mul` among the first 8
    nodes, or a `bn_data` node among the first 3) take raw pixels: (0, 1); others (127.5, 128).
    """
    import onnx

    graph = onnx.load(model_path).graph
    has_sub = has_mul = False
    for i, node in enumerate(graph.node[:8]):
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            has_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            has_mul = True
        if i < 3 and node.name == "bn_data":
            has_sub = has_mul = True
    return (0.0, 1.0) if (has_sub and has_mul) else (127.5, 128.0)


class InsightFaceDetector(FaceDetector):
    """buffalo_l det_10g (+ 2d106det) face detector. Non-commercial licence (InsightFace).

    model_dir: a models root (ComfyUI's `models/`), its parent, or the buffalo_l folder itself.
    det_thresh: score threshold (reference CLI 0.15). det_size: letterbox side (512).
    landmarks106: also run 2d106det on every face (needed for the reference source crop).
    """

    name = "insightface"

    def __init__(self, model_dir: Optional[str] = None, det_thresh: float = 0.15,
                 det_size: int = 512, landmarks106: bool = True, device: Optional[str] = None,
                 nms_thresh: float = 0.4):
        folder, _ = find_buffalo_l(model_dir)
        self.folder = folder
        self.det_thresh, self.nms_thresh = float(det_thresh), float(nms_thresh)
        self.det = onnx_session(os.path.join(folder, DET_FILE), "InsightFace det_10g", device)
        shape = self.det.get_inputs()[0].shape
        fixed = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else None
        self.det_size = int(fixed or det_size)
        self.lmk = None
        if landmarks106:
            path = os.path.join(folder, LMK106_FILE)
            if not os.path.isfile(path):
                raise WeightsError(f"InsightFace 106-point landmarks: {LMK106_FILE} not found in "
                                   f"{folder}. It is part of buffalo_l; put it next to {DET_FILE}.")
            self.lmk = onnx_session(path, "InsightFace 2d106det", device)
            self.lmk_mean, self.lmk_std = lmk106_normalisation(path)
            ishape = self.lmk.get_inputs()[0].shape
            self.lmk_size = int(ishape[2]) if isinstance(ishape[2], int) else 192

    def detect_relaxed(self, image_rgb_u8: np.ndarray) -> List[DetectedFace]:
        keep, self.det_thresh = self.det_thresh, min(self.det_thresh, 0.05)
        try:
            return self.detect(image_rgb_u8)
        finally:
            self.det_thresh = keep

    def _detect(self, img: np.ndarray) -> List[DetectedFace]:
        canvas, det_scale = letterbox(img, self.det_size)
        blob = ((canvas.astype(np.float32) - 127.5) * (1.0 / 128.0)).transpose(2, 0, 1)[None]
        inp = self.det.get_inputs()[0].name
        outs = self.det.run(None, {inp: np.ascontiguousarray(blob)})
        boxes, scores, kps = decode_scrfd(outs, self.det_size, det_scale, self.det_thresh,
                                          self.nms_thresh)
        faces = []
        for b, s, k in zip(boxes, scores, kps):
            p106 = self.landmarks106(img, b) if self.lmk is not None else None
            faces.append(DetectedFace(b, float(s), k, p106))
        return faces

    def landmarks106(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        """2d106det on one face box → [106,2] float32 image coordinates."""
        n = self.lmk_size
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        s = n / (max(w, h) * 1.5)
        M = np.array([[s, 0, n / 2 - cx * s], [0, s, n / 2 - cy * s]], np.float64)
        crop = cv2.warpAffine(img, M, (n, n), borderValue=0.0)
        blob = ((crop.astype(np.float32) - self.lmk_mean) / self.lmk_std).transpose(2, 0, 1)[None]
        out = self.lmk.run(None, {self.lmk.get_inputs()[0].name: np.ascontiguousarray(blob)})[0]
        pts = np.asarray(out[0], np.float32).reshape(-1, 2)[:, :2]
        pts = (pts + 1) * (n // 2)
        IM = cv2.invertAffineTransform(M)
        return (pts @ IM[:, :2].T + IM[:, 2]).astype(np.float32)
