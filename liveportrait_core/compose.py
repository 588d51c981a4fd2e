"""Composition: source Motion + driving Motion + options → the keypoints warping consumes.

Implements the composition of docs/MOTION.md (relative / absolute motion, animation regions, Kalman
smoothing of video sources, expression-friendly hull multiplier, stitching, eye / lip
retargeting, lip normalisation, source-video eye retargeting, driving multiplier), vectorised
over frames, in the reference's float32 operation order.

Kinds of input (decided by counts, as the reference does):
* source: an image when its items span a single frame, a video otherwise;
* driving: an image (or 1-frame template) when it has 1 item, a video (or template) otherwise.
Several faces: source items may carry several `face_id`s; each face's items form its own
sequence, composed against the same driving motion.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .errors import InputError, MotionFileError
from .motion import LIP_ARRAY, NUM_KP, Motion, region_mask
from .smoothing import kalman_smooth

REGIONS = ("all", "exp", "pose", "lip", "eyes")
DRIVING_OPTIONS = ("expression-friendly", "pose-friendly")
LENGTH_POLICIES = ("cut", "loop", "ping-pong", "hold")


class MissingRatiosError(InputError, MotionFileError):
    """Eye / lip retargeting asked for, but the needed open ratios are unknown."""


@dataclass
class KeypointPlan:
    """Per output frame, what warping consumes.

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


RatioTarget = Union[None, float, Sequence[float], torch.Tensor]


