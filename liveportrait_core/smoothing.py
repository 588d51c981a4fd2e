"""Kalman RTS smoothing of per-frame keypoint targets (docs/MOTION.md).

The reference smooths with an identity-model Kalman filter + Rauch–Tung–Striebel smoother whose
matrices are all multiples of I, so every value is smoothed independently by one scalar
recursion. The gains do not depend on the data, so they are computed once per time step and the
state update is vectorised over all values.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError

PROCESS_VARIANCE = 1e-5  # the reference's fixed transition covariance (× I)
DEFAULT_OBSERVATION_VARIANCE = 3e-7  # driving_smooth_observation_variance default


def kalman_smooth(seq, observation_variance: float = DEFAULT_OBSERVATION_VARIANCE,
                  process_variance: float = PROCESS_VARIANCE) -> torch.Tensor:
    """RTS-smooth a sequence along dim 0.

    seq: [n, ...] array-like (any trailing shape; every value is an independent series).
    observation_variance: r > 0 (larger = smoother). Computed in float64; returns float32 [n, ...]
    (the reference casts its float64 result to float32).
    """
    if isinstance(seq, torch.Tensor):
        seq = seq.detach().cpu().numpy()
    y = np.asarray(seq, dtype=np.float64)
    r, q = float(observation_variance), float(process_variance)
    if not (r > 0 and np.isfinite(r)):
        raise InputError(f"smoothing variance must be a positive number, got {observation_variance}.")
    if y.ndim == 0 or y.shape[0] == 0:
        raise InputError("nothing to smooth: the sequence has no frames.")
    shape, n = y.shape, y.shape[0]
    y = y.reshape(n, -1)
    xf = np.empty_like(y)
    P = np.empty(n)
    # forward filter: initial mean = first observation, initial covariance 1
    x_prev, p_prior = y[0], 1.0
    for k in range(n):
        if k > 0:
            p_prior = P[k - 1] + q
            x_prev = xf[k - 1]
        gain = p_prior / (p_prior + r)
        xf[k] = x_prev + gain * (y[k] - x_prev)
        P[k] = (1.0 - gain) * p_prior
    # backward (RTS) pass
    xs = np.empty_like(y)
    xs[n - 1] = xf[n - 1]
    for k in range(n - 2, -1, -1):
        J = P[k] / (P[k] + q)
        xs[k] = xf[k] + J * (xs[k + 1] - xf[k])
    return torch.from_numpy(xs.reshape(shape).astype(np.float32))
