"""Faces given per frame by MediaPipe's Face Landmarker (e.g. ComfyUI's FACE_LANDMARKS), as a
detector.

The landmarker already ran on every frame, so nothing is detected here: `detect_frame(i, frame)`
returns the faces it found on frame i (the tracker passes the frame index; frames are matched
by position, never by their pixels). Each face gives its box, score and five points (eye
centres, nose tip, mouth corners) taken from the 478-point face mesh, which guide the 203-point
landmark model like any detector's.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import numpy as np

from ...errors import InputError
from .base import DetectedFace

# Face-mesh indices: eye corners (image-left eye, image-right eye), nose tip, mouth corners.
_EYE_L, _EYE_R, _NOSE, _MOUTH = (33, 133), (362, 263), 1, (61, 291)


def mesh_face(d: Mapping, size: Tuple[int, int]) -> DetectedFace:
    """One landmarker face `{"landmarks_xy": [[x, y], …], "bbox_xyxy"?, "score"?}` (pixels, or
    0..1 normalised coordinates) of an image of `size` (H, W) as a DetectedFace."""
    h, w = size
    pts = np.asarray(d["landmarks_xy"], np.float32).reshape(-1, 2)
    if pts.size and float(np.abs(pts).max()) <= 1.5:  # normalised coordinates
        pts = pts * np.array([w, h], np.float32)
    box = np.asarray(d.get("bbox_xyxy", [*pts.min(0), *pts.max(0)]), np.float32).reshape(4)
    points5 = None
    if pts.shape[0] >= 292:
        points5 = np.stack([pts[list(_EYE_L)].mean(0), pts[list(_EYE_R)].mean(0), pts[_NOSE],
                            pts[_MOUTH[0]], pts[_MOUTH[1]]]).astype(np.float32)
    return DetectedFace(box=box, score=float(d.get("score", 1.0)), points5=points5)


class MediaPipeFaces:
    """A detector view of per-frame landmarker results.

    per_frame: one list of face dicts (see `mesh_face`) per frame, in frame order.
    n_frames, size: the frames they belong to (count and (H, W)); a count mismatch raises
    InputError naming `what` (the input to fix).
    """

    name = "mediapipe"

    def __init__(self, per_frame: Sequence[Sequence[Mapping]], n_frames: int, size: Tuple[int, int],
                 what: str = "face_landmarks"):
        if per_frame is None or len(per_frame) != n_frames:
            n = "?" if per_frame is None else len(per_frame)
            raise InputError(f"{what} has {n} frames but image has {n_frames}; run the MediaPipe Face "
                             "Landmarker on the same IMAGE.")
        self._faces: List[List[DetectedFace]] = [[mesh_face(d, size) for d in faces] for faces in per_frame]

    def detect_frame(self, index: int, image=None) -> List[DetectedFace]:
        """The faces of frame `index` (image pixels of the full frame)."""
        return list(self._faces[index])

    def detect(self, image=None, name: str = "image") -> List[DetectedFace]:
        """The faces of a one-frame input (a video needs `detect_frame` with the frame index)."""
        if len(self._faces) != 1:
            raise InputError(f"{name}: MediaPipe faces of {len(self._faces)} frames need the frame index.")
        return self.detect_frame(0)
