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

One face's composition runs these steps (`_compose_face`): the target pose and expression for
its source / driving case, the driven keypoints, the expression-friendly multiplier, the
source-only deltas (lip normalisation, source-video eye retargeting), retargeting and
stitching, and the driving multiplier.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import torch

from .compose_options import (COMPOSE_OPTIONS, DRIVING_OPTIONS, LENGTH_POLICIES, REGIONS,  # noqa: F401
                              ComposeOptions, OptionSpec, RatioTarget, options_from_node_values)
from .errors import InputError
from .motion import LIP_ARRAY, NUM_KP, Motion, region_mask
from .smoothing import kalman_smooth
from .stitching import (MissingRatiosError, eye_delta, lip_delta, need_ratios,  # noqa: F401
                        ratio_target_deltas, stitch_keypoints)

#: Source-video eye retargeting holds every frame's eyes at frame 0's openness. When frame 0's
#: eyes are closed (mean open ratio below the threshold option, 0.18), holding them closed for
#: the whole video would be wrong, so this ordinary open-eye ratio is the target instead (the
#: reference's constant).
CLOSED_EYE_REPLACEMENT_RATIO = 0.39


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


@dataclass
class MlpCall:
    """One retargeting-MLP call of a composition: kind 'eye' | 'lip' | 'lip_normalize' |
    'source_eye'; frames [k] rows of the face's sequence; ratio [k,r] ratio inputs; delta
    [k,21,3] the MLP's keypoint deltas."""

    kind: str
    frames: torch.Tensor
    ratio: torch.Tensor
    delta: torch.Tensor


@dataclass
class ComposeTrace:
    """Intermediates of one face's composition (tests and debugging); None = step not run.

    calls: the retargeting-MLP calls in order. pre_stitch: [n,21,3] x_d entering stitching.
    motion_multiplier: the expression-friendly hull multiplier. smooth_in_exp / smooth_out_exp,
    smooth_in_R / smooth_out_R: the Kalman smoother's input and output sequences.
    """

    calls: list = field(default_factory=list)
    pre_stitch: Optional[torch.Tensor] = None
    motion_multiplier: Optional[float] = None
    smooth_in_exp: Optional[torch.Tensor] = None
    smooth_out_exp: Optional[torch.Tensor] = None
    smooth_in_R: Optional[torch.Tensor] = None
    smooth_out_R: Optional[torch.Tensor] = None

    def record(self, kind: str, frames: torch.Tensor, ratio: torch.Tensor, delta: torch.Tensor) -> None:
        self.calls.append(MlpCall(kind, frames.clone(), ratio.clone(), delta.clone()))


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


# ------------------------------------------------------------------------------ hull multiplier


def _hull_volume(x: torch.Tensor) -> float:
    from scipy.spatial import ConvexHull  # lazy: only the expression-friendly path needs it
    try:
        return float(ConvexHull(x.reshape(-1, 3).numpy()).volume)
    except Exception:  # degenerate (flat) keypoint sets have no 3-D hull
        return 0.0


def hull_multiplier(x_s: torch.Tensor, x_d0: torch.Tensor) -> float:
    """Expression-friendly multiplier `sqrt(V(x_s)) / sqrt(V(x_d0))` from 3-D convex-hull
    volumes (float64) of two [21,3] keypoint sets; 1.0 when a hull is degenerate."""
    vs, vd = _hull_volume(x_s), _hull_volume(x_d0)
    if vs <= 0 or vd <= 0:
        return 1.0
    return math.sqrt(vs) / math.sqrt(vd)


