"""Named face controls → offsets of the 21 implicit keypoints, pose changes, scale and
eye / lip open-ratio targets; applying them to a Motion (docs/MOTION.md, "Expression controls").

A control value v moves keypoint components by `gain · v` ("rows": keypoint k, axis a = 0 x,
1 y, 2 z), changes the head pose by `pose · v` degrees, multiplies the scale (move_z) or sets a
retargeting target (eye_open_ratio / lip_open_ratio). Offsets are added to the expression δ,
i.e. in keypoint space after the rotation — x = z·s·(x_c·R_new + δ + Σ offsets) + t — so every
control at its neutral value gives exactly the input, whatever the head pose.

Gains and ranges are those of the reference model's editing panel and of other editors
(restated as facts in the project's spec); per-eye pupils are the gaze rows split by eye.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import InputError
from ..motion import NUM_KP, Motion, rotation_from_degrees

X, Y, Z = 0, 1, 2
AXES = "xyz"


@dataclass(frozen=True)
class Row:
    """`exp[keypoint, axis] += gain · value`."""

    keypoint: int
    axis: int
    gain: float


@dataclass(frozen=True)
class Control:
    """One named control (slider) of the expression editor.

    name: snake_case id (widget name and preset JSON key). minimum / maximum: slider range;
    neutral: the value that changes nothing (0; 1 for move_z; -1 = "leave as is" for ratios).
    kind: "pose" (head rotation), "offset" (keypoint offsets, maybe with a small pose change),
    "scale" (multiplies the whole keypoint set) or "ratio" (an eye / lip open-ratio target
    reached through the retargeting networks; any value < 0 means "leave as is").
    rows: offsets per unit of (value − neutral), for every value — or, when `negative_rows`
    is set, only for values > 0; negative_rows: the rows for values < 0 (eyebrow, gaze x).
    pose: (pitch, yaw, roll) degrees per unit. target: "eye" | "lip" for ratio controls.
    """

    name: str
    label: str
    minimum: float
    maximum: float
    neutral: float = 0.0
    step: float = 0.01
    unit: str = ""
    kind: str = "offset"
    tooltip: str = ""
    rows: tuple = ()
    negative_rows: Optional[tuple] = None
    pose: tuple = (0.0, 0.0, 0.0)
    target: Optional[str] = None

    def rows_for(self, sign: int) -> tuple:
        """Rows acting for values of this sign (+1 or −1)."""
        if sign < 0 and self.negative_rows is not None:
            return self.negative_rows
        return self.rows


def _rows(*spec: tuple) -> tuple:
    """(keypoint, 'x'|'y'|'z', gain), … → Rows, gains of repeated components summed."""
    acc: dict[tuple[int, int], float] = {}
    for k, a, g in spec:
        key = (k, AXES.index(a))
        acc[key] = acc.get(key, 0.0) + g
    return tuple(Row(k, a, g) for (k, a), g in acc.items())


# Rows shared by several controls (the reference panel's numbers).
_PURSE = (("14", "y", 0.001), ("3", "y", -0.0005), ("7", "y", -0.0005), ("17", "z", -0.0005))
_GRIN = (("20", "z", -0.001), ("20", "y", -0.001), ("14", "y", -0.001))
_LIPS_OPEN = (("19", "y", 0.001), ("19", "z", 0.0001), ("17", "y", -0.0001))
_WINK = (("11", "y", 0.001), ("13", "y", -0.0003), ("17", "x", 0.0003), ("17", "y", 0.0003),
         ("3", "y", -0.0003))
# gaze y: the eyeball rows plus a blink of b = −v/2 (11.y −0.001·b, 13.y 0.0003·b, 15.y, 16.y)
_GAZE_Y_LEFT = (("11", "y", -0.001), ("11", "y", 0.0005), ("13", "y", -0.00015))
_GAZE_Y_RIGHT = (("15", "y", -0.001), ("15", "y", 0.0005), ("16", "y", -0.00015))


def _r(*spec: tuple) -> tuple:
    return _rows(*((int(k), a, g) for k, a, g in spec))


def _controls() -> dict[str, Control]:
    c = [
        Control("head_pitch", "Head pitch", -15, 15, step=0.5, unit="deg", kind="pose", pose=(1.0, 0.0, 0.0),
                tooltip="Nod: turn the head up / down by this many degrees (added to the face's own pitch)."),
        Control("head_yaw", "Head yaw", -25, 25, step=0.5, unit="deg", kind="pose", pose=(0.0, 1.0, 0.0),
                tooltip="Turn the head left / right by this many degrees."),
        Control("head_roll", "Head roll", -15, 15, step=0.5, unit="deg", kind="pose", pose=(0.0, 0.0, 1.0),
                tooltip="Tilt the head sideways by this many degrees."),
        Control("move_x", "Move x", -0.19, 0.19, step=0.001, rows=_r(("5", "x", -1.0)),
                tooltip="Shift the face horizontally in the crop (keypoint 5, sign flipped as in the reference)."),
        Control("move_y", "Move y", -0.19, 0.19, step=0.001, rows=_r(("5", "y", 1.0)),
                tooltip="Shift the face vertically in the crop (keypoint 5)."),
        Control("move_z", "Move z (scale)", 0.9, 1.2, neutral=1.0, step=0.01, unit="×", kind="scale",
                tooltip="Scale the whole face (1 = unchanged; >1 closer, <1 farther)."),
        Control("pout", "Pout", -0.09, 0.09, step=0.001, rows=_r(("19", "x", 1.0)),
                tooltip="Push the lips forward / pull them back (keypoint 19 x)."),
        Control("purse", "Purse", -20, 15, step=0.5, rows=_r(*_PURSE),
                tooltip="Purse the lips (positive) or stretch them (negative)."),
        Control("grin", "Grin", 0, 15, step=0.5, rows=_r(*_GRIN),
                tooltip="Grin: pull the mouth corners (keypoints 14 / 20)."),
        Control("lips_open", "Lips close ↔ open", -90, 120, step=1, rows=_r(*_LIPS_OPEN),
                tooltip="Open (positive) or press closed (negative) the lips."),
        Control("smile", "Smile", -0.3, 1.3, step=0.01,
                rows=_r(("20", "y", -0.01), ("14", "y", -0.02), ("17", "y", 0.0065), ("17", "z", 0.003),
                        ("13", "y", -0.00275), ("16", "y", -0.00275), ("3", "y", -0.0035), ("7", "y", -0.0035)),
                tooltip="Smile (negative: a slight frown)."),
        Control("wink", "Wink", 0, 39, step=0.5, rows=_r(*_WINK),
                tooltip="Close one eye (keypoint 11) with a matching cheek and mouth movement."),
        Control("eyebrow", "Eyebrow", -30, 30, step=0.5,
                rows=_r(("1", "y", 0.001), ("2", "y", -0.001)),
                negative_rows=_r(("1", "x", -0.001), ("2", "x", 0.001), ("1", "y", 0.0003), ("2", "y", -0.0003)),
                tooltip="Raise (positive) or knit (negative) the eyebrows (keypoints 1 / 2)."),
        Control("gaze_x", "Gaze horizontal", -30, 30, step=0.5,
                rows=_r(("11", "x", 0.0007), ("15", "x", 0.001)),
                negative_rows=_r(("11", "x", 0.001), ("15", "x", 0.0007)),
                tooltip="Look left / right (both eyeballs, keypoints 11 / 15)."),
        Control("gaze_y", "Gaze vertical", -63, 63, step=0.5, rows=_r(*_GAZE_Y_LEFT, *_GAZE_Y_RIGHT),
                tooltip="Look up / down (both eyeballs, with the lids following)."),
        Control("blink", "Blink", -20, 5, step=0.5,
                rows=_r(("11", "y", -0.001), ("15", "y", -0.001), ("13", "y", 0.0003), ("16", "y", 0.0003),
                        ("1", "y", -0.00025), ("2", "y", 0.00025)),
                tooltip="Close (negative) or widen (positive) both eyes."),
        Control("pupil_left_x", "Pupil 1 horizontal", -15, 15, step=0.5,
                rows=_r(("11", "x", 0.0007)), negative_rows=_r(("11", "x", 0.001)),
                tooltip="One eye only (keypoint 11): look left / right."),
        Control("pupil_left_y", "Pupil 1 vertical", -15, 15, step=0.5, rows=_r(*_GAZE_Y_LEFT),
                tooltip="One eye only (keypoints 11 / 13): look up / down."),
        Control("pupil_right_x", "Pupil 2 horizontal", -15, 15, step=0.5,
                rows=_r(("15", "x", 0.001)), negative_rows=_r(("15", "x", 0.0007)),
                tooltip="The other eye only (keypoint 15): look left / right."),
        Control("pupil_right_y", "Pupil 2 vertical", -15, 15, step=0.5, rows=_r(*_GAZE_Y_RIGHT),
                tooltip="The other eye only (keypoints 15 / 16): look up / down."),
        Control("eee", "Eee", -20, 15, step=0.5, rows=_r(*_GRIN),
                tooltip="An 'eee' mouth shape (wide), negative for the opposite."),
        Control("woo", "Woo", -20, 15, step=0.5, rows=_r(*_PURSE),
                tooltip="A 'woo' mouth shape (rounded), negative for the opposite."),
        Control("aaa", "Aaa", -30, 120, step=1, rows=_r(*_LIPS_OPEN), pose=(-0.05, 0.0, 0.0),
                tooltip="An 'aaa' open mouth with the chin dropping slightly (pitch −0.05° per unit)."),
        Control("wink_tilt", "Wink with head tilt", 0, 25, step=0.5, rows=_r(*_WINK), pose=(0.0, -0.1, -0.1),
                tooltip="Wink while tilting the head (yaw and roll −0.1° per unit)."),
        Control("eye_open_ratio", "Eye open ratio", -1, 0.8, neutral=-1.0, step=0.01, unit="ratio", kind="ratio",
                target="eye",
                tooltip="Target eye openness through the eye-retargeting network (0 closed … 0.8 wide); "
                        "-1 = leave the eyes as they are."),
        Control("lip_open_ratio", "Lip open ratio", -1, 0.8, neutral=-1.0, step=0.01, unit="ratio", kind="ratio",
                target="lip",
                tooltip="Target mouth openness through the lip-retargeting network (0 closed … 0.8 open); "
                        "-1 = leave the mouth as it is."),
    ]
    return {x.name: x for x in c}


#: Every control, in the editor's slider order (frozen once released: new controls go last).
CONTROLS: dict[str, Control] = _controls()

ControlValue = Union[float, int, torch.Tensor, np.ndarray, Sequence[float]]
#: name → a number (every item) or a tensor [N] (one value per item / frame).
ControlValues = Mapping[str, ControlValue]


def neutral_values() -> dict[str, float]:
    """Every control at its neutral value (an all-neutral preset)."""
    return {c.name: float(c.neutral) for c in CONTROLS.values()}


def _as_value(v, where: str, name: str):
    if isinstance(v, bool):
        raise InputError(f"{where}: control '{name}' must be a number, got {v!r}.")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        t = v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(f"{where}: control '{name}' must be a number or one number per frame, "
                         f"got {type(v).__name__}.") from None
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{where}: control '{name}' must hold numbers, got {t.dtype}.")
    if t.ndim == 0:
        return float(t)
    if t.ndim != 1 or t.numel() == 0:
        raise InputError(f"{where}: control '{name}' must be a number or a 1-D list with one value per "
                         f"frame, got shape {tuple(t.shape)}.")
    return t.to(torch.float32).contiguous()


def validate_controls(values: Mapping, where: str = "controls") -> dict[str, Union[float, torch.Tensor]]:
    """Check control values; returns name → float or float32 tensor [N] (copies, same names).

    Raises InputError naming `where`, the control and its range for an unknown name, a value
    that is not a number, not finite or outside [minimum, maximum] (compared in float32, so
    a float32 copy of a bound is accepted).
    """
    if not isinstance(values, Mapping):
        raise InputError(f"{where}: expected a mapping of control names to values, got {type(values).__name__}.")
    out: dict[str, Union[float, torch.Tensor]] = {}
    for name, raw in values.items():
        c = CONTROLS.get(name) if isinstance(name, str) else None
        if c is None:
            raise InputError(f"{where}: unknown control {name!r}; known controls: {', '.join(CONTROLS)}.")
        v = _as_value(raw, where, name)
        arr = torch.tensor([v], dtype=torch.float64) if isinstance(v, float) else v.double()
        bad = ~torch.isfinite(arr)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            at = "" if isinstance(v, float) else f" at frame {i}"
            raise InputError(f"{where}: control '{name}' must be a finite number{at}, got {float(arr[i])}.")
        a32 = arr.float()
        lo, hi = np.float32(c.minimum), np.float32(c.maximum)
        out_of = (a32 < float(lo)) | (a32 > float(hi))
        if bool(out_of.any()):
            i = int(out_of.nonzero()[0])
            at = "" if isinstance(v, float) else f" at frame {i}"
            unit = f" {c.unit}" if c.unit else ""
            raise InputError(f"{where}: control '{name}' must be between {c.minimum:g} and {c.maximum:g}{unit}"
                             f"{at}, got {float(arr[i]):g}.")
        out[name] = v
    return out


def _per_item(v: Union[float, torch.Tensor], n: int, name: str) -> torch.Tensor:
    """A validated value → float64 [n]."""
    if isinstance(v, float):
        return torch.full((n,), v, dtype=torch.float64)
    if v.numel() != n:
        raise InputError(f"control '{name}' has {v.numel()} values; give one number or one per item ({n}).")
    return v.double()


def _offsets64(amounts: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
    """Σ rows · amount in float64 [n,21,3]; amounts = value − neutral per item [n]."""
    off = torch.zeros(n, NUM_KP, 3, dtype=torch.float64)
    for name, a in amounts.items():
        c = CONTROLS[name]
        if c.kind == "ratio" or c.kind == "scale":
            continue
        for sign, sel in ((1, a > 0), (-1, a < 0)):
            if not bool(sel.any()):
                continue
            for r in c.rows_for(sign):
                off[:, r.keypoint, r.axis] += torch.where(sel, a * r.gain, torch.zeros((), dtype=torch.float64))
    return off


def expression_offsets(values: ControlValues, n: int) -> torch.Tensor:
    """Keypoint offsets [n,21,3] float32 of the offset controls in `values` (pose, scale and
    ratio controls contribute nothing here): Σ over controls and rows of gain·v, summed in
    float64 and rounded once to float32. Values are validated (`validate_controls`)."""
    vals = validate_controls(values, "controls")
    amounts = {k: _per_item(v, n, k) - CONTROLS[k].neutral for k, v in vals.items()}
    return _offsets64(amounts, n).float()


def pose_deltas(values: ControlValues, n: int) -> torch.Tensor:
    """(Δpitch, Δyaw, Δroll) degrees [n,3] float32 of the controls in `values`."""
    vals = validate_controls(values, "controls")
    return _pose64({k: _per_item(v, n, k) - CONTROLS[k].neutral for k, v in vals.items()}, n).float()


def _pose64(amounts: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
    d = torch.zeros(n, 3, dtype=torch.float64)
    for name, a in amounts.items():
        for j, g in enumerate(CONTROLS[name].pose):
            if g:
                d[:, j] += a * g
    return d


def frame_weights(frames: torch.Tensor, frame_range: Optional[tuple] = None, fade_in: int = 0,
                  fade_out: int = 0) -> torch.Tensor:
    """Weight in 0..1 [N] float64 of each item (by its frame number) for a frame range.

    frame_range = (start, end): frames start ≤ f < end are edited (None: every frame, the
    range then spans the motion's first to last frame). Inside the range the weight ramps up
    over the first `fade_in` frames, w = (f − start + 1) / (fade_in + 1), and down over the
    last `fade_out` frames, w = (end − f) / (fade_out + 1); 1 in between, 0 outside.
    """
    for name, v in (("fade_in", fade_in), ("fade_out", fade_out)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be a whole number of frames ≥ 0, got {v!r}.")
    f = frames.to(torch.float64).reshape(-1)
    if frame_range is None:
        start, end = (int(f.min()), int(f.max()) + 1) if f.numel() else (0, 0)
    else:
        try:
            start, end = (int(x) for x in frame_range)
            ok = all(not isinstance(x, bool) and float(x).is_integer() for x in frame_range)
        except (TypeError, ValueError):
            ok = False
        if not ok or start < 0 or end <= start:
            raise InputError(f"frame_range must be (start, end) whole frame numbers with 0 ≤ start < end, "
                             f"got {frame_range!r}.")
    w = torch.ones_like(f)
    if fade_in:
        w = torch.minimum(w, (f - start + 1) / (fade_in + 1))
    if fade_out:
        w = torch.minimum(w, (end - f) / (fade_out + 1))
    return torch.where((f >= start) & (f < end), w, torch.zeros_like(w))


def apply_controls(motion: Motion, values: ControlValues, strength: float = 1.0,
                   frame_range: Optional[tuple] = None, fade_in: int = 0, fade_out: int = 0) -> Motion:
    """A new Motion with the controls applied to every item (a photo's single item, or every
    frame of a driving / source motion).

    Per item the effective amount is (v − neutral)·strength·w, w from `frame_weights`:
    pose controls add degrees to pitch / yaw / roll and R is rebuilt from the summed angles
    (items whose three deltas are 0 keep their R, degrees bit for bit); offset controls add to
    exp; move_z multiplies scale by 1 + (z − 1)·strength·w; ratio controls (value ≥ 0) set
    eye_target / lip_target = (value, strength·w) for items with w > 0 (others keep theirs).
    Fields of items an edit does not touch are the input's, bit for bit; with every control
    neutral the result equals the input in every tensor. The anchor is kept.
    """
    vals = validate_controls(values, "controls")
    motion.validate("motion to edit")
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(float(strength)) and strength >= 0):
        raise InputError(f"strength must be a finite number ≥ 0, got {strength!r}.")
    n = len(motion)
    w = frame_weights(motion.frames(), frame_range, fade_in, fade_out) * float(strength)
    amounts, ratios = {}, {}
    for name, v in vals.items():
        c, per = CONTROLS[name], _per_item(v, n, name)
        if c.kind == "ratio":
            ratios[c.target] = per
        else:
            amounts[name] = (per - c.neutral) * w

    out = {}
    dp = _pose64(amounts, n)
    moved = (dp != 0).any(dim=1)
    if bool(moved.any()):
        idx = moved.nonzero().flatten()
        new = [(cur.double()[idx] + dp[idx, j]).float() for j, cur in
               enumerate((motion.pitch, motion.yaw, motion.roll))]
        R = motion.R.clone()
        R[idx] = rotation_from_degrees(*new)
        out["R"] = R
        for j, key in enumerate(("pitch", "yaw", "roll")):
            t = getattr(motion, key).clone()
            t[idx] = new[j]
            out[key] = t
    off = _offsets64(amounts, n).float()
    if bool((off != 0).any()):
        out["exp"] = torch.where(off != 0, motion.exp + off, motion.exp)
    if "move_z" in amounts:
        z = (1.0 + amounts["move_z"]).float().reshape(n, 1)
        out["scale"] = torch.where(z != 1, motion.scale * z, motion.scale)
    for kind, target in ratios.items():
        field = f"{kind}_target"
        on = (target >= 0) & (w != 0)
        if not bool(on.any()):
            continue
        cur = getattr(motion, field)
        cur = torch.zeros(n, 2) if cur is None else cur
        new = torch.stack([target.float(), w.float()], 1)
        out[field] = torch.where(on[:, None], new, cur)
    if not out:
        return replace(motion)
    m = replace(motion, **out)
    m.validate("edited motion")
    return m


def edited_keypoints(source: Motion, values: ControlValues, mlps=None, stitching: bool = True,
                     strength: float = 1.0) -> torch.Tensor:
    """What the editor renders: the source's keypoints edited by `values`, [N,21,3] float32.

    x = z·s·(x_c·R_new + δ + Δ) + t (`apply_controls`, then the keypoint transform), then for
    items with an eye / lip ratio target + weight × the retargeting delta
    MLP([x_s, source ratios, target]), then stitching(x_s, x) when `stitching` and `mlps` is
    given. source must carry kp (a motion extracted from the picture). All controls neutral
    and stitching off → exactly `source.keypoints()`.
    """
    from ..compose import ratio_target_deltas, stitch_keypoints

    if source.kp is None:
        raise InputError("the motion to edit has no canonical keypoints (kp): use a motion extracted from "
                         "the source picture, not a motion template.")
    edited = apply_controls(source, values, strength=strength)
    x_s = source.keypoints()
    x = edited.keypoints()
    x = ratio_target_deltas(x, x_s, source, edited, mlps)
    if stitching and mlps is not None:
        x = stitch_keypoints(mlps, x_s, x)
    return x
