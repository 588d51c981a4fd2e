"""Value checks of motion read from files and of keypoints before rendering.

A NaN, an infinity or an absurd magnitude in a motion file does not fail loudly downstream:
warping turns it into black squares over the face. Every motion read (templates, our own
files, later presets / keyframes) goes through `check_finite_motion`; the renderer checks its
keypoint plan with `check_finite_keypoints` before the first frame.

Limits are far outside anything the motion extractor produces (measured: exp, kp within ±3,
t within ±1, scale 0.6–2.5, angles within ±100°, ratios 0–1) and only catch damaged data.
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import InputError, MotionFileError

# field → (lowest, highest) plausible value; anything outside is a damaged file.
LIMITS = {
    "pitch": (-360.0, 360.0), "yaw": (-360.0, 360.0), "roll": (-360.0, 360.0),
    "R": (-1.01, 1.01),  # entries of a rotation matrix (float32 rounding above 1)
    "exp": (-100.0, 100.0), "t": (-100.0, 100.0), "kp": (-100.0, 100.0),
    "scale": (0.0, 100.0),  # negative mirrors the face
    "eye_ratio": (-10.0, 10.0), "lip_ratio": (-10.0, 10.0),
}
KEYPOINT_LIMIT = 1e4  # |x_s|, |x_d| after composition (normal: < 2)


def _first_bad(v: torch.Tensor, lo: float, hi: float) -> Optional[tuple]:
    """(item index, 'NaN' / 'infinite' / value) of the first bad entry of [N,…] `v`, or None."""
    x = v.detach().float().reshape(v.shape[0], -1) if v.dim() else v.detach().float().reshape(1, 1)
    bad = ~torch.isfinite(x) | (x < lo) | (x > hi)
    if not bool(bad.any()):
        return None
    rows = bad.any(dim=1).nonzero().flatten()
    i = int(rows[0])
    val = float(x[i][bad[i]][0])
    what = "NaN" if val != val else ("an infinite value" if abs(val) == float("inf") else f"{val:g}")
    return i, what, int(rows.numel())


def check_finite_motion(motion, where: str, error=MotionFileError) -> None:
    """Raise `error` naming `where`, the field and the first bad frame when a float field of
    `motion` holds NaN, ±inf or a value outside `LIMITS`."""
    frames = motion.frame_index if getattr(motion, "frame_index", None) is not None else None
    for key, (lo, hi) in LIMITS.items():
        v = getattr(motion, key, None)
        if v is None or not isinstance(v, torch.Tensor) or v.numel() == 0:
            continue
        bad = _first_bad(v, lo, hi)
        if bad is None:
            continue
        i, what, count = bad
        frame = int(frames[i]) if frames is not None and frames.numel() > i else i
        more = f" (and {count - 1} more frame(s))" if count > 1 else ""
        raise error(f"{where}: field '{key}' of frame {frame} holds {what}{more}; plausible values are "
                    f"{lo:g} to {hi:g}. The motion is damaged: extract it again from its video, or use "
                    f"another motion file.")


def check_finite_keypoints(x_s: torch.Tensor, x_d: torch.Tensor, where: str = "keypoint plan",
                           first_frame: int = 0) -> None:
    """InputError when source or driving keypoints `[B,21,3]` hold NaN / inf / |x| > KEYPOINT_LIMIT
    (they would render black frames)."""
    for name, v in (("source keypoints x_s", x_s), ("driving keypoints x_d", x_d)):
        bad = _first_bad(v, -KEYPOINT_LIMIT, KEYPOINT_LIMIT)
        if bad is not None:
            i, what, count = bad
            more = f" (and {count - 1} more frame(s))" if count > 1 else ""
            raise InputError(f"{where}: {name} of frame {first_frame + i} hold {what}{more}; rendering "
                             "them would give black frames, so nothing was rendered. Check the motion "
                             "inputs (a damaged motion file, or a driving multiplier / keyframe far "
                             "out of range).")