@dataclass
class ComposeOptions:
    """Composition options (core names; the reference's flag in brackets; defaults = its CLI).

    relative_motion (flag_relative_motion): motion relative to the first driving frame.
    stitching (flag_stitching): apply the stitching MLP (skipped when no MLP weights).
    eye_retargeting / lip_retargeting (flag_eye/lip_retargeting): drive eye / lip openness with
        the retargeting MLPs from the driving ratios (in relative mode this replaces the
        driving motion by the source plus the deltas, as the reference does).
    normalize_lip (flag_normalize_lip): close the source mouth first (relative mode only).
    source_video_eye_retargeting (flag_source_video_eye_retargeting): video source: every
        frame's eye openness set to frame 0's.
    driving_option: 'expression-friendly' | 'pose-friendly'.
    driving_multiplier: scales x_d − x_s of every frame.
    animation_region: 'all' | 'exp' | 'pose' | 'lip' | 'eyes'.
    smooth_variance (driving_smooth_observation_variance): Kalman observation variance for a
        video source driven by a video (larger = smoother; 0 = no smoothing).
    target_eye_ratio / target_lip_ratio: None = the driving motion's ratios; else a constant
        (or one value per driving frame) used as the retargeting target instead.
    length_policy: video source vs driving video of different lengths: 'cut' (the reference:
        min of both), 'loop', 'ping-pong' (back and forth) or 'hold' (last frame held) extend
        the shorter one to the longer one's length.
    lip_normalize_threshold / source_video_eye_retargeting_threshold: the reference's constants.
    """

    relative_motion: bool = True
    stitching: bool = True
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    normalize_lip: bool = False
    source_video_eye_retargeting: bool = False
    driving_option: str = "expression-friendly"
    driving_multiplier: float = 1.0
    animation_region: str = "all"
    smooth_variance: float = 3e-7
    target_eye_ratio: RatioTarget = None
    target_lip_ratio: RatioTarget = None
    length_policy: str = "cut"
    lip_normalize_threshold: float = 0.03
    source_video_eye_retargeting_threshold: float = 0.18

    def validate(self) -> None:
        """Raise InputError naming the first bad option."""
        def choice(name, allowed):
            v = getattr(self, name)
            if v not in allowed:
                raise InputError(f"option {name} must be one of {list(allowed)}, got {v!r}.")
        choice("animation_region", REGIONS)
        choice("driving_option", DRIVING_OPTIONS)
        choice("length_policy", LENGTH_POLICIES)
        for name in ("driving_multiplier", "smooth_variance", "lip_normalize_threshold",
                     "source_video_eye_retargeting_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"option {name} must be a finite number, got {v!r}.")
        if self.smooth_variance < 0:
            raise InputError(f"option smooth_variance must be ≥ 0, got {self.smooth_variance}.")
        for name in ("relative_motion", "stitching", "eye_retargeting", "lip_retargeting", "normalize_lip",
                     "source_video_eye_retargeting"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"option {name} must be True or False, got {getattr(self, name)!r}.")
        for name in ("target_eye_ratio", "target_lip_ratio"):
            v = getattr(self, name)
            if v is not None:
                arr = np.asarray(v, dtype=np.float64) if not isinstance(v, torch.Tensor) else v.double().numpy()
                if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                    raise InputError(f"option {name} must be None or ratios ≥ 0, got {v!r}.")


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
    """(source frame position, driving entry) per output frame."""
    if not src_video:
        n = n_drv if drv_video else 1
        return torch.zeros(n, dtype=torch.int64), torch.arange(n)
    if not drv_video:
        return torch.arange(n_src), torch.zeros(n_src, dtype=torch.int64)
    n = min(n_src, n_drv) if policy == "cut" else max(n_src, n_drv)
    return _extend(n_src, n, policy), _extend(n_drv, n, policy)


# ------------------------------------------------------------------------------ MLP helpers


def _mlp(fn, x_s: torch.Tensor, ratio: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """Run one MLP on `[x_s.flat(63), ratio]` rows; float32 CPU output."""
    p = next(module.parameters())
    inp = torch.cat([x_s.reshape(x_s.shape[0], -1), ratio], dim=1)
    inp = inp.to(p.device, p.dtype)
    with torch.no_grad():  # row by row, as the reference: results do not depend on batching
        return torch.cat([fn(inp[i:i + 1]) for i in range(inp.shape[0])]).to("cpu", torch.float32)


def _stitch(mlps, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Stitching: x_d + Δ[:, :63] (as 21×3), then + (Δ63, Δ64) on x and y."""
    delta = _mlp(mlps.stitching, x_s, x_d.reshape(x_d.shape[0], -1), mlps)
    out = x_d + delta[:, :63].reshape(-1, NUM_KP, 3)
    out[..., 0] += delta[:, 63:64]
    out[..., 1] += delta[:, 64:65]
    return out


def _record(trace: Optional[dict], kind: str, frames: torch.Tensor, ratio: torch.Tensor,
            delta: torch.Tensor) -> None:
    if trace is not None:
        trace.setdefault("calls", []).append({"kind": kind, "frames": frames.clone(),
                                               "ratio": ratio.clone(), "delta": delta.clone()})


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


def apply_hull_multiplier(x_d: torch.Tensor, x_s: torch.Tensor, m: float) -> torch.Tensor:
    """`(x_d − x_d[0])·m + x_s` in float32 (m rounded to float32), x_d [n,21,3], x_s [1|n,21,3]."""
    return (x_d - x_d[0:1]) * m + x_s


# ------------------------------------------------------------------------------ the math


def _ratio_target(target: RatioTarget, drv_idx: torch.Tensor, n_drv: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(target, dtype=np.float32)).reshape(-1)
    if t.numel() == 1:
        return t.expand(drv_idx.numel()).clone()
    if t.numel() != n_drv:
        raise InputError(f"{name} has {t.numel()} values; give one value or one per driving frame ({n_drv}).")
    return t[drv_idx]


def _compose_sequence(src: Motion, drv: Motion, d0: Motion, drv_idx: torch.Tensor, n_drv: int,
                      src_video: bool, drv_video: bool, o: ComposeOptions, mlps,
                      trace: Optional[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """One face: src [n items, one per output frame], drv [n] gathered driving entries,
    d0 = driving entry 0. Returns (x_s, x_d) [n,21,3]."""
    n, rel, region = len(src), o.relative_motion, o.animation_region
    kp_s, R_s, exp_s, s_s, t_s = src.kp, src.R, src.exp, src.scale, src.t
    if src_video:
        x_s = src.keypoints()
    else:  # an image: computed once, like the reference
        x_s = src.select([0]).keypoints().expand(n, NUM_KP, 3).clone()
    R_d, exp_d, s_d, t_d = drv.R, drv.exp, drv.scale, drv.t
    R_d0, exp_d0, s_d0, t_d0 = d0.R, d0.exp, d0.scale, d0.t
    pose_region = region in ("all", "pose")

    if not src_video:
        if rel:
            if drv_video:
                new_exp = exp_s + (exp_d - exp_d0)
            elif region == "eyes":  # driving image, eyes: nothing subtracted
                new_exp = exp_s + exp_d
            else:  # driving image: lip_array (cast to float32 first) replaces δ_d,0
                new_exp = exp_s + (exp_d - LIP_ARRAY.float())
            R_new = (R_d @ R_d0.transpose(1, 2)) @ R_s if pose_region else R_s
            s_new = s_s * (s_d / s_d0) if region == "all" else s_s
            t_new = t_s + (t_d - t_d0) if pose_region else t_s
        else:
            R_new, t_new = (R_d, t_d) if pose_region else (R_s, t_s)
            s_new, new_exp = s_s, exp_d
    else:
        if drv_video:
            if rel:
                E = (exp_s + exp_d) - exp_d0
                Q = (R_d @ R_d0.transpose(1, 2)) @ R_s
            else:
                E, Q = exp_d, R_d
            if o.smooth_variance > 0:
                E_in, E = E, kalman_smooth(E, o.smooth_variance)
                if trace is not None:
                    trace.update(smooth_in_exp=E_in, smooth_out_exp=E)
                if pose_region:  # the rotation is only smoothed where it is used
                    Q_in, Q = Q, kalman_smooth(Q, o.smooth_variance)
                    if trace is not None:
                        trace.update(smooth_in_R=Q_in, smooth_out_R=Q)
        elif rel:
            E = (exp_s.double() + (exp_d0.double() - LIP_ARRAY)).float()
            Q = R_s
        else:
            E, Q = exp_d0.expand(n, NUM_KP, 3), R_d0.expand(n, 3, 3)
        R_new = Q if pose_region else R_s
        s_new = s_s
        t_new = t_d if (not rel and pose_region) else t_s
        new_exp = E

    mask = region_mask(region, every_kp=rel and not src_video)
    delta = exp_s if mask is None else torch.where(mask, new_exp, exp_s)
    t_new = t_new.clone()
    t_new[:, 2] = 0
    x_d = s_new.reshape(n, 1, 1) * (kp_s @ R_new + delta) + t_new[:, None, :]

    if rel and not src_video and drv_video and o.driving_option == "expression-friendly":
        m = hull_multiplier(x_s[0], x_d[0])
        x_d = apply_hull_multiplier(x_d, x_s, m)
        if trace is not None:
            trace["motion_multiplier"] = m

    have_mlps = mlps is not None
    wants = [name for name, on in (("eye retargeting", o.eye_retargeting), ("lip retargeting", o.lip_retargeting),
                                   ("lip normalisation", o.normalize_lip and rel),
                                   ("source-video eye retargeting", o.source_video_eye_retargeting and src_video))
             if on]
    if wants and not have_mlps:
        warnings.warn(f"{', '.join(wants)} skipped: the stitching/retargeting weights are not loaded.",
                      stacklevel=3)
    frames = torch.arange(n)

    # lip normalisation (relative only) and source-video eye retargeting: source-only deltas
    lip_d0 = eye_d0 = None
    if have_mlps and o.normalize_lip and rel:
        c_lip = _need(src.lip_ratio, "lip normalisation", "source lip ratio")
        rows = torch.zeros(1, dtype=torch.int64) if not src_video else frames
        ok = rows[c_lip[rows, 0] >= o.lip_normalize_threshold]
        if ok.numel():
            ratio = torch.cat([c_lip[ok], torch.zeros(ok.numel(), 1)], 1)
            d = _mlp(mlps.lip, x_s[ok], ratio, mlps).reshape(-1, NUM_KP, 3)
            _record(trace, "lip_normalize", ok, ratio, d)
            lip_d0 = torch.zeros(n, NUM_KP, 3)
            if src_video:
                lip_d0[ok] = d
            else:
                lip_d0[:] = d
            lip_rows = frames if not src_video else ok
    if have_mlps and o.source_video_eye_retargeting and src_video:
        c_eyes = _need(src.eye_ratio, "source-video eye retargeting", "source eye ratios")
        c0 = (c_eyes[0, 0] + c_eyes[0, 1]) / 2
        if c0 < o.source_video_eye_retargeting_threshold:
            c0 = torch.tensor(0.39)
        ratio = torch.cat([c_eyes, c0.reshape(1, 1).expand(n, 1)], 1)
        eye_d0 = _mlp(mlps.eye, x_s, ratio, mlps).reshape(n, NUM_KP, 3)
        _record(trace, "source_eye", frames, ratio, eye_d0)

    stitch = o.stitching and have_mlps
    if not ((o.eye_retargeting or o.lip_retargeting) and have_mlps):
        if stitch:
            if trace is not None:
                trace["pre_stitch"] = x_d.clone()
            x_d = _stitch(mlps, x_s, x_d)
        if lip_d0 is not None:
            x_d = x_d.clone()
            x_d[lip_rows] = x_d[lip_rows] + lip_d0[lip_rows]
        if eye_d0 is not None:
            x_d = x_d + eye_d0
    else:
        out = x_s if rel else x_d
        for kind, on in (("eye", o.eye_retargeting), ("lip", o.lip_retargeting)):
            if on:
                out = out + _retarget_delta(kind, src, drv, x_s, drv_idx, n_drv, o, mlps, trace, frames)
        x_d = out
        if stitch:
            if trace is not None:
                trace["pre_stitch"] = x_d.clone()
            x_d = _stitch(mlps, x_s, x_d)

    x_d = x_s + (x_d - x_s) * o.driving_multiplier
    return x_s, x_d


def _retarget_delta(kind: str, src: Motion, drv: Motion, x_s: torch.Tensor, drv_idx: torch.Tensor,
                    n_drv: int, o: ComposeOptions, mlps, trace: Optional[dict],
                    frames: torch.Tensor) -> torch.Tensor:
    """Eye (kind 'eye') or lip retargeting delta [n,21,3] = MLP([x_s, source ratios, target])."""
    eye = kind == "eye"
    feature = f"{kind} retargeting"
    c_s = _need(src.eye_ratio if eye else src.lip_ratio, feature,
                "source eye ratios" if eye else "source lip ratio")
    target = o.target_eye_ratio if eye else o.target_lip_ratio
    if target is not None:
        c_d = _ratio_target(target, drv_idx, n_drv, f"target_{kind}_ratio")
    else:  # the reference's eye target is the driving frame's LEFT eye ratio only
        c_d = _need(drv.eye_ratio if eye else drv.lip_ratio, feature, f"driving {kind} ratios",
                    driving=True)[:, 0]
    ratio = torch.cat([c_s, c_d.reshape(-1, 1)], 1)
    d = _mlp(mlps.eye if eye else mlps.lip, x_s, ratio, mlps).reshape(-1, NUM_KP, 3)
    _record(trace, kind, frames, ratio, d)
    return d


def _need(value: Optional[torch.Tensor], feature: str, what: str, driving: bool = False) -> torch.Tensor:
    if value is not None:
        return value
    if driving:
        raise MissingRatiosError(
            f"{feature} needs the {what}, but the driving motion has none (e.g. a motion template "
            f"saved without ratio lists, like the reference's wink.pkl). Turn {feature} off, or set "
            f"target_{'eye' if 'eye' in feature else 'lip'}_ratio to a fixed value.")
    raise MissingRatiosError(
        f"{feature} needs the {what}, but the source motion has none (they come from the "
        f"source's 203-point landmarks). Turn {feature} off, or extract the source with landmarks.")


# ------------------------------------------------------------------------------ public entry


def compose(source: Motion, driving: Motion, mlps=None, options: Optional[ComposeOptions] = None,
            trace: Optional[dict] = None) -> KeypointPlan:
    """Source motion + driving motion → per output frame (x_s, x_d) for warping.

    source: N items (1 = image; several frames = video; `face_id` / `frame_index` for several
        faces), must carry canonical keypoints `kp`. driving: M items of one face (1 = image or
        1-frame template; more = video or template), only R/exp/t/scale (+ ratios) are used.
    mlps: StitchingRetargeting (.stitching/.eye/.lip) or None (stitching skipped as in the
        reference; retargeting / lip normalisation skipped with a warning).
    Frame count: image + video → M; image + image → 1; video + image → #source frames;
        video + video → min (length_policy 'cut') or max (loop / ping-pong / hold).
    Returns a KeypointPlan ordered by output frame, then face; fps = the driving fps for an
    image source, the source fps for a video source.
    trace: optional dict filled per face id with intermediates (for tests and debugging).
    Errors: InputError for bad options / inconsistent motions; MissingRatiosError (both an
    InputError and a MotionFileError) when eye / lip retargeting (or lip normalisation /
    source-video eye retargeting) needs open ratios the motions lack — e.g. a template without
    ratio lists: turn that option off or give target_eye_ratio / target_lip_ratio.
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
    d0 = driving.select([0])
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
        face_trace = trace.setdefault(face, {}) if trace is not None else None
        x_s, x_d = _compose_sequence(source.select(src_items), driving.select(drv_idx[ks_t]), d0,
                                     drv_idx[ks_t], len(driving), src_video, drv_video, o, mlps, face_trace)
        parts.append((ks_t, torch.full((len(ks),), face, dtype=torch.int64), src_items, x_s, x_d))
    if not parts:
        raise InputError("nothing to animate: no source face appears in the frames to be rendered.")

    ks, faces, src_items, x_s, x_d = (torch.cat([p[i] for p in parts]) for i in range(5))
    order = torch.argsort(ks, stable=True)  # frame-major; faces keep their first-appearance order
    fps = source.fps if src_video else driving.fps
    return KeypointPlan(x_s=x_s[order].contiguous(), x_d=x_d[order].contiguous(),
                        source_index=src_items[order], fps=float(fps), face_id=faces[order],
                        frame_index=ks[order])
