"""Audio-reactive controls: a loudness envelope per video frame, mapped onto expression controls.

`loudness_envelope` turns a waveform into one value in 0..1 per frame:

1. mono mix: the mean over channels (of the first clip of a batch);
2. level per frame: the RMS of the samples of frame i's window `[i/fps, (i+1)/fps)` — the sound
   *during* the frame, so a sound starting inside frame i shows at frame i (samples past the end
   of the audio count as silence);
3. attack / release smoothing of the level: a one-pole follower per frame,
   `y_i = y_{i−1} + (1 − a)·(x_i − y_{i−1})` with `a = exp(−1/(fps·τ))`, τ = attack_ms when the
   level rises and release_ms when it falls (0 ms = follow at once);
4. optional peak normalisation (the level divided by the loudest frame's, so threshold and gain
   are relative to the clip's peak);
5. `clamp(gain·(level − threshold), 0, 1)`.

`audio_controls` maps the envelope onto chosen controls (0 → the control's neutral value,
1 → the given value). The waveform layout is ComfyUI's AUDIO dict `{"waveform": [B,C,S] float,
"sample_rate": int}`; this module has no ComfyUI import.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

from ..errors import InputError

MAX_FRAMES = 100_000


def _finite(name: str, v, lo: Optional[float] = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"audio envelope: {name} must be a finite number, got {v!r}.")
    if lo is not None and v < lo:
        raise InputError(f"audio envelope: {name} must be ≥ {lo:g}, got {v!r}.")
    return float(v)


def _mono(waveform) -> torch.Tensor:
    """[S], [C,S] or [B,C,S] → mono [S] float64 (mean over channels of the first clip)."""
    if not isinstance(waveform, torch.Tensor):
        raise InputError(f"audio: waveform must be a tensor [B,C,S] or [C,S], got {type(waveform).__name__}.")
    w = waveform.detach().to("cpu", torch.float64)
    if w.ndim == 3:
        if w.shape[0] == 0:
            raise InputError("audio: the waveform batch is empty.")
        w = w[0]
    elif w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] == 0:
        raise InputError(f"audio: waveform must have shape [B,C,S] or [C,S], got {tuple(waveform.shape)}.")
    if not bool(torch.isfinite(w).all()):
        raise InputError("audio: the waveform contains NaN or infinite samples.")
    return w.mean(dim=0)


def frame_levels(mono: torch.Tensor, sample_rate: float, fps: float, n_frames: int) -> torch.Tensor:
    """RMS `[n_frames]` float64 of each frame window `[i/fps, (i+1)/fps)` of a mono signal `[S]`.

    Window bounds are rounded to samples (`round(i·sample_rate/fps)`); an empty window (audio
    rate below the frame rate) takes the sample at its start; past the end counts as silence.
    """
    s = mono.numel()
    bounds = torch.round(torch.arange(n_frames + 1, dtype=torch.float64) * (sample_rate / fps)).to(torch.int64)
    # cumulative sum of squares (with a leading 0) gives each window's energy in O(S + F)
    sq = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(mono * mono, 0)])
    lo, hi = bounds[:-1].clamp(max=s), bounds[1:].clamp(max=s)
    empty = (hi <= lo) & (lo < s)  # audio slower than video: use one sample
    hi = torch.where(empty, lo + 1, hi)
    count = (bounds[1:] - bounds[:-1]).clamp(min=1).to(torch.float64)
    count = torch.where(empty, torch.ones_like(count), count)
    energy = (sq[hi] - sq[lo]).clamp(min=0)
    return torch.sqrt(energy / count)


def follow(level: torch.Tensor, fps: float, attack_ms: float, release_ms: float) -> torch.Tensor:
    """Attack / release one-pole smoothing of a per-frame level `[F]` → `[F]` float64 (start 0)."""
    def coef(ms: float) -> float:
        return 0.0 if ms <= 0 else math.exp(-1000.0 / (fps * ms))

    a_att, a_rel = coef(attack_ms), coef(release_ms)
    out = torch.empty_like(level, dtype=torch.float64)
    y = 0.0
    for i, x in enumerate(level.tolist()):  # sequential by nature; F is a few thousand frames at most
        a = a_att if x > y else a_rel
        y = y + (1.0 - a) * (x - y)
        out[i] = y
    return out


def loudness_envelope(waveform, sample_rate, fps: float, n_frames: Optional[int] = None,
                      attack_ms: float = 10.0, release_ms: float = 80.0, threshold: float = 0.0,
                      gain: float = 1.0, normalize: bool = False) -> torch.Tensor:
    """Loudness per video frame in 0..1 (steps in the module doc).

    waveform: `[B,C,S]` (ComfyUI AUDIO; the first clip is used), `[C,S]` or `[S]` float samples
        in −1..1 (other scales work, with gain / threshold in the same unit).
    sample_rate: samples per second. fps: video frames per second.
    n_frames: frames wanted (None = every frame the audio touches: ceil(S·fps/sample_rate)).
    attack_ms / release_ms ≥ 0: rise / fall time constants of the follower.
    threshold: level (RMS, after normalisation if on) below which the envelope is 0.
    gain: multiplier after the threshold; the result is clamped to 0..1.
    normalize: divide the followed level by its maximum first (silence stays 0).
    Returns `[n_frames]` float32. Raises InputError naming the bad argument.
    """
    sr = _finite("sample_rate", sample_rate, 1)
    fps = _finite("fps", fps)
    if fps <= 0:
        raise InputError(f"audio envelope: fps must be > 0, got {fps}.")
    attack_ms = _finite("attack_ms", attack_ms, 0)
    release_ms = _finite("release_ms", release_ms, 0)
    threshold = _finite("threshold", threshold)
    gain = _finite("gain", gain, 0)
    mono = _mono(waveform)
    if n_frames is None:
        n_frames = max(1, math.ceil(mono.numel() * fps / sr - 1e-9))
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or not 1 <= n_frames <= MAX_FRAMES:
        raise InputError(f"audio envelope: n_frames must be a whole number in 1..{MAX_FRAMES}, got {n_frames!r}.")
    level = follow(frame_levels(mono, sr, fps, n_frames), fps, attack_ms, release_ms)
    if normalize:
        peak = float(level.max())
        if peak > 0:
            level = level / peak
    return (gain * (level - threshold)).clamp(0, 1).float()


def audio_envelope_from_dict(audio: Mapping, fps: float, n_frames: Optional[int] = None, **options) -> torch.Tensor:
    """`loudness_envelope` of a ComfyUI-style AUDIO dict `{"waveform": [B,C,S], "sample_rate": int}`."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError("audio: expected an AUDIO value with 'waveform' and 'sample_rate' (e.g. from Load Audio).")
    return loudness_envelope(audio["waveform"], audio["sample_rate"], fps, n_frames, **options)


def audio_controls(envelope: torch.Tensor, targets: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Per-frame control values from an envelope `[F]` in 0..1.

    targets: control name → value at full loudness (e.g. {"lips_open": 80, "eyebrow": 10}).
    Each control moves linearly from its neutral value (envelope 0) to its target (envelope 1):
    `neutral + e·(target − neutral)`. A ratio target control (eye / lip open ratio, whose
    neutral means "leave as is") gets `e·target` instead: 0 = closed at silence.
    Returns {name: `[F]` float32}; names and targets are checked with `validate_controls`
    (unknown control, out-of-range or non-finite target → InputError naming it).
    """
    from .controls import CONTROLS, validate_controls

    env = envelope.detach().to("cpu", torch.float32).reshape(-1)
    checked = validate_controls(dict(targets), "audio-reactive targets")
    out: dict[str, torch.Tensor] = {}
    for name, target in checked.items():
        c = CONTROLS[name]
        target = float(target)
        if c.kind == "ratio":
            out[name] = env * target
        else:
            out[name] = c.neutral + env * (target - c.neutral)
    return out
