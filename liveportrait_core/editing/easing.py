"""Easing curves and per-track interpolation of keyframed values.

A track is one control's keys: strictly increasing times `[K]`, values `[K]` and, per key, the
easing used *into* that key (the easing of the first key is unused). Between key j and key j+1
the value is `v_j + (v_{j+1} − v_j)·f(u)` with `u = (t − t_j)/(t_{j+1} − t_j)` in [0, 1], where
f is the easing of key j+1:

==============  ==============================  =====================================
easing          f(u)                            monotone between keys?
==============  ==============================  =====================================
"step"          0 for u < 1 (hold v_j), then 1  yes (a jump at the key)
"linear"        u                               yes
"ease-in"       u²                              yes
"ease-out"      1 − (1 − u)²                    yes
"ease-in-out"   u²·(3 − 2u)  (smoothstep)       yes
"smooth"        cubic Hermite through the keys  yes (see below)
==============  ==============================  =====================================

"smooth" is a piecewise cubic Hermite curve whose slopes at the keys are chosen by the
Fritsch–Carlson rule in its PCHIP form (weighted harmonic mean of the neighbouring secants,
0 at a local extremum or a flat neighbour, one-sided three-point slopes at the ends, limited to
3× the end secant). This makes every segment monotone between its two keys: the curve never
overshoots the key values, a key that is a local peak is a flat top, and two equal keys give a
constant segment. Slopes use all keys of the track (also the ones whose easing is not "smooth"),
so a smooth segment next to a linear one still meets it at the key value (its slope may differ).
The values equal scipy's `PchipInterpolator` when every key is "smooth".

Every curve gives exactly the key value at a key time (f(0) = 0 and the segment formula starts
at v_j), before the first key the first value and after the last key the last value.
All arithmetic is float64; callers cast to float32.
"""
from __future__ import annotations

from typing import Sequence

import torch

EASINGS = ("step", "linear", "ease-in", "ease-out", "ease-in-out", "smooth")
# Every easing above is monotone between its two keys (the table in the module doc).
MONOTONE_EASINGS = EASINGS


def ease(name: str, u: torch.Tensor) -> torch.Tensor:
    """The easing `name` (not "smooth", which needs neighbouring keys) at u ∈ [0, 1] → [0, 1],
    same shape and dtype; f(0) = 0 and f(1) = 1 exactly."""
    if name == "step":
        return (u >= 1).to(u.dtype)
    if name == "linear":
        return u
    if name == "ease-in":
        return u * u
    if name == "ease-out":
        return 1 - (1 - u) * (1 - u)
    if name == "ease-in-out":
        return u * u * (3 - 2 * u)
    raise ValueError(f"unknown easing {name!r}; use one of {list(EASINGS)}")


def pchip_slopes(times: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Monotone (Fritsch–Carlson / PCHIP) slopes dv/dt `[K]` float64 at K ≥ 1 keys.

    times: `[K]` strictly increasing; values: `[K]`. K = 1 → [0]; K = 2 → the secant at both ends.
    """
    t, v = times.double(), values.double()
    k = t.numel()
    if k < 2:
        return torch.zeros(k, dtype=torch.float64)
    h = t[1:] - t[:-1]
    d = (v[1:] - v[:-1]) / h  # secants
    if k == 2:
        return torch.stack([d[0], d[0]])
    m = torch.zeros(k, dtype=torch.float64)
    # interior: weighted harmonic mean where both secants have the same (non-zero) sign
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same = (torch.sign(d[:-1]) * torch.sign(d[1:])) > 0
    safe0 = torch.where(same, d[:-1], torch.ones_like(d[:-1]))
    safe1 = torch.where(same, d[1:], torch.ones_like(d[1:]))
    m[1:-1] = torch.where(same, (w1 + w2) / (w1 / safe0 + w2 / safe1), torch.zeros_like(w1))
    m[0] = _end_slope(h[0], h[1], d[0], d[1])
    m[-1] = _end_slope(h[-1], h[-2], d[-1], d[-2])
    return m


def _end_slope(h0: torch.Tensor, h1: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """One-sided three-point slope at an end, kept monotone (sign of d0, at most 3·|d0|)."""
    s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if torch.sign(s) != torch.sign(d0):
        return torch.zeros((), dtype=torch.float64)
    if torch.sign(d0) != torch.sign(d1) and s.abs() > 3 * d0.abs():
        return 3 * d0
    return s


def interpolate(times: torch.Tensor, values: torch.Tensor, easings: Sequence[str],
                t: torch.Tensor) -> torch.Tensor:
    """Value of one track at times `t` `[N]` → `[N]` float64 (see the module doc).

    times: `[K]` strictly increasing seconds (K ≥ 1); values: `[K]`; easings: K names, easing k
    is the curve from key k−1 into key k (easings[0] is unused).
    """
    kt, kv = times.double().reshape(-1), values.double().reshape(-1)
    t = t.double().reshape(-1)
    k = kt.numel()
    if k == 0:
        raise ValueError("a track needs at least one key")
    if len(easings) != k:
        raise ValueError(f"{len(easings)} easings for {k} keys")
    out = torch.empty_like(t)
    before, after = t <= kt[0], t >= kt[-1]
    out[before] = kv[0]
    out[after] = kv[-1]
    inside = ~(before | after)
    if k < 2 or not bool(inside.any()):
        return out
    ti = t[inside]
    # segment j: kt[j] <= t < kt[j+1] (a time exactly at a key starts the next segment: u = 0)
    j = (torch.searchsorted(kt, ti, right=True) - 1).clamp(0, k - 2)
    t0, t1, v0, v1 = kt[j], kt[j + 1], kv[j], kv[j + 1]
    h = t1 - t0
    u = ((ti - t0) / h).clamp(0, 1)
    res = torch.empty_like(ti)
    names = [easings[int(i) + 1] for i in range(k - 1)]  # easing of each segment
    seg_names = sorted(set(names))
    slopes = pchip_slopes(kt, kv) if "smooth" in seg_names else None
    seg_of = torch.tensor([EASINGS.index(n) if n in EASINGS else -1 for n in names], dtype=torch.int64)[j]
    for name in seg_names:
        if name not in EASINGS:
            raise ValueError(f"unknown easing {name!r}; use one of {list(EASINGS)}")
        sel = seg_of == EASINGS.index(name)
        us = u[sel]
        if name == "smooth":
            m0, m1, hs = slopes[j[sel]], slopes[j[sel] + 1], h[sel]
            u2, u3 = us * us, us * us * us
            h00 = 2 * u3 - 3 * u2 + 1
            h10 = u3 - 2 * u2 + us
            h01 = -2 * u3 + 3 * u2
            h11 = u3 - u2
            res[sel] = h00 * v0[sel] + h10 * hs * m0 + h01 * v1[sel] + h11 * hs * m1
        else:
            res[sel] = v0[sel] + (v1[sel] - v0[sel]) * ease(name, us)
    out[inside] = res
    return out
