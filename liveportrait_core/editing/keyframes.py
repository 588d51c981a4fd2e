"""Keyframe sequences: expression controls on a timeline → a driving Motion (no video needed).

A sequence is a list of keys (a time in seconds and values for any of the controls in
`controls.CONTROLS`, plus the easing *into* the key), a frame rate, a duration, what happens
after the last key (hold / loop / ping-pong), an optional seeded automatic blink and a global
strength. docs/MOTION.md, "Keyframes", describes the JSON format and the rules:

* Frames: frame i is at t = i/fps. Length: `duration` seconds → round(duration·fps) frames
  (at least 1); None → up to and including the last key, floor(L·fps) + 1 frames (L = the last
  key's time).
* Each control is a track of its own: only the keys that name it. Before its first key a
  track starts from the control's neutral value at t = 0 (the source face) and eases into the
  first key with that key's easing; after its last key it holds. Curves: `easing.py`.
  Ratio controls (eye / lip open ratio, where a value < 0 means "leave as is") jump at a key
  instead of blending between "leave as is" and a ratio.
* After the last key (time L), frame times map back into [0, L]: "hold" keeps L; "loop" wraps
  t to t mod L (the frame at L shows the first key again: make the last key equal the first for
  a seamless loop); "ping-pong" goes back and forth (0 → L → 0 …).
* Automatic blink (blink.interval > 0): blink onsets are a seeded renewal process on the output
  timeline (not looped): gaps of interval/2 + an exponential with mean interval/2 (mean gap =
  interval, never shorter than half of it), the first onset one gap after t = 0. Each blink
  closes the eyes over the first 40 % of `blink.duration` and opens them over the rest
  (smoothstep ramps on whole frames; the fully closed frame is always rendered). On the
  `blink` control it is combined with keyed blink values by `blink.combine`:
  "max" (default): from the keyed value towards the more closed of (keyed, amount) — a keyed
  closed eye is not closed further; "sum": keyed + the automatic value, clamped to the
  control's range.
* strength scales every control's distance from its neutral value (and the weight of ratio
  targets); it is applied by `apply_controls`, so `sequence_values` returns unscaled values.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import torch

from ..errors import InputError
from ..motion import Motion, neutral_motion
from .controls import CONTROLS, apply_controls, edit_driving, validate_controls
from .easing import EASINGS, interpolate
from ..paths import write_bytes_atomic

FORMAT = "liveportrait-keyframes"
VERSION = 1
SEQUENCE_EXTENSION = ".keyframes.json"
LOOP_MODES = ("hold", "loop", "ping-pong")
BLINK_COMBINE = ("max", "sum")
MAX_FRAMES = 100_000  # ~1 h at 25 fps: a typo in a duration must not allocate gigabytes
MAX_KEYS = 10_000
MAX_FPS = 240.0
MAX_JSON_BYTES = 4 * 1024 * 1024
BLINK_CLOSE_SHARE = 0.4  # part of a blink spent closing (the rest opens)


@dataclass
class Key:
    """One key: at `time` seconds the named controls reach `values` (name → number), coming
    from the previous key of each control with `easing` (one of `easing.EASINGS`)."""

    time: float
    values: dict = field(default_factory=dict)
    easing: str = "linear"


@dataclass
class BlinkOptions:
    """Automatic blink. interval: mean seconds between blink onsets (0 = off); duration:
    seconds of one blink (≤ interval/2); seed: any whole number ≥ 0 (same seed, same blinks);
    amount: the `blink` control's value when fully closed (default its minimum, fully closed);
    combine: "max" or "sum" with keyed blink values (module doc)."""

    interval: float = 0.0
    duration: float = 0.2
    seed: int = 0
    amount: float = CONTROLS["blink"].minimum
    combine: str = "max"


@dataclass
class KeyframeSequence:
    """Keys (increasing times) + fps, duration (None = until the last key), loop ("hold" |
    "loop" | "ping-pong"), automatic blink and a global strength ≥ 0 (module doc)."""

    keys: list = field(default_factory=list)
    fps: float = 25.0
    duration: Optional[float] = None
    loop: str = "hold"
    blink: BlinkOptions = field(default_factory=BlinkOptions)
    strength: float = 1.0

    def validate(self, where: str = "keyframe sequence") -> None:
        validate_sequence(self, where)


# ------------------------------------------------------------------------------ validation


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number, got {v!r}.")
    f = float(v)
    if not math.isfinite(f):
        raise InputError(f"{what} must be a finite number, got {f}.")
    return f


def _whole(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)) \
            or not math.isfinite(float(v)) or not float(v).is_integer():
        raise InputError(f"{what} must be a whole number, got {v!r}.")
    return int(v)


def validate_sequence(seq: KeyframeSequence, where: str = "keyframe sequence") -> None:
    """Raise InputError (naming `where`, the key index and the control) unless `seq` is usable:
    fps in (0, 240], duration None or > 0, loop / easing / combine names known, key times
    finite, ≥ 0 and strictly increasing, key values known controls within range, strength ≥ 0,
    blink interval ≥ 0 (0 = off) with 0 < duration ≤ interval/2, at most 100000 frames."""
    if not isinstance(seq, KeyframeSequence):
        raise InputError(f"{where}: expected a KeyframeSequence, got {type(seq).__name__}.")
    fps = _number(seq.fps, f"{where}: fps")
    if not 0 < fps <= MAX_FPS:
        raise InputError(f"{where}: fps must be in (0, {MAX_FPS:g}], got {fps:g}.")
    if seq.duration is not None and _number(seq.duration, f"{where}: duration") <= 0:
        raise InputError(f"{where}: duration must be > 0 seconds (or null = until the last key), got {seq.duration}.")
    if seq.loop not in LOOP_MODES:
        raise InputError(f"{where}: loop must be one of {list(LOOP_MODES)}, got {seq.loop!r}.")
    s = _number(seq.strength, f"{where}: strength")
    if s < 0:
        raise InputError(f"{where}: strength must be ≥ 0, got {s:g}.")
    _validate_blink(seq.blink, where)
    if not isinstance(seq.keys, (list, tuple)):
        raise InputError(f"{where}: keys must be a list, got {type(seq.keys).__name__}.")
    if len(seq.keys) > MAX_KEYS:
        raise InputError(f"{where}: {len(seq.keys)} keys; at most {MAX_KEYS} are allowed.")
    prev = None
    for i, k in enumerate(seq.keys):
        if not isinstance(k, Key):
            raise InputError(f"{where}: key {i} must be a Key, got {type(k).__name__}.")
        t = _number(k.time, f"{where}: key {i}: time")
        if t < 0:
            raise InputError(f"{where}: key {i}: time must be ≥ 0 seconds, got {t:g}.")
        if prev is not None and t <= prev:
            raise InputError(f"{where}: key {i} (time {t:g} s) is not after key {i - 1} (time {prev:g} s); "
                             "keys must be in strictly increasing time order (merge keys at the same time).")
        prev = t
        if k.easing not in EASINGS:
            raise InputError(f"{where}: key {i} (time {t:g} s): unknown easing {k.easing!r}; "
                             f"use one of {list(EASINGS)}.")
        if not isinstance(k.values, Mapping):
            raise InputError(f"{where}: key {i} (time {t:g} s): values must map control names to numbers.")
        checked = validate_controls(k.values, f"{where}: key {i} (time {t:g} s)")
        for name, v in checked.items():
            if not isinstance(v, float):
                raise InputError(f"{where}: key {i} (time {t:g} s): control '{name}' must be one number.")
    n = _frames_unchecked(seq, fps)
    if n > MAX_FRAMES:
        raise InputError(f"{where}: {n} frames at {fps:g} fps; at most {MAX_FRAMES} are allowed "
                         "(check the duration and the key times).")


def _validate_blink(b: BlinkOptions, where: str) -> None:
    if not isinstance(b, BlinkOptions):
        raise InputError(f"{where}: blink must be BlinkOptions, got {type(b).__name__}.")
    interval = _number(b.interval, f"{where}: blink interval")
    duration = _number(b.duration, f"{where}: blink duration")
    seed = _whole(b.seed, f"{where}: blink seed")
    if interval < 0:
        raise InputError(f"{where}: blink interval must be ≥ 0 seconds (0 = no automatic blink), got {interval:g}.")
    if seed < 0 or seed >= 2 ** 63:
        raise InputError(f"{where}: blink seed must be a whole number in 0 … 2^63−1, got {seed}.")
    if b.combine not in BLINK_COMBINE:
        raise InputError(f"{where}: blink combine must be one of {list(BLINK_COMBINE)}, got {b.combine!r}.")
    c = CONTROLS["blink"]
    amount = _number(b.amount, f"{where}: blink amount")
    if not c.minimum <= amount <= c.maximum:
        raise InputError(f"{where}: blink amount must be between {c.minimum:g} and {c.maximum:g} "
                         f"(the blink control's range; {c.minimum:g} = closed), got {amount:g}.")
    if interval > 0 and not 0 < duration <= interval / 2:
        raise InputError(f"{where}: blink duration must be > 0 and at most half the mean interval "
                         f"({interval / 2:g} s), got {duration:g} s.")


# ------------------------------------------------------------------------------ timeline


def sequence_length(seq: KeyframeSequence) -> float:
    """Time L of the last key in seconds (0 without keys)."""
    return float(seq.keys[-1].time) if seq.keys else 0.0


def _frames_unchecked(seq: KeyframeSequence, fps: float) -> int:
    if seq.duration is None:
        return int(math.floor(sequence_length(seq) * fps + 1e-9)) + 1
    return max(1, int(round(float(seq.duration) * fps)))


def frame_count(seq: KeyframeSequence, fps: Optional[float] = None) -> int:
    """Frames of the sequence at `fps` (default seq.fps): round(duration·fps) (≥ 1), or with
    duration None floor(L·fps) + 1 (every frame up to and including the last key)."""
    return _frames_unchecked(seq, float(seq.fps if fps is None else fps))


def frame_times(n: int, fps: float, length: float, loop: str) -> torch.Tensor:
    """Sequence time `[n]` float64 of output frames 0..n−1 (frame i at i/fps) mapped into
    [0, length] by `loop` ("hold" | "loop" | "ping-pong"; module doc). When length·fps is a
    whole number the mapping is done on frame numbers, so mapped times are exact frame times."""
    i = torch.arange(n, dtype=torch.float64)
    if length <= 0:
        return torch.zeros(n, dtype=torch.float64)
    p = length * fps
    whole = abs(p - round(p)) < 1e-9 and round(p) >= 1
    if loop == "hold":
        return torch.minimum(i / fps, torch.tensor(length, dtype=torch.float64))
    if whole:
        P = int(round(p))
        k = torch.arange(n, dtype=torch.int64)
        if loop == "loop":
            m = k % P
        else:
            m = k % (2 * P)
            m = torch.where(m <= P, m, 2 * P - m)
        return m.to(torch.float64) / fps
    t = i / fps
    if loop == "loop":
        return t - length * torch.floor(t / length)
    m = t - 2 * length * torch.floor(t / (2 * length))
    return torch.where(m <= length, m, 2 * length - m)


def blink_onsets(blink: BlinkOptions, n: int, fps: float) -> torch.Tensor:
    """Frames `[B]` int64 where automatic blinks start within n frames (empty when off).

    Gaps are interval/2 + Exp(mean interval/2) seconds drawn from numpy's PCG64 generator
    seeded with `blink.seed`; onset times are rounded to the nearest frame."""
    if blink.interval <= 0:
        return torch.zeros(0, dtype=torch.int64)
    rng = np.random.default_rng(int(blink.seed))
    half = blink.interval / 2
    end = n / fps
    onsets, t = [], 0.0
    while True:
        t += half - half * math.log(1.0 - float(rng.random()))
        if t >= end:
            break
        onsets.append(int(round(t * fps)))
    out = torch.tensor(onsets, dtype=torch.int64)
    return out[out < n]


def blink_curve(blink: BlinkOptions, n: int, fps: float) -> torch.Tensor:
    """Closure `[n]` float64 in 0..1 of the automatic blink per frame (1 = fully closed)."""
    w = torch.zeros(n, dtype=torch.float64)
    onsets = blink_onsets(blink, n, fps)
    if onsets.numel() == 0:
        return w
    frames = max(2, int(round(blink.duration * fps)))
    close = max(1, int(round(frames * BLINK_CLOSE_SHARE)))
    open_ = max(1, frames - close)
    d = torch.arange(close + open_, dtype=torch.float64)
    up = d / close
    down = (close + open_ - d) / open_
    u = torch.where(d <= close, up, down).clamp(0, 1)
    shape = u * u * (3 - 2 * u)  # smoothstep ramps: 0 at the onset, 1 at `close`, back to 0
    for o in onsets.tolist():
        hi = min(n, o + shape.numel())
        w[o:hi] = torch.maximum(w[o:hi], shape[: hi - o])
    return w


def _track(seq: KeyframeSequence, name: str, times: torch.Tensor) -> torch.Tensor:
    """Values `[N]` float64 of one control at sequence times `times`."""
    c = CONTROLS[name]
    kt, kv, ke = [], [], []
    for k in seq.keys:
        if name in k.values:
            kt.append(float(k.time))
            kv.append(float(k.values[name]))
            ke.append(k.easing)
    if kt[0] > 0:  # start from the neutral face at t = 0
        kt.insert(0, 0.0)
        kv.insert(0, float(c.neutral))
        ke.insert(0, "linear")
    if c.kind == "ratio":  # no blend between "leave as is" (< 0) and a ratio target
        ke = [e if i == 0 or (kv[i - 1] >= 0 and kv[i] >= 0) else "step" for i, e in enumerate(ke)]
    return interpolate(torch.tensor(kt, dtype=torch.float64), torch.tensor(kv, dtype=torch.float64), ke, times)


def sequence_values(seq: KeyframeSequence, n_frames: Optional[int] = None,
                    fps: Optional[float] = None) -> dict[str, torch.Tensor]:
    """Per-frame control values: {control name: `[N]` float32} for every control named by a key
    (and `blink` when the automatic blink is on), in `CONTROLS` order.

    n_frames: frames to produce (default `frame_count(seq, fps)`); fps: frame rate of those
    frames (default seq.fps; key times are seconds, so another rate keeps the timing).
    Strength is not applied here (see `sequence_motion`). Validates `seq` first.
    """
    validate_sequence(seq)
    fps = _number(seq.fps if fps is None else fps, "keyframe sequence: fps")
    if not 0 < fps <= MAX_FPS:
        raise InputError(f"keyframe sequence: fps must be in (0, {MAX_FPS:g}], got {fps:g}.")
    n = frame_count(seq, fps) if n_frames is None else _whole(n_frames, "keyframe sequence: number of frames")
    if not 1 <= n <= MAX_FRAMES:
        raise InputError(f"keyframe sequence: number of frames must be in 1 … {MAX_FRAMES}, got {n}.")
    times = frame_times(n, fps, sequence_length(seq), seq.loop)
    named = {name for k in seq.keys for name in k.values}
    out: dict[str, torch.Tensor] = {}
    for name in CONTROLS:
        if name in named:
            out[name] = _track(seq, name, times)
    if seq.blink.interval > 0:
        c = CONTROLS["blink"]
        b = blink_curve(seq.blink, n, fps)
        keyed = out.get("blink", torch.full((n,), float(c.neutral), dtype=torch.float64))
        amount = float(seq.blink.amount)
        if seq.blink.combine == "sum":
            v = (keyed + b * (amount - c.neutral)).clamp(c.minimum, c.maximum)
        else:  # towards the more closed (further from neutral on the amount's side) of the two
            target = torch.minimum(keyed, torch.tensor(amount, dtype=torch.float64)) if amount <= c.neutral \
                else torch.maximum(keyed, torch.tensor(amount, dtype=torch.float64))
            v = keyed + b * (target - keyed)
        out["blink"] = v
        out = {name: out[name] for name in CONTROLS if name in out}
    return {name: v.float() for name, v in out.items()}


def frame_values(seq: KeyframeSequence, frame: int, fps: Optional[float] = None) -> dict[str, float]:
    """The control values of one frame (e.g. under a timeline's playhead), equal to
    `sequence_values(seq)[name][frame]` for every name (strength not applied; pass
    seq.strength to `edited_keypoints` / `apply_controls`). Frames past the sequence's end
    follow the loop mode (and the automatic blink)."""
    f = _whole(frame, "keyframe sequence: frame")
    if not 0 <= f < MAX_FRAMES:
        raise InputError(f"keyframe sequence: frame must be in 0 … {MAX_FRAMES - 1}, got {f}.")
    return {name: float(v[f]) for name, v in sequence_values(seq, n_frames=f + 1, fps=fps).items()}


def sequence_motion(seq: KeyframeSequence) -> Motion:
    """The sequence as a driving Motion: `frame_count(seq)` items at seq.fps,
    `apply_controls(neutral_motion(N, fps), sequence_values(seq), strength=seq.strength)`.
    Its anchor is the neutral face, so in relative mode (Retarget's default) a frame whose
    values are all neutral renders the source exactly."""
    values = sequence_values(seq)
    n = frame_count(seq)
    return apply_controls(neutral_motion(n, float(seq.fps)), values, strength=float(seq.strength))


def apply_sequence(motion: Motion, seq: KeyframeSequence, frame_range: Optional[tuple] = None,
                   fade_in: int = 0, fade_out: int = 0, anchor_frame: Optional[int] = None) -> Motion:
    """The sequence applied on top of an existing motion (a driving video's or a source
    video's; one or several faces), over `frame_range` = (start, end) motion frames
    (None = all) with linear fades of `fade_in` / `fade_out` frames inside the range
    (`controls.frame_weights`).

    The sequence's time 0 is the range's first frame; its keys (seconds) are timed at the
    motion's fps; the range's length replaces seq.duration (past the last key the loop mode
    applies). Every face of a frame gets the same values. Returns a new Motion.

    A single-face motion goes through `controls.edit_driving`, so as a driving motion in
    relative mode it stays measured from its *unedited* anchor (its own, else frame
    `anchor_frame`, default 0) and an edit covering that frame is not cancelled; a motion of
    several faces (a source motion) through `apply_controls`.
    """
    if not isinstance(motion, Motion):
        raise InputError(f"apply_sequence: expected a Motion, got {type(motion).__name__}.")
    motion.validate("motion to edit")
    validate_sequence(seq)
    frames = motion.frames()
    if frame_range is None:
        start, end = int(frames.min()), int(frames.max()) + 1
    else:
        try:
            start, end = (_whole(x, "frame_range") for x in frame_range)
        except (TypeError, ValueError):
            raise InputError(f"frame_range must be (start, end) frame numbers, got {frame_range!r}.") from None
        if start < 0 or end <= start:
            raise InputError(f"frame_range must be (start, end) with 0 ≤ start < end, got {frame_range!r}.")
    n = min(end - start, MAX_FRAMES)
    values = sequence_values(seq, n_frames=n, fps=float(motion.fps))
    j = (frames - start).clamp(0, n - 1)
    per_item = {name: v[j] for name, v in values.items()}
    if len(motion.faces()) > 1:  # a source motion (group photo / video): no driving anchor
        return apply_controls(motion, per_item, strength=float(seq.strength), frame_range=frame_range,
                              fade_in=fade_in, fade_out=fade_out)
    return edit_driving(motion, per_item, float(seq.strength), frame_range, fade_in, fade_out,
                        anchor_frame=anchor_frame)


# ------------------------------------------------------------------------------ JSON


_TOP_FIELDS = ("format", "version", "fps", "duration", "loop", "blink", "strength", "keys")
_KEY_FIELDS = ("time", "frame", "easing", "values")
_BLINK_FIELDS = ("interval", "duration", "seed", "amount", "combine")


def sequence_to_dict(seq: KeyframeSequence) -> dict:
    """The JSON object of a valid sequence (times in seconds, values in `CONTROLS` order)."""
    validate_sequence(seq)
    b = seq.blink
    return {
        "format": FORMAT, "version": VERSION, "fps": float(seq.fps),
        "duration": None if seq.duration is None else float(seq.duration),
        "loop": seq.loop,
        "blink": {"interval": float(b.interval), "duration": float(b.duration), "seed": int(b.seed),
                  "amount": float(b.amount), "combine": b.combine},
        "strength": float(seq.strength),
        "keys": [{"time": float(k.time), "easing": k.easing,
                  "values": {n: float(k.values[n]) for n in CONTROLS if n in k.values}} for k in seq.keys],
    }


def sequence_to_json(seq: KeyframeSequence) -> str:
    """`sequence_to_dict` as indented JSON text (no NaN / Infinity)."""
    return json.dumps(sequence_to_dict(seq), indent=1, allow_nan=False) + "\n"


def _unknown(obj: Mapping, allowed: tuple, where: str) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise InputError(f"{where}: unknown field {extra[0]!r}; allowed fields: {', '.join(allowed)}.")


def sequence_from_dict(data: Any, where: str = "keyframe sequence") -> KeyframeSequence:
    """A validated KeyframeSequence from its JSON object (module doc / docs/MOTION.md).

    `format` and `version` may be omitted (hand-written files); any other format, a newer
    version, unknown fields, keys out of order, negative or non-finite times, unknown controls
    and out-of-range or non-finite values raise InputError naming `where` and the key.
    A key gives `time` (seconds) or `frame` (a whole frame number at the sequence's fps)."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a JSON object with \"keys\", got {type(data).__name__}.")
    if "format" not in data and "keys" not in data:
        raise InputError(f"{where}: not a keyframe sequence (it has neither \"format\": \"{FORMAT}\" "
                         "nor \"keys\").")
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        hint = " (that is an expression preset: apply it as an expression, e.g. the CLI's --expression)" if fmt == "liveportrait-expression" else ""
        raise InputError(f"{where}: not a keyframe sequence: format is {fmt!r}, expected {FORMAT!r}{hint}.")
    version = data.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputError(f"{where}: version must be a whole number ≥ 1, got {version!r}.")
    if version > VERSION:
        raise InputError(f"{where}: version {version} is newer than this pack understands ({VERSION}); "
                         "update the pack.")
    _unknown(data, _TOP_FIELDS, where)
    fps = _number(data.get("fps", 25.0), f"{where}: fps")
    blink_data = data.get("blink")
    if blink_data is None or blink_data is False:
        blink = BlinkOptions()
    elif isinstance(blink_data, Mapping):
        _unknown(blink_data, _BLINK_FIELDS, f"{where}: blink")
        d = BlinkOptions()
        blink = BlinkOptions(interval=blink_data.get("interval", d.interval),
                             duration=blink_data.get("duration", d.duration),
                             seed=blink_data.get("seed", d.seed), amount=blink_data.get("amount", d.amount),
                             combine=blink_data.get("combine", d.combine))
    else:
        raise InputError(f"{where}: blink must be an object like {{\"interval\": 4, \"duration\": 0.2}} or null.")
    keys_data = data.get("keys", [])
    if not isinstance(keys_data, list):
        raise InputError(f"{where}: keys must be a list of {{\"time\", \"values\"}} objects.")
    if len(keys_data) > MAX_KEYS:
        raise InputError(f"{where}: {len(keys_data)} keys; at most {MAX_KEYS} are allowed.")
    keys = []
    for i, kd in enumerate(keys_data):
        if not isinstance(kd, Mapping):
            raise InputError(f"{where}: key {i} must be an object with \"time\" and \"values\".")
        _unknown(kd, _KEY_FIELDS, f"{where}: key {i}")
        if ("time" in kd) == ("frame" in kd):
            raise InputError(f"{where}: key {i} needs exactly one of \"time\" (seconds) or \"frame\".")
        if "frame" in kd:
            frame = _whole(kd["frame"], f"{where}: key {i}: frame")
            if frame < 0:
                raise InputError(f"{where}: key {i}: frame must be ≥ 0, got {frame}.")
            if not 0 < fps <= MAX_FPS:
                raise InputError(f"{where}: fps must be in (0, {MAX_FPS:g}], got {fps:g}.")
            time = frame / fps
        else:
            time = _number(kd["time"], f"{where}: key {i}: time")
        values = kd.get("values", {})
        if not isinstance(values, Mapping):
            raise InputError(f"{where}: key {i}: values must be an object of control names to numbers.")
        keys.append(Key(time=time, values=dict(values), easing=kd.get("easing", "linear")))
    seq = KeyframeSequence(keys=keys, fps=fps, duration=data.get("duration"), loop=data.get("loop", "hold"),
                           blink=blink, strength=data.get("strength", 1.0))
    validate_sequence(seq, where)
    # store plain floats (a JSON int 1 and 1.0 are the same value)
    for k in seq.keys:
        k.values = {n: float(k.values[n]) for n in CONTROLS if n in k.values}
        k.time = float(k.time)
    seq.fps, seq.strength = float(seq.fps), float(seq.strength)
    seq.duration = None if seq.duration is None else float(seq.duration)
    b = seq.blink
    b.interval, b.duration, b.seed, b.amount = float(b.interval), float(b.duration), int(b.seed), float(b.amount)
    return seq


def sequence_from_json(text: str, where: str = "keyframe sequence") -> KeyframeSequence:
    """Parse JSON text (NaN / Infinity literals are reported as such, naming the key)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{where}: not UTF-8 text; a keyframe sequence is a JSON file.") from None
    if not isinstance(text, str):
        raise InputError(f"{where}: expected JSON text, got {type(text).__name__}.")
    if len(text) > MAX_JSON_BYTES:
        raise InputError(f"{where}: {len(text)} characters; a keyframe sequence may have at most {MAX_JSON_BYTES}.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply.") from None
    return sequence_from_dict(data, where)


def load_sequence(path) -> KeyframeSequence:
    """Read a sequence file (e.g. `*.keyframes.json`); InputError naming the file otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"keyframe sequence not found: '{path}'. Check the path.")
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise InputError(f"keyframe sequence '{path}' is larger than {MAX_JSON_BYTES // (1024 * 1024)} MB; "
                         "it cannot be a sequence.")
    with open(path, "rb") as f:
        return sequence_from_json(f.read(), f"keyframe sequence '{path}'")


def save_sequence(seq: KeyframeSequence, path) -> str:
    """Write `seq` as JSON to `path` atomically (a temporary file in the same folder, then a
    rename: an existing file is only replaced by a complete one). Returns `path`."""
    path = os.fspath(path)
    text = sequence_to_json(seq)  # validates before anything is written
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"cannot save the keyframe sequence: folder '{folder}' does not exist.")
    return write_bytes_atomic(path, text.encode("utf-8"))


def is_sequence_path(path: str) -> bool:
    """True for a file name ending in `.keyframes.json` (the CLI's driving-input detection)."""
    return os.fspath(path).lower().endswith(SEQUENCE_EXTENSION)


def apply_expression(motion: Motion, values, strength: float = 1.0, frame_range: Optional[tuple] = None,
                     fade_in: int = 0, fade_out: int = 0) -> Motion:
    """Expression controls on top of an existing motion, the way `apply_sequence` applies a
    sequence: one face (a driving motion) through `controls.edit_driving`, so relative
    composition keeps the edit; several faces (a source motion) through `apply_controls`."""
    from .controls import apply_controls, edit_driving

    edit = edit_driving if len(motion.faces()) == 1 else apply_controls
    return edit(motion, values, strength=strength, frame_range=frame_range, fade_in=fade_in, fade_out=fade_out)
