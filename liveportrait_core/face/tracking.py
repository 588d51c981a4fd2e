"""Faces through the frames of a video: detect once, then follow each face with landmarks.

Reference behaviour (docs/ARCHITECTURE.md, Face crops): detect on the first frame that has a face,
then track with the 203-point model (`run(frame, previous 203 points)`), no re-detection.

Additions:
* Presence check: every `detect_every`-th frame the detector (lenient threshold) looks near
  each tracked face, which must match a detection (its centre inside the face's landmark box,
  similar size). A face without a match is looked for in the whole frame (it may have moved);
  if it is not there it is *missing* on that frame: it keeps its last landmarks (so the last
  crop) and the frame is reported. When it reappears it is re-initialised from the detection.
  `detect_every=0` is the reference's pure tracking.
* Frames before the first face get the first face's landmarks and are reported missing.
* Several faces: every selected face is tracked separately; matching detections by position
  keeps face ids stable from frame to frame. Faces are chosen on the first frame with a face;
  people who enter later are not added.
* Without a landmark runner the guide of each frame's matched detection (106 points or the
  pseudo guide) is used instead of 203 tracked points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence, Union

import cv2
import numpy as np

from ..errors import FaceNotFoundError
from .detectors.base import DetectedFace, FaceDetector, order_faces
from .landmarks import DEFAULT_BOX_TO_EXTENT, LandmarkRunner, pseudo_guide


@dataclass
class FaceTrack:
    """One face through F frames.

    landmarks: [F,K,2] float32 image px (203 with a landmark runner, else the detector guide);
        frames where the face is missing hold the last known (or first, before it appears) ones.
    found:     [F] bool, frames where the face was really seen.
    guide106:  [106,2] insightface points of the detection that started the track (or None);
        the reference's source-image crop is guided by these.
    """

    face_id: int
    landmarks: np.ndarray
    found: np.ndarray
    guide106: Optional[np.ndarray] = None

    @property
    def missing_frames(self) -> List[int]:
        return [int(i) for i in np.flatnonzero(~self.found)]


@dataclass
class _Live:
    lmk: Optional[np.ndarray] = None
    per_frame: list = field(default_factory=list)
    found: list = field(default_factory=list)
    guide106: Optional[np.ndarray] = None


def face_landmarks(image: np.ndarray, face: DetectedFace, runner: Optional[LandmarkRunner],
                   box_to_extent=DEFAULT_BOX_TO_EXTENT) -> np.ndarray:
    """Landmarks that describe a detected face: 203 via the runner, else 106 or a pseudo guide."""
    if runner is not None:
        return runner.from_face(image, face, box_to_extent)
    if face.points106 is not None:
        return np.asarray(face.points106, np.float32)
    return pseudo_guide(face, box_to_extent)


def select_faces(faces: Sequence[DetectedFace], face_index: Union[int, str], order: str,
                 name: str) -> List[DetectedFace]:
    """The faces to use: all of them (face_index='all'), or the face_index-th by `order`."""
    ordered = order_faces(faces, order)
    if isinstance(face_index, str):
        if face_index.lower() != "all":
            raise FaceNotFoundError(f"face index {face_index!r}: use a number or 'all'.")
        return ordered
    i = int(face_index)
    if not -len(ordered) <= i < len(ordered):
        raise FaceNotFoundError(
            f"{name}: face index {i} requested but {len(ordered)} face"
            f"{'s were' if len(ordered) != 1 else ' was'} found (valid: 0…{len(ordered) - 1}, "
            f"ordered {order}). Choose a smaller index or 'all'.")
    return [ordered[i]]


def _landmark_box(lmk: np.ndarray) -> np.ndarray:
    lo, hi = lmk.min(axis=0), lmk.max(axis=0)
    return np.concatenate([lo, hi]).astype(np.float32)


def match_faces(tracks: Sequence[np.ndarray], faces: Sequence[DetectedFace]) -> List[int]:
    """For each tracked landmark set [K,2], the index of its detection or -1 (greedy, by
    normalised centre distance; a detection must have its centre inside the landmark box grown
    by 30 % and a size within ×0.4…×2.5 of it)."""
    pairs = []
    for t, lmk in enumerate(tracks):
        b = _landmark_box(lmk)
        c, size = (b[:2] + b[2:]) / 2, max(float(np.max(b[2:] - b[:2])), 1.0)
        for j, f in enumerate(faces):
            fsize = max(float(f.box[2] - f.box[0]), float(f.box[3] - f.box[1]), 1.0)
            d = np.abs(f.center - c) / (size * 0.8)
            if d.max() <= 1.0 and 0.4 <= fsize / size <= 2.5:
                pairs.append((float(np.hypot(*d)), t, j))
    return _greedy_assign(pairs, len(tracks))


def _greedy_assign(pairs: List[tuple], n: int) -> List[int]:
    """(cost, i, j) candidates → for each of n items the j of its cheapest free pair, or -1."""
    out, used = [-1] * n, set()
    for _, i, j in sorted(pairs):
        if out[i] < 0 and j not in used:
            out[i] = j
            used.add(j)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _rematch(lost: Sequence[np.ndarray], faces: Sequence[DetectedFace],
             taken: Sequence[np.ndarray]) -> List[int]:
    """Lost faces (last landmarks) ↔ whole-frame detections not already used by a tracked face:
    nearest of similar size (×0.4…×2.5), greedy; -1 when none."""
    free = [j for j, f in enumerate(faces) if all(_iou(f.box, b) < 0.3 for b in taken)]
    pairs = []
    for k, lmk in enumerate(lost):
        b = _landmark_box(lmk)
        c, size = (b[:2] + b[2:]) / 2, max(float(np.max(b[2:] - b[:2])), 1.0)
        for j in free:
            f = faces[j]
            fsize = max(float(f.box[2] - f.box[0]), float(f.box[3] - f.box[1]), 1.0)
            if 0.4 <= fsize / size <= 2.5:
                pairs.append((float(np.hypot(*(f.center - c))), k, j))
    return _greedy_assign(pairs, len(lost))


def detect_near(detector: FaceDetector, frame: np.ndarray, tracks: Sequence[np.ndarray],
                face_px: float = 96.0, margin: float = 0.6) -> List[DetectedFace]:
    """Detections around each tracked face only (cheaper than the whole frame).

    For every landmark set [K,2], the region of its landmark box grown by `margin` box sides on
    each side is cut out, scaled so the face is about `face_px` pixels, and run through the
    detector with its lenient threshold (`detect_relaxed`: a turned head is still there);
    boxes/points are mapped back to frame pixels.
    """
    h, w = frame.shape[:2]
    out: List[DetectedFace] = []
    for lmk in tracks:
        b = _landmark_box(lmk)
        size = max(float(np.max(b[2:] - b[:2])), 8.0)
        x0, y0 = int(max(b[0] - margin * size, 0)), int(max(b[1] - margin * size, 0))
        x1, y1 = int(min(b[2] + margin * size, w)), int(min(b[3] + margin * size, h))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        s = min(1.0, face_px / size)
        region = frame[y0:y1, x0:x1]
        if s < 1.0:
            region = cv2.resize(region, (max(round((x1 - x0) * s), 1), max(round((y1 - y0) * s), 1)),
                                interpolation=cv2.INTER_AREA)
        find = getattr(detector, "detect_relaxed", detector.detect)
        for f in find(region):
            sx, sy = (x1 - x0) / region.shape[1], (y1 - y0) / region.shape[0]
            scale, off = np.array([sx, sy], np.float32), np.array([x0, y0], np.float32)
            box = (f.box.reshape(2, 2) * scale + off).reshape(4)
            p5 = None if f.points5 is None else f.points5 * scale + off
            p106 = None if f.points106 is None else f.points106 * scale + off
            out.append(DetectedFace(box.astype(np.float32), f.score, p5, p106))
    return out


class FaceTracker:
    """Incremental `track_faces`: feed frames chunk after chunk, then `finish()`.

    Keeps only per-frame landmarks (never the frames), so a long video can be tracked while it
    is decoded. Feeding any split of a frame list gives exactly what `track_faces` gives for the
    whole list. `total`: the number of frames if known (for progress and messages), else None.
    """

    def __init__(self, detector: FaceDetector, runner: Optional[LandmarkRunner],
                 face_index: Union[int, str] = 0, order: str = "large-small", detect_every: int = 1,
                 name: str = "video", progress: Optional[Callable[[int, Optional[int]], None]] = None,
                 total: Optional[int] = None):
        self.detector, self.runner = detector, runner
        self.face_index, self.order, self.detect_every = face_index, order, detect_every
        self.name, self.progress, self.total = name, progress, total
        self.calib = getattr(detector, "box_to_extent", DEFAULT_BOX_TO_EXTENT)
        self.n = 0  # frames fed so far
        self.first = -1  # first frame with a face
        self.live: List[_Live] = []

    def feed(self, frames: Iterable[np.ndarray]) -> None:
        """Track through more frames (RGB uint8 [H,W,3] each, same size as before)."""
        for frame in frames:
            if self.first < 0:
                self._look_for_first(frame)
            else:
                self._follow(frame)
            self.n += 1
            if self.progress:
                self.progress(self.n, self.total)

    def finish(self) -> List[FaceTrack]:
        """One FaceTrack per selected face (face_id 0…n−1 in `order` on the first frame with a
        face). Raises FaceNotFoundError when no frame had a face."""
        if self.first < 0:
            n = self.n
            raise FaceNotFoundError(
                f"{self.name}: no face found in {'the image' if n == 1 else f'any of its {n} frames'}. "
                "Use a picture where a face is clearly visible (frontal, not tiny), or another "
                "face detector.")
        return [FaceTrack(k, np.stack(t.per_frame).astype(np.float32), np.array(t.found, bool),
                          t.guide106) for k, t in enumerate(self.live)]

    def _detect(self, frame: np.ndarray) -> List[DetectedFace]:
        """Faces in the whole of frame `self.n`. A detector with `detect_frame(index, frame)`
        (faces known per frame, e.g. MediaPipe's) is asked by frame index."""
        by_index = getattr(self.detector, "detect_frame", None)
        return by_index(self.n, frame) if by_index is not None else self.detector.detect(frame)

    def _look_for_first(self, frame: np.ndarray) -> None:
        faces = self._detect(frame)
        if not faces:
            return
        self.first = self.n
        chosen = select_faces(faces, self.face_index, self.order, self.name)
        self.live = [_Live() for _ in chosen]
        for t, f in zip(self.live, chosen):
            t.lmk = face_landmarks(frame, f, self.runner, self.calib)
            t.guide106 = None if f.points106 is None else np.asarray(f.points106, np.float32)
            t.per_frame = [t.lmk] * (self.first + 1)  # frames before the face get its first crop
            t.found = [False] * self.first + [True]

    def _follow(self, frame: np.ndarray) -> None:
        live, runner, detector = self.live, self.runner, self.detector
        i, first, detect_every = self.n, self.first, self.detect_every
        check = runner is None or (detect_every > 0 and (i - first) % detect_every == 0)
        if not check:  # the reference: follow every face with the 203-point model
            for t in live:
                t.lmk = runner.run(frame, t.lmk)
                t.found.append(True)
                t.per_frame.append(t.lmk)
            return
        lmks = [t.lmk for t in live]
        # presence check near the tracked faces (the whole frame when there is no runner, or when
        # the faces are known per frame anyway)
        whole = runner is None or hasattr(detector, "detect_frame")
        faces = self._detect(frame) if whole else detect_near(detector, frame, lmks)
        matches = match_faces(lmks, faces)
        fresh = [False] * len(live)
        if min(matches) < 0:  # lost faces: look in the whole frame (they may have moved)
            full = faces if whole else self._detect(frame)
            taken = [faces[j].box for j in matches if j >= 0]
            extra = _rematch([lmks[k] for k, j in enumerate(matches) if j < 0], full, taken)
            it = iter(extra)
            for k, j in enumerate(matches):
                if j < 0:
                    j2 = next(it)
                    if j2 >= 0:
                        faces = list(faces) + [full[j2]]
                        matches[k], fresh[k] = len(faces) - 1, True
        for k, (t, j) in enumerate(zip(live, matches)):
            if j < 0:  # not seen: keep the last landmarks (so the last crop)
                t.found.append(False)
            elif runner is None or fresh[k] or not t.found[-1]:  # (re)initialise
                t.lmk = face_landmarks(frame, faces[j], runner, self.calib)
                t.found.append(True)
            else:  # seen: follow with the 203-point model like the reference
                t.lmk = runner.run(frame, t.lmk)
                t.found.append(True)
            t.per_frame.append(t.lmk)


def track_faces(frames: Sequence[np.ndarray], detector: FaceDetector,
                runner: Optional[LandmarkRunner], face_index: Union[int, str] = 0,
                order: str = "large-small", detect_every: int = 1, name: str = "video",
                progress: Optional[Callable[[int, int], None]] = None) -> List[FaceTrack]:
    """Track the selected faces through `frames` (F RGB uint8 [H,W,3] images).

    Returns one FaceTrack per selected face (face_id 0…n−1 in `order` on the first frame with
    a face). Raises FaceNotFoundError when no frame has a face, or face_index is out of range.
    progress(done, total) is called after every frame (it may raise to cancel).
    See `FaceTracker` for the same, fed chunk by chunk.
    """
    tracker = FaceTracker(detector, runner, face_index, order, detect_every, name, progress,
                          total=len(frames))
    tracker.feed(frames)
    return tracker.finish()
