"""From user frames to `FaceCrops`: detect, track, landmark and crop every selected face.

`crop_faces` follows the reference (docs/ARCHITECTURE.md, Face crops) and adds face selection,
several faces per frame (items = frame × face, tagged with a tracked face id), box smoothing
and robustness to frames without a face.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from ..errors import FaceNotFoundError, InputError
from ..images import frames_to_rgb_u8
from .crop import (CROP_SIZE, DRIVING, NETWORK_SIZE, SOURCE, CropPreset,
                   driving_matrix, full_frame_crop, full_frame_network_input, invert, network_input,
                   parse_rect_from_landmark, rect_to_matrix, transform_points, video_matrices, warp)
from .crops import FaceCrops
from .detectors.base import DetectedFace, FaceDetector
from .landmarks import LandmarkRunner
from .tracking import FaceTrack, FaceTracker, track_faces

PURPOSES = {"source": SOURCE, "driving": DRIVING}


def _preset(purpose, scale, vx, vy) -> CropPreset:
    if isinstance(purpose, str):
        if purpose not in PURPOSES:
            raise InputError(f"crop purpose {purpose!r}: use 'source', 'driving' or give scale/vx/vy.")
        p = PURPOSES[purpose]
    else:
        p = SOURCE
    return CropPreset(p.scale if scale is None else float(scale),
                      p.vx_ratio if vx is None else float(vx),
                      p.vy_ratio if vy is None else float(vy))


def _detect_preset(mode: str, detector, purpose, scale, vx, vy, name: str) -> CropPreset:
    """The crop preset of 'detect' mode, after checking the mode and that a detector is given."""
    if mode != "detect":
        raise InputError(f"crop mode {mode!r}: use 'detect' or 'none'.")
    if detector is None:
        raise InputError(f"{name}: a face detector is needed to crop (or use crop mode 'none').")
    return _preset(purpose, scale, vx, vy)


def _to_crops(crops, M_c2o, lmk, frame_index, face_id, hw, crop_size, missing, area: bool):
    """Stack per-item numpy results into FaceCrops (256 inputs via INTER_AREA or bilinear)."""
    net = np.stack([c if c.shape[0] == NETWORK_SIZE else network_input(c) if area else full_frame_network_input(c)
                    for c in crops])
    return FaceCrops(
        crops=torch.from_numpy(np.ascontiguousarray(net)),
        M_c2o=torch.from_numpy(np.ascontiguousarray(np.stack(M_c2o).astype(np.float32))),
        landmarks=None if lmk is None else torch.from_numpy(np.stack(lmk).astype(np.float32)),
        frame_index=torch.as_tensor(np.asarray(frame_index, np.int64)),
        face_id=torch.as_tensor(np.asarray(face_id, np.int64)),
        image_size=(int(hw[0]), int(hw[1])), crop_size=int(crop_size),
        missing_frames=tuple(sorted(set(int(m) for m in missing))))


def _crop_none(frames, detector, runner, crop_size, order, name, progress) -> FaceCrops:
    """`none` mode: every frame already is a face crop (whole frame → crop_size², 256 bilinear).

    203 landmarks (for the eye/lip ratios), when a runner is given, are tracked like in `detect`
    mode (reference: "203 points by tracking"); if the detector finds no face in any frame,
    each frame is assumed to hold a face framed like a source crop (extent = side/2.3, shifted
    down by 0.125 side) and the runner refines that guess.
    """
    results = [full_frame_crop(f, crop_size) for f in frames]
    lmks = None
    if runner is not None:
        tracked = None
        if detector is not None:
            try:
                tracked = track_faces(frames, detector, runner, 0, order, 1, name, progress)[0]
            except FaceNotFoundError:
                tracked = None
        per_frame = (tracked.landmarks if tracked is not None else
                     [_framed_face_landmarks(f, runner) for f in frames])
        lmks = [transform_points(p, r.M_o2c) for p, r in zip(per_frame, results)]
    n = len(frames)
    return _to_crops([full_frame_network_input(f) for f in frames], [r.M_c2o for r in results],
                     lmks, range(n), [0] * n, frames[0].shape[:2], crop_size, (), area=False)


def _framed_face_landmarks(img: np.ndarray, runner: LandmarkRunner) -> np.ndarray:
    """203 points of a face framed like a source crop (no detection), refined twice."""
    h, w = img.shape[:2]
    side = min(h, w) / SOURCE.scale
    cx, cy = w / 2, h / 2 - SOURCE.vy_ratio * min(h, w)
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    return runner.from_face(img, DetectedFace(box, 0.0), (0.0, 0.0, 0.0, 0.0), refine=2)


def crop_faces(frames, detector: Optional[FaceDetector], landmark_runner: Optional[LandmarkRunner],
               purpose: Union[str, None] = "source", scale: Optional[float] = None,
               vx: Optional[float] = None, vy: Optional[float] = None,
               face_index: Union[int, str] = 0, order: str = "large-small", rotate: bool = True,
               smooth: float = 0.0, mode: str = "detect", crop_size: int = CROP_SIZE,
               detect_every: int = 1, name: str = "image",
               progress: Optional[Callable[[int, int], None]] = None) -> FaceCrops:
    """Face crops of a picture or video.

    frames: [F,H,W,3] (or one [H,W,3], or a list) RGB uint8 / float 0..1, numpy or torch.
    detector / landmark_runner: a FaceDetector, and a LandmarkRunner (None: no 203 points;
        crops are then guided by the detector's 106 points or its box).
    purpose: 'source' (scale 2.3, vy −0.125, rotated per-frame crops, 256 by INTER_AREA) or
        'driving' (the reference's driving auto-crop: scale 2.2, vy −0.1, one unrotated box =
        mean of the per-frame boxes, 256 bilinear); scale/vx/vy override the preset's numbers.
    face_index: which face (after `order`) or 'all' (items = frame × face, face ids tracked).
    order: large-small, small-large, left-right, right-left, top-bottom, bottom-top.
    rotate: cancel head roll in source crops. smooth: temporal smoothing σ (frames) of the
        source crop boxes, 0 = reference. mode: 'detect', or 'none' (frames are already crops).
    detect_every: presence check period while tracking (see tracking.track_faces).
    Returns FaceCrops with N = F × faces items, frame-major. Raises FaceNotFoundError (no face
    anywhere, naming `name`; index out of range, giving the number of faces found).
    """
    imgs = frames_to_rgb_u8(frames, name)
    if mode == "none":
        return _crop_none(imgs, detector, landmark_runner, crop_size, order, name, progress)
    p = _detect_preset(mode, detector, purpose, scale, vx, vy, name)
    tracks: List[FaceTrack] = track_faces(imgs, detector, landmark_runner, face_index, order,
                                          detect_every, name, progress)
    mats_o2c = [_matrices(t, len(imgs), purpose, p, rotate, smooth, crop_size) for t in tracks]
    return _warp_items(imgs, 0, tracks, mats_o2c, purpose, crop_size, landmark_runner is not None)


def _warp_items(imgs: Sequence[np.ndarray], start: int, tracks: List[FaceTrack],
                mats_o2c: List[np.ndarray], purpose, crop_size: int, with_lmk: bool) -> FaceCrops:
    """FaceCrops of frames start … start+len(imgs)−1 (global indices into the tracks/matrices)."""
    n_faces = len(tracks)
    interp = cv2.INTER_LINEAR if purpose == "driving" else cv2.INTER_AREA
    order_idx = [(start + f, k) for f in range(len(imgs)) for k in range(n_faces)]  # frame-major
    crops, mats, lmks = [], [], []
    for f, k in order_idx:  # one 512² crop at a time (a long video never holds them all)
        M = mats_o2c[k][f]
        crop = warp(imgs[f - start], M, (crop_size, crop_size))
        crops.append(crop if crop_size == NETWORK_SIZE else
                     cv2.resize(crop, (NETWORK_SIZE, NETWORK_SIZE), interpolation=interp))
        mats.append(invert(M))
        if with_lmk:
            lmks.append(transform_points(tracks[k].landmarks[f], M))
    end = start + len(imgs)
    missing = [m for t in tracks for m in t.missing_frames if start <= m < end]
    return _to_crops(crops, mats, lmks if with_lmk else None,
                     [f for f, _ in order_idx], [k for _, k in order_idx], imgs[0].shape[:2],
                     crop_size, missing, area=purpose != "driving")


def iter_face_crops(read_chunks: Callable[[], Iterable], detector: Optional[FaceDetector],
                    landmark_runner: Optional[LandmarkRunner], purpose: Union[str, None] = "source",
                    scale: Optional[float] = None, vx: Optional[float] = None,
                    vy: Optional[float] = None, face_index: Union[int, str] = 0,
                    order: str = "large-small", rotate: bool = True, smooth: float = 0.0,
                    mode: str = "detect", crop_size: int = CROP_SIZE, detect_every: int = 1,
                    name: str = "video",
                    progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Iterator[FaceCrops]:
    """`crop_faces` for a video too long to hold: the same crops, one FaceCrops per chunk.

    read_chunks() must return a fresh iterable of frame chunks ([B,H,W,3] each, any B, the same
    frames every call): mode 'detect' calls it twice — pass 1 tracks the faces keeping only
    landmarks (the crop boxes need all of them: smoothing, the driving global box), pass 2 warps
    the crops. Mode 'none' (frames already are crops) reads once and needs no detector (each
    frame is then independent). Concatenating the chunks (`concat_crops`) gives exactly what
    `crop_faces` gives for all frames at once; frame_index is global, missing_frames per chunk.
    progress(frames done, None) is called after every frame of pass 1, then (F, F) when it ends
    (mode 'none': per chunk).
    """
    if mode == "none":
        if detector is not None:
            raise InputError(f"{name}: streamed crop mode 'none' tracks no faces; give no detector.")
        start = 0
        for chunk in read_chunks():
            fc = crop_faces(chunk, None, landmark_runner, mode="none", crop_size=crop_size, name=name)
            yield dataclasses.replace(fc, frame_index=fc.frame_index + start)
            start += len(fc)
            del chunk  # free this chunk before the next one is decoded
            if progress:
                progress(start, None)
        return
    p = _detect_preset(mode, detector, purpose, scale, vx, vy, name)
    tracker = FaceTracker(detector, landmark_runner, face_index, order, detect_every, name, progress)
    size = None
    for chunk in read_chunks():
        imgs = frames_to_rgb_u8(chunk, name)
        if size is not None and imgs[0].shape != size:
            raise InputError(f"{name}: frames of different sizes {sorted({size, imgs[0].shape})}; resize them first.")
        size = imgs[0].shape
        tracker.feed(imgs)
        del chunk, imgs  # free this chunk before the next one is decoded
    tracks = tracker.finish()
    n = tracker.n
    if progress:
        progress(n, n)  # pass 1 done (a progress bar can close)
    mats_o2c = [_matrices(t, n, purpose, p, rotate, smooth, crop_size) for t in tracks]
    start = 0
    for chunk in read_chunks():
        imgs = frames_to_rgb_u8(chunk, name)
        if start + len(imgs) > n:
            break
        yield _warp_items(imgs, start, tracks, mats_o2c, purpose, crop_size, landmark_runner is not None)
        start += len(imgs)
        del chunk, imgs
    if start != n:
        raise InputError(f"{name}: the second read gave other frames than the first ({n} frames); "
                         "the input changed while it was being read.")


def concat_crops(parts: Sequence[FaceCrops]) -> FaceCrops:
    """One FaceCrops from consecutive chunks of the same video (items in order)."""
    if len(parts) == 1:
        return parts[0]
    cat = {k: torch.cat([getattr(c, k) for c in parts]) for k in ("crops", "M_c2o", "frame_index", "face_id")}
    lmk = None if parts[0].landmarks is None else torch.cat([c.landmarks for c in parts])
    missing = tuple(sorted(set(m for c in parts for m in c.missing_frames)))
    return dataclasses.replace(parts[0], landmarks=lmk, missing_frames=missing, **cat)


def _matrices(track: FaceTrack, n_frames: int, purpose, p: CropPreset, rotate: bool,
              smooth: float, crop_size: int) -> np.ndarray:
    """M_o2c [F,3,3] float32 of one tracked face (the reference's arithmetic)."""
    lmk = track.landmarks
    if purpose == "driving":  # one unrotated box: mean of the per-frame boxes
        return np.repeat(driving_matrix(lmk, crop_size, p.scale, p.vx_ratio, p.vy_ratio)[None], n_frames, 0)
    if n_frames == 1 and track.guide106 is not None:
        # reference source image: crop guided by the 106 points (203 points only for ratios)
        rect = parse_rect_from_landmark(track.guide106, p.scale, p.vx_ratio, p.vy_ratio)
        return rect_to_matrix(rect, crop_size, rotate)[None]
    return video_matrices(lmk, crop_size, p.scale, p.vx_ratio, p.vy_ratio, rotate, smooth)
