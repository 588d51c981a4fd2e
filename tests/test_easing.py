"""Easing curves: exact values at keys, the documented formulas between keys, monotonicity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from liveportrait_core.editing.easing import EASINGS, MONOTONE_EASINGS, ease, interpolate, pchip_slopes

T = torch.tensor([0.0, 0.4, 1.0, 1.6, 3.0], dtype=torch.float64)
V = torch.tensor([0.0, 1.0, 1.0, -0.5, 0.25], dtype=torch.float64)


@pytest.mark.parametrize("name", EASINGS)
def test_exact_values_at_keys_before_and_after(name):
    out = interpolate(T, V, [name] * 5, torch.cat([T, torch.tensor([-1.0, 5.0], dtype=torch.float64)]))
    assert torch.equal(out[:5], V)
    assert out[5] == V[0] and out[6] == V[-1]


def test_formulas_between_keys():
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert ease("step", u).tolist() == [0, 0, 0, 0, 1]
    assert ease("linear", u).tolist() == u.tolist()
    assert ease("ease-in", u).tolist() == [0, 0.0625, 0.25, 0.5625, 1]
    assert ease("ease-out", u).tolist() == [0, 0.4375, 0.75, 0.9375, 1]
    assert ease("ease-in-out", u).tolist() == [0, 0.15625, 0.5, 0.84375, 1]
    times = torch.tensor([1.0, 3.0], dtype=torch.float64)
    vals = torch.tensor([2.0, 6.0], dtype=torch.float64)
    t = torch.tensor([1.5, 2.0, 2.999], dtype=torch.float64)
    assert interpolate(times, vals, ["linear", "linear"], t).tolist() == pytest.approx([3.0, 4.0, 5.998])
    assert interpolate(times, vals, ["linear", "step"], t).tolist() == [2.0, 2.0, 2.0]  # hold until the key
    assert interpolate(times, vals, ["linear", "ease-in"], t).tolist() == pytest.approx([2.25, 3.0, 2 + 4 * 0.9995 ** 2])
    # the easing of a segment is the one of the key it goes *into*
    out = interpolate(T, V, ["linear", "step", "linear", "ease-out", "linear"], torch.tensor([0.2, 1.3, 2.3], dtype=torch.float64))
    assert out.tolist() == pytest.approx([0.0, 1.0 - 1.5 * (1 - 0.25), -0.5 + 0.75 * 0.5])


def test_smooth_is_scipy_pchip_and_never_overshoots():
    from scipy.interpolate import PchipInterpolator

    t = torch.linspace(-0.5, 3.5, 4001, dtype=torch.float64)
    ours = interpolate(T, V, ["smooth"] * 5, t)
    ref = PchipInterpolator(T.numpy(), V.numpy(), extrapolate=False)(t.numpy())
    inside = (t >= T[0]) & (t <= T[-1])
    np.testing.assert_allclose(ours[inside].numpy(), ref[inside.numpy()], rtol=0, atol=1e-12)
    # monotone between every pair of keys: within the segment's key values, and sorted
    for j in range(4):
        seg = ours[(t >= T[j]) & (t <= T[j + 1])]
        lo, hi = min(V[j], V[j + 1]), max(V[j], V[j + 1])
        assert float(seg.min()) >= lo - 1e-12 and float(seg.max()) <= hi + 1e-12
        d = torch.diff(seg)
        assert bool((d >= -1e-12).all()) or bool((d <= 1e-12).all())
    # the two equal keys 1.0, 1.0 give a flat segment; a peak key has slope 0
    assert torch.equal(ours[(t >= 0.4) & (t <= 1.0)], torch.ones_like(ours[(t >= 0.4) & (t <= 1.0)]))
    assert pchip_slopes(T, V)[3] == 0  # -0.5 is a local minimum


@pytest.mark.parametrize("name", MONOTONE_EASINGS)
def test_monotone_where_promised(name):
    gen = torch.Generator().manual_seed(3)
    times = torch.cumsum(torch.rand(12, generator=gen, dtype=torch.float64) + 0.05, 0)
    vals = torch.randn(12, generator=gen, dtype=torch.float64)
    t = torch.linspace(float(times[0]), float(times[-1]), 6001, dtype=torch.float64)
    out = interpolate(times, vals, [name] * 12, t)
    for j in range(11):
        m = (t >= times[j]) & (t <= times[j + 1])
        seg = out[m]
        d = torch.diff(seg) * torch.sign(vals[j + 1] - vals[j])
        assert bool((d >= -1e-12).all()), (name, j)


def test_mixed_easings_share_keys_and_single_key_holds():
    out = interpolate(T, V, ["linear", "smooth", "linear", "smooth", "step"], T)
    assert torch.equal(out, V)
    one = interpolate(torch.tensor([2.0]), torch.tensor([0.7], dtype=torch.float64), ["smooth"], torch.tensor([0.0, 2.0, 9.0]))
    assert torch.allclose(one, torch.full((3,), 0.7, dtype=torch.float64), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown easing"):
        interpolate(T, V, ["linear", "bounce", "linear", "linear", "linear"], torch.tensor([0.2]))
