"""Combining per-frame control values from several sources (a keyframe sequence, an audio
envelope, …) into one set for `apply_controls`.

Offset, pose and scale controls add their distances from neutral: v = neutral + Σ (v_i − neutral),
clamped to the control's range (so "smile from the keys" + "lips open from the audio" both show,
and the same control from both adds up). Ratio targets (eye / lip open ratio, < 0 = leave as is)
do not add: per frame the last source with a target (≥ 0) wins.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import InputError
from .controls import CONTROLS, validate_controls


def _per_frame(v, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise InputError(f"control '{name}' has {t.numel()} values; expected 1 or one per frame ({n}).")
    return t


def mix_values(parts: list[Mapping], n: int) -> dict[str, torch.Tensor]:
    """Per-frame values `[n]` float32 for every control named by any part (in CONTROLS order).

    parts: control name → number or `[n]` values, each checked by `validate_controls`.
    """
    checked = [validate_controls(p, "control values") for p in parts]
    out: dict[str, torch.Tensor] = {}
    for name, c in CONTROLS.items():
        vals = [_per_frame(p[name], n, name) for p in checked if name in p]
        if not vals:
            continue
        if c.kind == "ratio":
            v = vals[0]
            for w in vals[1:]:
                v = torch.where(w >= 0, w, v)
        else:
            v = (c.neutral + sum(x - c.neutral for x in vals)).clamp(c.minimum, c.maximum)
        out[name] = v.float()
    return out
