"""Derived inference copies of F, W, G: folded, pre-normalised, optionally bf16/fp16 channels-last.

The network definitions stay untouched; `prepare_network` returns a *derived copy* whose
forward computes the same function with fewer, faster operations:

* BatchNorm folded into the convolution whose output it normalises, for the blocks listed in
  `FOLDS` (`conv → BN` blocks; pre-activation `BN → ReLU → conv` norms are not in the list).
* Spectral norm made a plain weight `W_eff = weight_orig / (u·(W v))` with the stored u, v
  (docs/ARCHITECTURE.md, "Networks") — no power iteration, nothing left that could mutate state.
* Optionally weights cast to bfloat16 / float16 and stored channels-last (4-D → channels_last,
  5-D → channels_last_3d), which is what makes oneDNN's fast bf16 kernels kick in on CPU; G's
  SPADE layers are then swapped for layout-keeping ones (accel/spade.py).
* Optionally (float32 on CPUs without fast bf16) the wide k×k / k×k×k convolutions computed by
  NNPACK's Winograd / FFT kernels (accel/nnpack.py: ~5× fewer products, float32 round-off only),
  G's SPADE residual blocks first fused so that their shared convolutions run once.

Swaps match the project's own network classes (isinstance); nothing is probed at random.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..networks.blocks import (DownBlock2d, DownBlock3d, ResBlock3d, SameBlock2d, SNConv2d,
                               UpBlock3d)
from ..networks.warping_module import DenseMotionNetwork, Hourglass3d
from .half import remove_cast_hooks
from .nnpack import replace_convs
from .spade import replace_spade, replace_spade_blocks
from .swap import swap_modules

# What folds: (block class, conv, BN) where the BN is applied directly to that conv's output in
# the block's forward. Pre-activation norms (ResBlock3d.norm1, before conv1) are not listed.
FOLDS = (
    (SameBlock2d, "conv", "norm"),             # conv → BN → ReLU / LeakyReLU
    (DownBlock2d, "conv", "norm"),             # conv → BN → ReLU → pool
    (DownBlock3d, "conv", "norm"),
    (UpBlock3d, "conv", "norm"),               # upsample → conv → BN → ReLU
    (ResBlock3d, "conv1", "norm2"),            # … conv1 → norm2 → ReLU → conv2
    (DenseMotionNetwork, "compress", "norm"),  # compress → norm → ReLU
    (Hourglass3d, "decoder.conv", "decoder.norm"),
)


def _plain_conv(sn: SNConv2d) -> nn.Conv2d:
    """A plain Conv2d computing what the spectral-norm conv `sn` computes (its eval weight)."""
    w = sn.eval_weight().detach()
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=sn.padding, bias=sn.bias is not None)
    conv.weight = nn.Parameter(w, requires_grad=False)
    if sn.bias is not None:
        conv.bias = nn.Parameter(sn.bias.detach().float().clone(), requires_grad=False)
    return conv


def materialize_spectral_norm(net: nn.Module) -> int:
    """Replace every `SNConv2d` in `net` (in place) by a plain Conv2d with its eval weight
    `W_eff = weight_orig / (u·(W v))`. Returns the number replaced."""
    if net.training:
        raise RuntimeError("materialize_spectral_norm needs an eval-mode network")
    return swap_modules(net, lambda m: _plain_conv(m) if isinstance(m, SNConv2d) else None)


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


def _replace(block: nn.Module, path: str, new: nn.Module) -> None:
    owner, _, name = path.rpartition(".")
    setattr(block.get_submodule(owner) if owner else block, name, new)


def fold_batchnorm(net: nn.Module) -> int:
    """Fold BN into the conv it directly follows, for the blocks of `FOLDS` (in place).
    Returns the number of pairs folded."""
    n = 0
    for block in list(net.modules()):
        for cls, conv_path, bn_path in FOLDS:
            if not isinstance(block, cls):
                continue
            bn = block.get_submodule(bn_path)
            if isinstance(bn, nn.Identity):  # folded already
                continue
            _replace(block, conv_path, _fold(block.get_submodule(conv_path), bn))
            _replace(block, bn_path, nn.Identity())
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


def _inputs_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: tensor arguments in the channels-last layout of their rank."""
    return tuple(channels_last(a) if isinstance(a, torch.Tensor) else a for a in args)


def prepare_network(
    net: nn.Module,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
    memory_channels_last: bool = True,
    fold: bool = True,
    nnpack: bool = False,
) -> nn.Module:
    """A derived inference copy of `net` (the original is not modified).

    Eval mode, spectral norm materialised, BN folded (when `fold`), wide convolutions run by
    NNPACK (when `nnpack`: float32 on CPU only; a no-op where torch has no NNPACK), cast to
    `dtype` on `device`, parameters channels-last (when `memory_channels_last`), no gradients.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    m = copy.deepcopy(net).to("cpu").float().eval()
    remove_cast_hooks(m)  # the caller feeds the copy in `dtype` and keypoints in float32 itself
    materialize_spectral_norm(m)
    if fold:
        fold_batchnorm(m)
    spade = 0
    if nnpack and dtype == torch.float32 and device.type == "cpu":
        replace_spade_blocks(m)  # before the conv swap, so the fused convs are swapped too
        replace_convs(m)
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        spade = replace_spade(m)
    m = m.to(device=device, dtype=dtype)
    # With the layout-keeping SPADE, channels-last is what makes G fast in bf16, so a network with
    # swapped SPADEs is stored channels-last, and its inputs converted once (a default-layout
    # conditioning map would otherwise be converted at every SPADE).
    if spade:
        m.register_forward_pre_hook(_inputs_channels_last)
    if memory_channels_last or spade:
        to_channels_last(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m
