"""Composition: source Motion + driving Motion + options → the keypoints warping consumes.

The keypoint math is described in docs/MOTION.md ("Composition"): relative / absolute motion,
animation regions, Kalman smoothing of video sources, the expression-friendly hull multiplier,
stitching, eye / lip retargeting, lip normalisation, source-video eye retargeting, the driving
multiplier and the editing controls' ratio targets; vectorised over frames, in the reference's
float32 operation order.

Kinds of input (decided by counts, as the reference does):
* source: an image when its items span a single frame, a video otherwise;
* driving: an image (or 1-frame template) when it has 1 item, a video (or template) otherwise.
  In relative mode a driving motion with an anchor (Motion.anchor, or ComposeOptions.anchor_frame)
  is a sequence measured from that anchor, even with a single item.
Several faces: source items may carry several `face_id`s; each face's items form its own
sequence, composed against the same driving motion.

One face's composition runs the steps of `compose_steps` (target pose and expression for its
source / driving case, driven keypoints, expression-friendly multiplier, source-only deltas,
retargeting and stitching, driving multiplier).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

# the options, the trace, the hull multiplier and the missing-ratios error are part of compose's API
from .compose_options import DRIVING_OPTIONS, LENGTH_POLICIES, REGIONS, ComposeOptions  # noqa: F401
from .compose_steps import (ComposeTrace, FaceInputs, MlpCall, apply_hull_multiplier,  # noqa: F401
                            compose_face, hull_multiplier)
from .errors import InputError
from .motion import Motion
from .stitching import MissingRatiosError  # noqa: F401


@dataclass
class KeypointPlan:
    """Per output frame, what warping consumes (docs/MOTION.md).

    x_s:  [N,21,3] float32 source keypoints.
    x_d:  [N,21,3] float32 driving keypoints after composition, stitching, retargeting and
          the driving multiplier.
    source_index: [N] int64 index of the source item (FaceCrops / Motion item) whose
          appearance feature f_s is warped for this output frame.
    fps:  output frame rate.
    face_id: [N] int64 face id of each output item (0 for a single face).
    frame_index: [N] int64 output frame number of each item (items are ordered by frame,
          then face; with one face it is 0..N-1), or None.
    """

    x_s: torch.Tensor
    x_d: torch.Tensor
    source_index: torch.Tensor
    fps: float = 25.0
    face_id: Optional[torch.Tensor] = None
    frame_index: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.x_d.shape[0])

    def frames(self, start: int, stop: int) -> "KeypointPlan":
        """Items [start, stop) of the plan (to resume a render, or to render part of it)."""
        cut = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return KeypointPlan(x_s=cut(self.x_s), x_d=cut(self.x_d), source_index=cut(self.source_index),
                            fps=self.fps, face_id=cut(self.face_id), frame_index=cut(self.frame_index))


# ------------------------------------------------------------------------------ timeline


def _extend(length: int, n: int, policy: str) -> torch.Tensor:
    """Indices 0..n-1 into a sequence of `length` items, extended by `policy` when shorter."""
    k = torch.arange(n)
    if length >= n:
        return k
    if policy == "loop":
        return k % length
    if policy == "hold":
        return k.clamp(max=length - 1)
    if length == 1:  # ping-pong of a single frame
        return torch.zeros(n, dtype=torch.int64)
    period = 2 * (length - 1)
    m = k % period
    return torch.where(m < length, m, period - m)


def _timeline(n_src: int, n_drv: int, src_video: bool, drv_video: bool, policy: str):
    """(source frame position, driving entry) per output frame (docs/MOTION.md frame counts)."""
    if not src_video:
        n = n_drv if drv_video else 1
        return torch.zeros(n, dtype=torch.int64), torch.arange(n)
    if not drv_video:
        return torch.arange(n_src), torch.zeros(n_src, dtype=torch.int64)
    n = min(n_src, n_drv) if policy == "cut" else max(n_src, n_drv)
    return _extend(n_src, n, policy), _extend(n_drv, n, policy)


# ------------------------------------------------------------------------------ public entry


def _anchor(driving: Motion, o: ComposeOptions) -> tuple[Motion, Optional[int], bool]:
    """(anchor item, its driving frame or None, whether the driving is anchored explicitly)."""
    if o.anchor_frame is not None:
        k = int(o.anchor_frame)
        if k >= len(driving):
            raise InputError(f"option anchor_frame is {k}, but the driving motion has {len(driving)} frame(s) "
                             f"(0..{len(driving) - 1}).")
        return driving.select([k]), k, True
    if driving.anchor is not None and o.relative_motion:
        return driving.anchor, None, True
    return driving.select([0]), 0, False


def compose(source: Motion, driving: Motion, mlps=None, options: Optional[ComposeOptions] = None,
            trace: Optional[dict] = None) -> KeypointPlan:
    """Source motion + driving motion → per output frame (x_s, x_d) for warping (docs/MOTION.md).

    source: N items (1 = image; several frames = video; `face_id` / `frame_index` for several
        faces), must carry canonical keypoints `kp`. driving: M items of one face (1 = image or
        1-frame template; more = video or template), only R/exp/t/scale (+ ratios, anchor and
        ratio targets) are used. Relative mode measures the driving from
        `options.anchor_frame`, else from `driving.anchor`, else from its frame 0.
    mlps: StitchingRetargeting (.stitching/.eye/.lip) or None (stitching skipped as in the
        reference; retargeting / lip normalisation / ratio targets skipped with a warning).
    Frame count: image + video → M; image + image → 1; video + image → #source frames;
        video + video → min (length_policy 'cut') or max (loop / ping-pong / hold).
    Returns a KeypointPlan ordered by output frame, then face; fps = the driving fps for an
    image source, the source fps for a video source.
    trace: optional dict, filled with face id → ComposeTrace (intermediates, for tests and
    debugging).
    Errors: InputError for bad options / inconsistent motions; MissingRatiosError (both an
    InputError and a MotionFileError) when eye / lip retargeting (or lip normalisation /
    source-video eye retargeting / a ratio target) needs open ratios the motions lack — e.g. a
    template without ratio lists: turn that option off or give target_eye_ratio / target_lip_ratio.
    """
    o = options if options is not None else ComposeOptions()
    o.validate()
    source.validate("source motion")
    driving.validate("driving motion")
    if source.kp is None:
        raise InputError("the source motion has no canonical keypoints (kp): it looks like a motion "
                         "template. Use a motion extracted from the source image or video.")
    if len(driving.faces()) > 1:
        raise InputError(f"the driving motion has several faces {driving.faces()}; select one face first.")

    frames = source.frames()
    positions = {f: i for i, f in enumerate(sorted(set(frames.tolist())))}
    src_video, drv_video = len(positions) > 1, len(driving) > 1
    src_pos, drv_idx = _timeline(len(positions), len(driving), src_video, drv_video, o.length_policy)
    anchor, anchor_frame, anchored = _anchor(driving, o)
    drv_seq = drv_video or (anchored and o.relative_motion)
    face_ids = source.face_id if source.face_id is not None else torch.zeros(len(source), dtype=torch.int64)

    parts = []
    for face in source.faces():
        items = (face_ids == face).nonzero().flatten()
        by_pos = {}
        for it in items.tolist():
            p = positions[int(frames[it])]
            if p in by_pos:
                raise InputError(f"source motion has two items for face {face} in frame {int(frames[it])}.")
            by_pos[p] = it
        ks = [k for k, p in enumerate(src_pos.tolist()) if p in by_pos]
        if not ks:
            continue
        ks_t = torch.tensor(ks, dtype=torch.int64)
        src_items = torch.tensor([by_pos[int(src_pos[k])] for k in ks], dtype=torch.int64)
        idx = drv_idx[ks_t]
        rows = (idx == anchor_frame).nonzero().flatten() if anchor_frame is not None else idx[:0]
        f = FaceInputs(source.select(src_items), driving.select(idx), anchor,
                       int(rows[0]) if rows.numel() else None, idx, len(driving), src_video, drv_seq, drv_video)
        face_trace = ComposeTrace()
        if trace is not None:
            trace[face] = face_trace
        x_s, x_d = compose_face(f, o, mlps, face_trace)
        parts.append((ks_t, torch.full((len(ks),), face, dtype=torch.int64), src_items, x_s, x_d))
    if not parts:
        raise InputError("nothing to animate: no source face appears in the frames to be rendered.")

    ks, faces, src_items, x_s, x_d = (torch.cat([p[i] for p in parts]) for i in range(5))
    order = torch.argsort(ks, stable=True)  # frame-major; faces keep their first-appearance order
    fps = source.fps if src_video else driving.fps
    return KeypointPlan(x_s=x_s[order].contiguous(), x_d=x_d[order].contiguous(),
                        source_index=src_items[order], fps=float(fps), face_id=faces[order],
                        frame_index=ks[order])
