"""`Motion`: LivePortrait's per-frame keypoint parameters, batched over items (frames × faces).

Plain, editable data: every field is a CPU float32 tensor with items on dim 0.
Builders follow ARCHITECTURE.md §3.1–3.3 and §8 (bins → degrees → rotation, keypoint
transform, eye/lip open ratios); the float32 operation order is the reference's so that
results match its fixtures bit for bit where possible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .errors import InputError

NUM_KP = 21
NUM_BINS = 66

# Keypoint index sets and constants of the pipeline (ARCHITECTURE.md §9.3).
EYE_KPS = [11, 13, 15, 16, 18]
LIP_KPS = [6, 12, 14, 17, 19, 20]

# Reference "neutral closed lips" expression (float64, (1,21,3)) subtracted for driving images.
LIP_ARRAY = torch.tensor([
    -9.4524e-05, 0.00024222, -4.009739999999999e-05, 0.000208596, 0.000468054, 1.2746399999999999e-05,
    -0.000124602, 0.00032497200000000003, 4.425e-06, 0.000119652, -0.000456624, 5.40852e-05,
    -0.000265254, -7.459799999999999e-05, -1.5527999999999998e-05, -3.3488399999999996e-05,
    -0.000183036, -3.4940399999999998e-06, -4.7542799999999996e-07, -4.5246599999999997e-07,
    1.59498e-06, -0.000541296, 0.0026328000000000002, 7.2485999999999995e-06, -1.1694e-05,
    5.00502e-06, 9.9888e-06, 8.028599999999999e-07, 5.1913199999999995e-06, -0.00040934399999999996,
    0.000166878, -1.9815000000000003e-05, -8.854799999999999e-05, -1.51536e-05, 8.2506e-05,
    5.94012e-06, -2.61054e-07, 2.7591e-06, 2.21028e-06, -6.6282e-05, -6.828599999999999e-05,
    -3.4531799999999997e-06, -0.00083262, -0.00179592, -2.59176e-06, 6.9714e-06, 3.65514e-05,
    -1.8977999999999999e-06, -4.808759999999999e-06, 7.1148e-06, -1.03236e-05, -0.0006368400000000001,
    -0.0011661, 5.62314e-05, 0.00028329, -1.4565599999999998e-05, 1.09746e-05, -4.16022e-06,
    -0.0150906, -0.0025494, 0.000222474, 0.00562788, 0.0027264599999999996,
], dtype=torch.float64).reshape(1, NUM_KP, 3)


def _exp_set_mask() -> torch.Tensor:
    """[21,3] bool: expression components replaced in absolute mode (regions all/exp) and
    always for video sources (§9.3 EXP-SET)."""
    m = torch.zeros(NUM_KP, 3, dtype=torch.bool)
    m[[1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]] = True
    m[3:5, 1] = True
    m[5, 2] = True
    m[8, 2] = True
    m[9, 1:] = True
    return m


EXP_SET = _exp_set_mask()


def region_mask(region: str, every_kp: bool) -> Optional[torch.Tensor]:
    """[21,3] bool: the δ components taken from the composed expression (None: keep δ_s).
    Regions all/exp use all 21 keypoints for an image source in relative mode (every_kp),
    else the EXP-SET; lip / eyes use their keypoint sets."""
    if region == "pose":
        return None
    if region in ("lip", "eyes"):
        m = torch.zeros(NUM_KP, 3, dtype=torch.bool)
        m[LIP_KPS if region == "lip" else EYE_KPS] = True
        return m
    return torch.ones(NUM_KP, 3, dtype=torch.bool) if every_kp else EXP_SET


Index = Union[int, slice, Sequence[int], torch.Tensor, np.ndarray]


def _f32(x, name: str = "value") -> torch.Tensor:
    """Any array-like → contiguous CPU float32 tensor (a copy when it had to convert)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu", torch.float32)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t.contiguous()


def degrees_from_bins(logits: torch.Tensor) -> torch.Tensor:
    """Pose-bin logits [N,66] → degrees [N] float32: `3·Σ softmax(logits)_i·i − 97.5` (§3.1).

    A tensor that is already in degrees ([N] or [N,1]) is returned as [N] unchanged, like the
    reference's helper.
    """
    x = _f32(logits, "pose logits")
    if x.ndim == 2 and x.shape[1] == NUM_BINS:
        p = torch.softmax(x, dim=1)
        idx = torch.arange(NUM_BINS, dtype=torch.float32)
        return (p * idx).sum(dim=1) * 3 - 97.5
    return x.reshape(-1)


