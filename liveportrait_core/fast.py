"""Inference-time copies of the networks: folded, pre-normalised, optionally bf16/fp16 channels-last.

The network definitions stay untouched; `prepare_network` returns a *derived copy* whose
forward computes the same function with fewer, faster operations:

* BatchNorm folded into the convolution before it (`conv → BN` blocks: SameBlock2d,
  DownBlock2d/3d, UpBlock3d). A block is folded only when a small numerical check shows the
  folded copy computes the same output — pre-activation blocks (`BN → ReLU → conv`) are left alone.
* Spectral norm made a plain weight `W_eff = weight_orig / (u·(W v))` with the stored u, v
  (ARCHITECTURE.md §1) — no power iteration, nothing left that could mutate state.
* Optionally weights cast to bfloat16 / float16 and stored channels-last (4-D → channels_last,
  5-D → channels_last_3d), which is what makes oneDNN's fast bf16 kernels kick in on CPU.

Callers keep the prepared copy on the object that owns the models (the Animator); nothing is
cached by object identity here.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def materialize_spectral_norm(net: nn.Module) -> int:
    """Replace every spectral-norm reparametrisation in `net` (in place) by its eval weight.

    Handles the hook API (`weight_orig/weight_u/weight_v`) and the parametrization API.
    Returns the number of weights converted. `net` must be in eval mode (checked).
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm

    if net.training:
        raise RuntimeError("materialize_spectral_norm needs an eval-mode network")
    n = 0
    for m in net.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                torch.nn.utils.remove_spectral_norm(m, hook.name)  # uses stored u, v (no iteration)
                n += 1
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                with torch.no_grad():
                    parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                n += 1
    return n


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of `conv` computing `bn(conv(x))` in eval mode (float64 arithmetic, cast back)."""
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    inv = (bn.running_var.double() + bn.eps).rsqrt()
    g = bn.weight.detach().double() * inv if bn.affine else inv
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(g)
    shape = (-1,) + (1,) * (w.dim() - 1)
    fused.weight = nn.Parameter((w * g.reshape(shape)).to(conv.weight.dtype), requires_grad=False)
    fused.bias = nn.Parameter(((b - bn.running_mean.double()) * g + beta).to(conv.weight.dtype), requires_grad=False)
    return fused


def _probe_input(conv: nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    spatial = {nn.Conv1d: (16,), nn.Conv2d: (8, 8), nn.Conv3d: (4, 8, 8)}[type(conv)]
    return torch.randn((1, conv.in_channels) + spatial, generator=gen, dtype=conv.weight.dtype)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold `conv → BN` pairs held as `.conv` / `.norm` of a block into the conv (in place).

    Each candidate is checked numerically on a small random input; blocks where BN does not
    directly follow the conv keep their BN. Returns the number of folded pairs.
    """
    n = 0
    for block in list(net.modules()):
        conv, bn = getattr(block, "conv", None), getattr(block, "norm", None)
        if not (isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.track_running_stats):
            continue
        if conv.groups != 1 and conv.out_channels != bn.num_features:
            continue
        x = _probe_input(conv)
        try:
            with torch.no_grad():
                ref = block(x)
                block.conv, block.norm = _fold(conv, bn), nn.Identity()
                got = block(x)
        except Exception:  # noqa: BLE001 - an unusual block; leave it as it was
            block.conv, block.norm = conv, bn
            continue
        if not torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max()))):
            block.conv, block.norm = conv, bn  # not a conv→BN block
            continue
        n += 1
    return n


def to_channels_last(net: nn.Module) -> nn.Module:
    """Store 4-D parameters channels_last and 5-D ones channels_last_3d (in place)."""
    for m in net.modules():
        for name, p in list(m._parameters.items()):
            if p is None:
                continue
            fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(p.dim())
            if fmt is not None:
                m._parameters[name] = nn.Parameter(p.detach().contiguous(memory_format=fmt), requires_grad=False)
    return net


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` in the channels-last layout of its rank (unchanged for other ranks)."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return x.contiguous(memory_format=fmt) if fmt is not None else x


def prepare_network(
    net: nn.Module,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
    memory_channels_last: bool = True,
    fold: bool = True,
) -> nn.Module:
    """A derived inference copy of `net` (the original is not modified).

    Eval mode, spectral norm materialised, BN folded (when `fold`), cast to `dtype` on `device`,
    parameters channels-last (when `memory_channels_last`), no gradients.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    m = copy.deepcopy(net).to("cpu").float().eval()
    materialize_spectral_norm(m)
    if fold:
        fold_batchnorm(m)
    m = m.to(device=device, dtype=dtype)
    if memory_channels_last:
        to_channels_last(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def bf16_supported_cpu() -> bool:
    """True when this CPU has native bfloat16 support in oneDNN (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older builds without the probe
        return False