def apply_hull_multiplier(x_d: torch.Tensor, x_s: torch.Tensor, m: float,
                          x_anchor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`(x_d − x_anchor)·m + x_s` in float32 (m rounded to float32), x_d [n,21,3], x_s [1|n,21,3];
    x_anchor [1,21,3] the anchor's driven keypoints, default x_d[0:1] (the first frame)."""
    return (x_d - (x_d[0:1] if x_anchor is None else x_anchor)) * m + x_s


# ------------------------------------------------------------------------------ one face


@dataclass
class _Face:
    """One face's composition inputs, n rows = one per output frame of that face.

    src: n source items; drv: the n driving entries they are driven by (drv_idx [n] into
    the n_drv driving items); anchor: the 1-item driving state relative motion is measured
    from; anchor_row: a row of drv that is the anchor entry (None: not among the rows).
    drv_seq: the driving is a sequence measured from the anchor (a video, or an anchored motion
    in relative mode) rather than a single driving image.
    """

    src: Motion
    drv: Motion
    anchor: Motion
    anchor_row: Optional[int]
    drv_idx: torch.Tensor
    n_drv: int
    src_video: bool
    drv_seq: bool

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class _Target:
    """Target pose and expression of every row: R [n,3,3], exp [n,21,3] (before the region
    mask), scale [n,1], t [n,3]."""

    R: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    t: torch.Tensor


def _pose_region(o: ComposeOptions) -> bool:
    return o.animation_region in ("all", "pose")


def _image_source_target(f: _Face, o: ComposeOptions, exp: torch.Tensor) -> _Target:
    """Image source: relative pose, scale and translation around the anchor (or the driving's
    absolute ones) with the given relative expression."""
    src, drv, a = f.src, f.drv, f.anchor
    if not o.relative_motion:
        R, t = (drv.R, drv.t) if _pose_region(o) else (src.R, src.t)
        return _Target(R, drv.exp, src.scale, t)
    R = (drv.R @ a.R.transpose(1, 2)) @ src.R if _pose_region(o) else src.R
    s = src.scale * (drv.scale / a.scale) if o.animation_region == "all" else src.scale
    t = src.t + (drv.t - a.t) if _pose_region(o) else src.t
    return _Target(R, exp, s, t)


def _target_image_from_video(f: _Face, o: ComposeOptions, trace: ComposeTrace) -> _Target:
    """Image source, driving sequence: δ_s + (δ_d − δ_anchor)."""
    return _image_source_target(f, o, f.src.exp + (f.drv.exp - f.anchor.exp))


def _target_image_from_image(f: _Face, o: ComposeOptions, trace: ComposeTrace) -> _Target:
    """Image source, driving image: the reference's neutral-lips expression replaces the
    driving's first frame (nothing is subtracted for the eyes region)."""
    if o.animation_region == "eyes":
        exp = f.src.exp + f.drv.exp
    else:
        exp = f.src.exp + (f.drv.exp - LIP_ARRAY.float())
    return _image_source_target(f, o, exp)


def _video_source_target(f: _Face, o: ComposeOptions, E: torch.Tensor, Q: torch.Tensor) -> _Target:
    R = Q if _pose_region(o) else f.src.R
    t = f.drv.t if (not o.relative_motion and _pose_region(o)) else f.src.t
    return _Target(R, E, f.src.scale, t)


def _target_video_from_video(f: _Face, o: ComposeOptions, trace: ComposeTrace) -> _Target:
    """Video source, driving sequence: per frame (δ_s + δ_d) − δ_anchor and R_d·R_anchorᵀ·R_s
    (absolute: the driving's), then Kalman smoothing over the frames."""
    src, drv, a = f.src, f.drv, f.anchor
    if o.relative_motion:
        E = (src.exp + drv.exp) - a.exp
        Q = (drv.R @ a.R.transpose(1, 2)) @ src.R
    else:
        E, Q = drv.exp, drv.R
    if o.smooth_variance > 0:
        trace.smooth_in_exp, E = E, kalman_smooth(E, o.smooth_variance)
        trace.smooth_out_exp = E
        if _pose_region(o):  # the rotation is only smoothed where it is used
            trace.smooth_in_R, Q = Q, kalman_smooth(Q, o.smooth_variance)
            trace.smooth_out_R = Q
    return _video_source_target(f, o, E, Q)


def _target_video_from_image(f: _Face, o: ComposeOptions, trace: ComposeTrace) -> _Target:
    """Video source, driving image: relative keeps every frame's pose and adds the image's
    expression minus the neutral-lips expression (in float64); absolute copies the image's."""
    src, drv = f.src, f.drv
    if o.relative_motion:
        E = (src.exp.double() + (drv.exp[0:1].double() - LIP_ARRAY)).float()
        Q = src.R
    else:
        E, Q = drv.exp, drv.R  # every row is the one driving image
    return _video_source_target(f, o, E, Q)


_TARGETS = {(False, True): _target_image_from_video, (False, False): _target_image_from_image,
            (True, True): _target_video_from_video, (True, False): _target_video_from_image}


def _driven_keypoints(src: Motion, target: _Target, o: ComposeOptions, src_video: bool) -> torch.Tensor:
    """x_d = s·(x_c·R + δ) + t (t_z = 0), δ taken from the target where the region mask says so."""
    n = len(src)
    mask = region_mask(o.animation_region, every_kp=o.relative_motion and not src_video)
    delta = src.exp if mask is None else torch.where(mask, target.exp, src.exp)
    t = target.t.clone()
    t[:, 2] = 0
    return target.scale.reshape(n, 1, 1) * (src.kp @ target.R + delta) + t[:, None, :]


def _expression_friendly(f: _Face, o: ComposeOptions, x_s: torch.Tensor, x_d: torch.Tensor,
                         trace: ComposeTrace) -> torch.Tensor:
    """Image source driven by a sequence, relative, expression-friendly: the motion measured from
    the anchor's driven keypoints, scaled by the hull multiplier, around the source keypoints."""
    if not (o.relative_motion and not f.src_video and f.drv_seq and o.driving_option == "expression-friendly"):
        return x_d
    if f.anchor_row is not None:
        x_a = x_d[f.anchor_row:f.anchor_row + 1]
    else:  # an anchor outside the rows: its own driven keypoints
        one = replace(f, src=f.src.select([0]), drv=f.anchor, anchor_row=None)
        x_a = _driven_keypoints(one.src, _target_image_from_video(one, o, trace), o, False)
    m = hull_multiplier(x_s[0], x_a[0])
    trace.motion_multiplier = m
    return apply_hull_multiplier(x_d, x_s, m, x_a)


def _warn_missing_mlps(f: _Face, o: ComposeOptions, mlps) -> None:
    wants = [name for name, on in (("eye retargeting", o.eye_retargeting), ("lip retargeting", o.lip_retargeting),
                                   ("lip normalisation", o.normalize_lip and o.relative_motion),
                                   ("source-video eye retargeting", o.source_video_eye_retargeting and f.src_video))
             if on]
    if wants and mlps is None:
        warnings.warn(f"{', '.join(wants)} skipped: the stitching/retargeting weights are not loaded.",
                      stacklevel=4)


@dataclass
class _SourceDeltas:
    """Deltas that depend on the source alone, added after stitching: lip normalisation
    (lip [n,21,3] on rows lip_rows) and source-video eye retargeting (eye [n,21,3])."""

    lip: Optional[torch.Tensor] = None
    lip_rows: Optional[torch.Tensor] = None
    eye: Optional[torch.Tensor] = None


def _source_only_deltas(f: _Face, o: ComposeOptions, x_s: torch.Tensor, mlps, trace: ComposeTrace) -> _SourceDeltas:
    out = _SourceDeltas()
    if mlps is None:
        return out
    n, src = len(f), f.src
    frames = torch.arange(n)
    if o.normalize_lip and o.relative_motion:  # close the source mouth where it is open enough
        c_lip = need_ratios(src.lip_ratio, "lip normalisation", "source lip ratio")
        rows = torch.zeros(1, dtype=torch.int64) if not f.src_video else frames  # an image: once
        ok = rows[c_lip[rows, 0] >= o.lip_normalize_threshold]
        if ok.numel():
            ratio = torch.cat([c_lip[ok], torch.zeros(ok.numel(), 1)], 1)
            d = lip_delta(mlps, x_s[ok], ratio)
            trace.record("lip_normalize", ok, ratio, d)
            out.lip = torch.zeros(n, NUM_KP, 3)
            if f.src_video:
                out.lip[ok] = d
            else:
                out.lip[:] = d
            out.lip_rows = frames if not f.src_video else ok
    if o.source_video_eye_retargeting and f.src_video:  # every frame's eyes as open as frame 0's
        c_eyes = need_ratios(src.eye_ratio, "source-video eye retargeting", "source eye ratios")
        c0 = (c_eyes[0, 0] + c_eyes[0, 1]) / 2
        if c0 < o.source_video_eye_retargeting_threshold:
            c0 = torch.tensor(CLOSED_EYE_REPLACEMENT_RATIO)
        ratio = torch.cat([c_eyes, c0.reshape(1, 1).expand(n, 1)], 1)
        out.eye = eye_delta(mlps, x_s, ratio)
        trace.record("source_eye", frames, ratio, out.eye)
    return out


def _ratio_target(target: RatioTarget, drv_idx: torch.Tensor, n_drv: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(target, dtype=np.float32)).reshape(-1)
    if t.numel() == 1:
        return t.expand(drv_idx.numel()).clone()
    if t.numel() != n_drv:
        raise InputError(f"{name} has {t.numel()} values; give one value or one per driving frame ({n_drv}).")
    return t[drv_idx]


def _retarget_delta(kind: str, f: _Face, o: ComposeOptions, x_s: torch.Tensor, mlps,
                    trace: ComposeTrace) -> torch.Tensor:
    """Eye (kind 'eye') or lip retargeting delta [n,21,3] = MLP([x_s, source ratios, target])."""
    eye = kind == "eye"
    feature = f"{kind} retargeting"
    c_s = need_ratios(f.src.eye_ratio if eye else f.src.lip_ratio, feature,
                      "source eye ratios" if eye else "source lip ratio")
    target = o.target_eye_ratio if eye else o.target_lip_ratio
    if target is not None:
        c_d = _ratio_target(target, f.drv_idx, f.n_drv, f"target_{kind}_ratio")
    else:  # the reference's eye target is the driving frame's LEFT eye ratio only
        c_d = need_ratios(f.drv.eye_ratio if eye else f.drv.lip_ratio, feature, f"driving {kind} ratios",
                          driving=True)[:, 0]
    ratio = torch.cat([c_s, c_d.reshape(-1, 1)], 1)
    d = (eye_delta if eye else lip_delta)(mlps, x_s, ratio)
    trace.record(kind, torch.arange(len(f)), ratio, d)
    return d


def _stitched(mlps, x_s: torch.Tensor, x_d: torch.Tensor, o: ComposeOptions, trace: ComposeTrace) -> torch.Tensor:
    if not (o.stitching and mlps is not None):
        return x_d
    trace.pre_stitch = x_d.clone()
    return stitch_keypoints(mlps, x_s, x_d)


def _retarget_and_stitch(f: _Face, o: ComposeOptions, x_s: torch.Tensor, x_d: torch.Tensor,
                         src_deltas: _SourceDeltas, mlps, trace: ComposeTrace) -> torch.Tensor:
    """Without retargeting: the driving's ratio targets, stitching, then the source-only deltas.
    With eye / lip retargeting (and MLPs): relative mode starts again from x_s (absolute from
    x_d) plus the retargeting deltas and the driving's ratio targets, then stitching."""
    if not ((o.eye_retargeting or o.lip_retargeting) and mlps is not None):
        x_d = _stitched(mlps, x_s, ratio_target_deltas(x_d, x_s, f.src, f.drv, mlps), o, trace)
        if src_deltas.lip is not None:
            rows = src_deltas.lip_rows
            x_d = x_d.clone()
            x_d[rows] = x_d[rows] + src_deltas.lip[rows]
        if src_deltas.eye is not None:
            x_d = x_d + src_deltas.eye
        return x_d
    out = x_s if o.relative_motion else x_d
    for kind, on in (("eye", o.eye_retargeting), ("lip", o.lip_retargeting)):
        if on:
            out = out + _retarget_delta(kind, f, o, x_s, mlps, trace)
    return _stitched(mlps, x_s, ratio_target_deltas(out, x_s, f.src, f.drv, mlps), o, trace)


def _source_keypoints(f: _Face) -> torch.Tensor:
    if f.src_video:
        return f.src.keypoints()
    # an image: computed once, like the reference
    return f.src.select([0]).keypoints().expand(len(f), NUM_KP, 3).clone()


def _compose_face(f: _Face, o: ComposeOptions, mlps, trace: ComposeTrace) -> tuple[torch.Tensor, torch.Tensor]:
    """One face → (x_s, x_d) [n,21,3] (the steps of the module doc)."""
    x_s = _source_keypoints(f)
    target = _TARGETS[(f.src_video, f.drv_seq)](f, o, trace)
    x_d = _driven_keypoints(f.src, target, o, f.src_video)
    x_d = _expression_friendly(f, o, x_s, x_d, trace)
    _warn_missing_mlps(f, o, mlps)
    src_deltas = _source_only_deltas(f, o, x_s, mlps, trace)
    x_d = _retarget_and_stitch(f, o, x_s, x_d, src_deltas, mlps, trace)
    return x_s, x_s + (x_d - x_s) * o.driving_multiplier


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
        f = _Face(source.select(src_items), driving.select(idx), anchor,
                  int(rows[0]) if rows.numel() else None, idx, len(driving), src_video, drv_seq)
        face_trace = ComposeTrace()
        if trace is not None:
            trace[face] = face_trace
        x_s, x_d = _compose_face(f, o, mlps, face_trace)
        parts.append((ks_t, torch.full((len(ks),), face, dtype=torch.int64), src_items, x_s, x_d))
    if not parts:
        raise InputError("nothing to animate: no source face appears in the frames to be rendered.")

    ks, faces, src_items, x_s, x_d = (torch.cat([p[i] for p in parts]) for i in range(5))
    order = torch.argsort(ks, stable=True)  # frame-major; faces keep their first-appearance order
    fps = source.fps if src_video else driving.fps
    return KeypointPlan(x_s=x_s[order].contiguous(), x_d=x_d[order].contiguous(),
                        source_index=src_items[order], fps=float(fps), face_id=faces[order],
                        frame_index=ks[order])