def rotation_from_degrees(pitch, yaw, roll) -> torch.Tensor:
    """Degrees [N] (or [N,1]) → rotation [N,3,3] float32, `R = (Rz·Ry·Rx)ᵀ` (§3.2).

    Keypoints are row vectors multiplied on the right: `kp @ R`.
    """
    x, y, z = (_f32(a).reshape(-1) / 180 * math.pi for a in (pitch, yaw, roll))
    n = x.shape[0]
    one, zero = torch.ones(n), torch.zeros(n)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).reshape(n, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).reshape(n, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).reshape(n, 3, 3)
    return ((rz @ ry) @ rx).transpose(1, 2).contiguous()


def degrees_from_rotation(R) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation [N,3,3] (row-vector convention of §3.2) → (pitch, yaw, roll) [N] float32 degrees.

    Inverse of `rotation_from_degrees` for |yaw| < 90° (computed in float64). Templates store
    only R; these angles are informative, R stays the authoritative value.
    """
    r = _f32(R).reshape(-1, 3, 3).double()
    # R = Mᵀ with M = Rz·Ry·Rx: M[2,0] = −sin y, M[2,1:] = cos y·(sin x, cos x), M[:2,0] = cos y·(cos z, sin z)
    yaw = torch.asin((-r[:, 0, 2]).clamp(-1.0, 1.0))
    pitch = torch.atan2(r[:, 1, 2], r[:, 2, 2])
    roll = torch.atan2(r[:, 0, 1], r[:, 0, 0])
    return tuple(torch.rad2deg(a).float() for a in (pitch, yaw, roll))  # type: ignore[return-value]


def transform_keypoint(kp: torch.Tensor, R: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor,
                       t: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 2 (§3.3): `x = s·(kp @ R + exp)`, then `+ (tx, ty)`; tz is ignored.

    kp, exp [N,21,3]; R [N,3,3]; scale [N,1]; t [N,3] → [N,21,3] float32.
    """
    x = kp.reshape(-1, NUM_KP, 3) @ R + exp.reshape(-1, NUM_KP, 3)
    x = x * scale.reshape(-1, 1, 1)
    x[:, :, 0:2] += t.reshape(-1, 3)[:, None, 0:2]
    return x


def eye_lip_ratios(landmarks) -> tuple[torch.Tensor, torch.Tensor]:
    """Eye and lip open ratios from 203-point landmarks (§8).

    landmarks: [N,203,2] (or [203,2]) pixels, any scale/rotation (the ratios are invariant).
    Returns (eye [N,2] float32 [left, right], lip [N,1] float32), computed in float32 as the
    reference does (`d(a,b) / (d(c,d) + 1e-6)`).
    """
    if isinstance(landmarks, torch.Tensor):
        landmarks = landmarks.detach().cpu().numpy()
    lmk = np.asarray(landmarks, dtype=np.float32)
    if lmk.ndim == 2:
        lmk = lmk[None]
    if lmk.ndim != 3 or lmk.shape[1:] != (203, 2):
        raise InputError(f"eye/lip ratios need 203-point landmarks [N,203,2]; got shape {lmk.shape}.")

    def ratio(a: int, b: int, c: int, d: int) -> np.ndarray:
        num = np.linalg.norm(lmk[:, a] - lmk[:, b], axis=1, keepdims=True)
        den = np.linalg.norm(lmk[:, c] - lmk[:, d], axis=1, keepdims=True)
        return num / (den + np.float32(1e-6))

    eye = np.concatenate([ratio(6, 18, 0, 12), ratio(30, 42, 24, 36)], axis=1)
    lip = ratio(90, 102, 48, 66)
    return torch.from_numpy(eye.astype(np.float32)), torch.from_numpy(lip.astype(np.float32))


@dataclass(eq=False, repr=False)  # tensors: no element-wise ==, no page-long repr
class Motion:
    """Keypoint parameters of N items (frames, or frame × face for several faces).

    pitch, yaw, roll: [N] float32 degrees.
    R:     [N,3,3] float32 rotation, row-vector convention (keypoints are multiplied as kp @ R).
    exp:   [N,21,3] float32 expression deformation δ.
    t:     [N,3] float32 translation (only x, y are used).
    scale: [N,1] float32.
    kp:    [N,21,3] float32 canonical keypoints x_c, or None (motion templates carry none).
    eye_ratio: [N,2] float32 [left, right] eye-open ratios, or None when unknown.
    lip_ratio: [N,1] float32 lip-open ratio, or None when unknown.
    fps:   frames per second of the sequence (25 for a still image, as the reference does).
    face_id: [N] int64 face id per item (0 for a single face).
    frame_index: [N] int64 frame per item.
    anchor: a 1-item Motion this motion is relative to, or None. In relative mode `compose`
        measures the driving motion from its anchor instead of from driving frame 0 (a neutral
        motion edited with controls has a neutral anchor, so its unedited frames give the
        source exactly). `select` keeps it; `concat` keeps it when all parts share it.
    eye_target / lip_target: [N,2] float32 (target open ratio, weight) set by the ratio
        controls of `editing.apply_controls`, or None. Weight 0 = no target for that item;
        otherwise compose adds weight × the eye / lip retargeting delta towards that ratio
        (computed from the source keypoints and open ratios) before stitching.

    R is authoritative: the math uses R, the degrees are for display and editing (use
    `with_pose` to change them and rebuild R).
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    R: torch.Tensor
    exp: torch.Tensor
    t: torch.Tensor
    scale: torch.Tensor
    kp: Optional[torch.Tensor] = None
    eye_ratio: Optional[torch.Tensor] = None
    lip_ratio: Optional[torch.Tensor] = None
    fps: float = 25.0
    face_id: Optional[torch.Tensor] = None
    frame_index: Optional[torch.Tensor] = None
    anchor: Optional["Motion"] = None
    eye_target: Optional[torch.Tensor] = None
    lip_target: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.R.shape[0])

    def __repr__(self) -> str:
        extras = [k for k in ("kp", "eye_ratio", "lip_ratio", "anchor", "eye_target", "lip_target")
                  if getattr(self, k) is not None]
        return (f"Motion({len(self)} items, faces {self.faces()}, fps {self.fps:g}, "
                f"with {', '.join(extras) if extras else 'no kp / ratios'})")

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_extractor(cls, raw: Mapping[str, torch.Tensor], eye_ratio=None, lip_ratio=None,
                       fps: float = 25.0) -> "Motion":
        """From MotionExtractor's raw dict (pitch/yaw/roll [B,66] logits or degrees, t [B,3],
        exp [B,63], scale [B,1], kp [B,63]); ratios [B,2] / [B,1] or None (§3.1–3.2)."""
        missing = [k for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp") if k not in raw]
        if missing:
            raise InputError(f"motion extractor output lacks {missing}; expected the MotionExtractor dict.")
        pitch, yaw, roll = (degrees_from_bins(raw[k]) for k in ("pitch", "yaw", "roll"))
        n = pitch.shape[0]
        return cls.from_degrees(pitch, yaw, roll, exp=_f32(raw["exp"]).reshape(n, NUM_KP, 3),
                                t=_f32(raw["t"]).reshape(n, 3), scale=_f32(raw["scale"]).reshape(n, 1),
                                kp=_f32(raw["kp"]).reshape(n, NUM_KP, 3), eye_ratio=eye_ratio,
                                lip_ratio=lip_ratio, fps=fps)

    @classmethod
    def from_degrees(cls, pitch, yaw, roll, exp, t, scale, kp=None, eye_ratio=None, lip_ratio=None,
                     fps: float = 25.0, face_id=None, frame_index=None) -> "Motion":
        """Build from degrees (R computed per §3.2). Array-likes are converted to float32."""
        pitch, yaw, roll = (_f32(a).reshape(-1) for a in (pitch, yaw, roll))
        m = cls(pitch=pitch, yaw=yaw, roll=roll, R=rotation_from_degrees(pitch, yaw, roll),
                **_common(exp, t, scale, kp, eye_ratio, lip_ratio, face_id, frame_index), fps=float(fps))
        m.validate()
        return m

    @classmethod
    def from_rotation(cls, R, exp, t, scale, kp=None, eye_ratio=None, lip_ratio=None,
                      fps: float = 25.0, face_id=None, frame_index=None) -> "Motion":
        """Build from rotation matrices (templates store only R); degrees derived from R."""
        R = _f32(R).reshape(-1, 3, 3)
        pitch, yaw, roll = degrees_from_rotation(R)
        m = cls(pitch=pitch, yaw=yaw, roll=roll, R=R,
                **_common(exp, t, scale, kp, eye_ratio, lip_ratio, face_id, frame_index), fps=float(fps))
        m.validate()
        return m

    # ------------------------------------------------------------------ checks / derived values
    def validate(self, name: str = "motion") -> None:
        """Raise InputError unless every field has the documented shape for N items."""
        n = len(self)
        want = {"pitch": (n,), "yaw": (n,), "roll": (n,), "R": (n, 3, 3), "exp": (n, NUM_KP, 3),
                "t": (n, 3), "scale": (n, 1), "kp": (n, NUM_KP, 3), "eye_ratio": (n, 2),
                "lip_ratio": (n, 1), "face_id": (n,), "frame_index": (n,), "eye_target": (n, 2),
                "lip_target": (n, 2)}
        for key, shape in want.items():
            v = getattr(self, key)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape:
                got = tuple(v.shape) if hasattr(v, "shape") else type(v).__name__
                raise InputError(f"{name}: field '{key}' should have shape {shape}, got {got}.")
            integer = key in ("face_id", "frame_index")
            if (v.dtype == torch.float32) == integer or (integer and v.is_floating_point()):
                raise InputError(f"{name}: field '{key}' should be {'int64' if integer else 'float32'}, got {v.dtype}.")
        if n == 0:
            raise InputError(f"{name} has no frames.")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"{name}: fps must be a positive number, got {self.fps}.")
        for key in ("eye_target", "lip_target"):
            v = getattr(self, key)
            if v is not None and not (bool(torch.isfinite(v).all()) and bool((v >= 0).all())):
                raise InputError(f"{name}: field '{key}' should hold finite (ratio, weight) pairs ≥ 0.")
        if self.anchor is not None:
            a = self.anchor
            if not isinstance(a, Motion) or len(a) != 1 or a.anchor is not None:
                raise InputError(f"{name}: the anchor must be a 1-item motion without an anchor of its own.")
            a.validate(f"{name} anchor")

    def keypoints(self) -> torch.Tensor:
        """Implicit keypoints x = transform_keypoint(kp, R, exp, scale, t) [N,21,3] float32."""
        if self.kp is None:
            raise InputError("this motion has no canonical keypoints (kp), e.g. it came from a "
                             "motion template; it can only be used as the driving motion.")
        return transform_keypoint(self.kp, self.R, self.exp, self.scale, self.t)

    def faces(self) -> list[int]:
        """Distinct face ids in first-appearance order ([0] when face_id is None)."""
        if self.face_id is None:
            return [0]
        seen: dict[int, None] = {}
        for f in self.face_id.tolist():
            seen.setdefault(int(f), None)
        return list(seen)

    def frames(self) -> torch.Tensor:
        """[N] int64 frame of each item: frame_index, else the item's rank within its face."""
        if self.frame_index is not None:
            return self.frame_index.to(torch.int64)
        if self.face_id is None:
            return torch.arange(len(self))
        out = torch.empty(len(self), dtype=torch.int64)
        for f in self.faces():
            idx = (self.face_id == f).nonzero().flatten()
            out[idx] = torch.arange(idx.numel())
        return out

    # ------------------------------------------------------------------ editing helpers
    def select(self, index: Index) -> "Motion":
        """Items `index` (int, slice, list or index tensor) as a new Motion (copies)."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, slice):
            index = range(len(self))[index]
        idx = torch.as_tensor(np.asarray(list(index) if not isinstance(index, (torch.Tensor, np.ndarray))
                                         else index), dtype=torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise InputError(f"motion item index out of range (motion has {len(self)} items).")
        kw = {f.name: (getattr(self, f.name)[idx].clone() if isinstance(getattr(self, f.name), torch.Tensor)
                       else getattr(self, f.name)) for f in fields(self)}
        return Motion(**kw)

    __getitem__ = select

    def for_face(self, face_id: int) -> "Motion":
        """Items of one face, in item order."""
        if self.face_id is None:
            if face_id != 0:
                raise InputError(f"motion has a single face (id 0), not face {face_id}.")
            return self.select(slice(None))
        idx = (self.face_id == face_id).nonzero().flatten()
        if idx.numel() == 0:
            raise InputError(f"motion has no face with id {face_id}; it has faces {self.faces()}.")
        return self.select(idx)

    def with_pose(self, pitch=None, yaw=None, roll=None) -> "Motion":
        """Copy with new degrees (None keeps the current ones) and R rebuilt from them."""
        p, y, r = (cur if a is None else _f32(a).reshape(-1).expand(len(self)).clone()
                   for a, cur in ((pitch, self.pitch), (yaw, self.yaw), (roll, self.roll)))
        return replace(self, pitch=p, yaw=y, roll=r, R=rotation_from_degrees(p, y, r))

    def with_ratios(self, eye_ratio=None, lip_ratio=None) -> "Motion":
        """Copy with eye [N,2] / lip [N,1] ratios set (None keeps the current value)."""
        m = replace(self, eye_ratio=self.eye_ratio if eye_ratio is None else _f32(eye_ratio).reshape(-1, 2),
                    lip_ratio=self.lip_ratio if lip_ratio is None else _f32(lip_ratio).reshape(-1, 1))
        m.validate()
        return m

    @staticmethod
    def concat(motions: Sequence["Motion"]) -> "Motion":
        """Concatenate items. Optional fields stay only if every part has them; fps of the first.
        face_id / frame_index default to 0 / per-part item rank when some parts lack them;
        eye_target / lip_target to "no target" (weight 0). The anchor is kept when every part
        has the same one (equal values); parts with different anchors raise InputError, since
        their frames are relative to different neutrals."""
        if not motions:
            raise InputError("cannot concatenate an empty list of motions.")
        kw = {}
        for f in fields(Motion):
            vals = [getattr(m, f.name) for m in motions]
            if f.name == "fps":
                kw["fps"] = motions[0].fps
            elif f.name == "anchor":
                kw["anchor"] = _common_anchor(vals)
            elif f.name in ("eye_target", "lip_target") and any(v is not None for v in vals):
                kw[f.name] = torch.cat([v if v is not None else torch.zeros(len(m), 2)  # weight 0: none
                                        for v, m in zip(vals, motions)])
            elif f.name in ("face_id", "frame_index") and any(v is not None for v in vals):
                kw[f.name] = torch.cat([v if v is not None else
                                        (torch.zeros(len(m), dtype=torch.int64) if f.name == "face_id"
                                         else m.frames()) for v, m in zip(vals, motions)])
            elif all(v is not None for v in vals):
                kw[f.name] = torch.cat(vals)
            else:
                kw[f.name] = None
        return Motion(**kw)


def _same_values(a: "Motion", b: "Motion") -> bool:
    for f in fields(Motion):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                    and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif isinstance(x, Motion) or isinstance(y, Motion):
            if not (isinstance(x, Motion) and isinstance(y, Motion) and _same_values(x, y)):
                return False
        elif x != y:
            return False
    return True


def _common_anchor(anchors: Sequence[Optional["Motion"]]) -> Optional["Motion"]:
    if all(a is None for a in anchors):
        return None
    first = anchors[0]
    if first is None or any(a is None or (a is not first and not _same_values(a, first)) for a in anchors):
        raise InputError("cannot concatenate motions relative to different anchors (or with and "
                         "without one): their frames are measured from different neutral faces.")
    return first


def neutral_motion(n: int, fps: float = 25.0) -> Motion:
    """A driving motion of `n` neutral frames: R = I, exp = 0, t = 0, scale = 1, degrees 0,
    no kp / ratios, `anchor` = a 1-item neutral motion.

    In relative mode every neutral frame changes nothing, so
    `compose(source, apply_controls(neutral_motion(n, fps), values))` is the source edited by
    the controls frame by frame (frames whose values are all neutral give the source exactly).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"neutral_motion: the number of frames must be a whole number ≥ 1, got {n!r}.")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise InputError(f"neutral_motion: fps must be a positive number, got {fps!r}.")

    def one(k: int, anchor: Optional[Motion]) -> Motion:
        z = torch.zeros(k)
        return Motion(pitch=z, yaw=z.clone(), roll=z.clone(), R=torch.eye(3).expand(k, 3, 3).contiguous(),
                      exp=torch.zeros(k, NUM_KP, 3), t=torch.zeros(k, 3), scale=torch.ones(k, 1),
                      fps=float(fps), anchor=anchor)

    m = one(int(n), one(1, None))
    m.validate("neutral motion")
    return m


def _shaped(x, shape: tuple, name: str) -> Optional[torch.Tensor]:
    if x is None:
        return None
    t = _f32(x)
    if t.numel() != int(np.prod(shape)):
        raise InputError(f"motion field '{name}' has {t.numel()} values, expected shape {shape}.")
    return t.reshape(shape)


def _common(exp, t, scale, kp, eye_ratio, lip_ratio, face_id, frame_index) -> dict:
    exp = _f32(exp)
    n = exp.numel() // (NUM_KP * 3)
    ids = {k: (None if v is None else torch.as_tensor(np.asarray(v)).to(torch.int64).reshape(-1))
           for k, v in (("face_id", face_id), ("frame_index", frame_index))}
    return dict(exp=_shaped(exp, (n, NUM_KP, 3), "exp"), t=_shaped(t, (n, 3), "t"),
                scale=_shaped(scale, (n, 1), "scale"), kp=_shaped(kp, (n, NUM_KP, 3), "kp"),
                eye_ratio=_shaped(eye_ratio, (n, 2), "eye_ratio"),
                lip_ratio=_shaped(lip_ratio, (n, 1), "lip_ratio"), **ids)
