"""Faster float32 convolutions for CPUs without fast bf16: NNPACK's Winograd / FFT kernels,
and a GEMM-then-shift form for convolutions with very few outputs.

On a CPU with no native bfloat16 (where bf16 GEMMs are emulated, hundreds of times slower than
float32), the only way to make the networks much faster is less arithmetic. PyTorch ships
NNPACK, whose 3×3 convolutions use Winograd F(6×6, 3×3) (≈5× fewer products) and whose larger
kernels use tiled FFTs, all in float32 with transforms fused into the GEMM tiles. PyTorch's
own dispatch does not choose it for these layers; these modules call it directly (and fall back
to the stock convolution if NNPACK refuses an input):

* `NNPackConv2d` — a stride-1, ungrouped Conv2d.
* `NNPackConv3d` — a stride-1, ungrouped Conv3d (kd×k×k) as one 2-D convolution of the
  stacked depth slices with kd·K outputs, whose depth taps are summed with the right shift.
* `ShiftAddConv2d` — a wide-input, few-output Conv2d (W's occlusion head: 2272 → 1, 7×7) as
  one GEMM to K·k² tap maps followed by k² shifted adds; oneDNN's direct kernel ran such a
  layer far below GEMM speed (degenerate output dimension), this at GEMM speed.

The items of a batch share NNPACK calls on small maps (PACK_PIXELS), placed side by side or
stacked at multiples of the Winograd tile, so each item is computed exactly as it is alone.

Accuracy: float32 round-off of the transforms only (≈1e-5 relative per layer here, against
bfloat16's ≈4e-3); used by the 'fast' precision (accel/derive.py), never by 'exact'.
"""
from __future__ import annotations

import threading
from typing import Tuple

import torch
from torch import nn

from .swap import swap_modules

# Below these NNPACK is slower than oneDNN's direct convolution (timed per layer of W and G;
# benchmarks/networks.py --dtypes nnpack shows the effect on whole networks): few output
# channels, or maps smaller than its 8×8 Winograd tile. W's 3-D convolutions on 8×8 depth slices
# gain when a batch shares calls; on 4×4 slices they stay stock.
MIN_CHANNELS = 64
MIN_SIDE = 8
MIN_SIDE_3D = 8
WINOGRAD_TILE = 6   # output tile of NNPACK's F(6×6, 3×3)
# Items share one NNPACK call while together they have at most this many pixels: the per-call
# kernel transform is then amortised, while larger packed images run no faster per item and
# slower inside the network (cache).
PACK_PIXELS = 4 * 64 * 64
_init_lock = threading.Lock()
_available = None


def nnpack_available() -> bool:
    """True when this torch build has a working NNPACK (also initialises it: without this,
    every NNPACK call fails with 'SpatialConvolution_updateOutput failed')."""
    global _available
    with _init_lock:
        if _available is None:
            try:
                _available = bool(torch._nnpack_available())
            except Exception:  # noqa: BLE001 - builds without the op
                _available = False
        return _available


def _tuple(v, dims: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * dims


def _float_bias(conv: nn.Module) -> torch.Tensor:
    """`conv`'s bias as a contiguous float32 tensor (zeros when it has none: NNPACK needs one)."""
    b = conv.bias
    return (b.detach().float().clone() if b is not None else torch.zeros(conv.out_channels)).contiguous()


def _outputs_per_call(conv: nn.Module) -> int:
    """Output channels of the one NNPACK call a layer becomes (a 3-D conv: one per depth tap)."""
    return conv.out_channels * (conv.kernel_size[0] if isinstance(conv, nn.Conv3d) else 1)


def eligible(conv: nn.Module) -> bool:
    """Can `conv` run through NNPACK here (and is it worth it)?"""
    if not isinstance(conv, (nn.Conv2d, nn.Conv3d)) or conv.groups != 1:
        return False
    k = conv.kernel_size
    return (k[-1] == k[-2] and k[-1] >= 3 and all(s == 1 for s in conv.stride)
            and all(d == 1 for d in conv.dilation) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)
            and (min(conv.in_channels, _outputs_per_call(conv)) >= MIN_CHANNELS or k[-1] > 3)
            and conv.out_channels >= 16 and nnpack_available())


class NNPackConv2d(nn.Module):
    """`conv` (stride 1, groups 1) computed by NNPACK. `[N,C,H,W]` float32 → `[N,K,Ho,Wo]`.

    The items of a batch are placed side by side in one wide image, `pw` shared zero columns
    apart (each item then sees exactly its own zero padding), and computed in one call: NNPACK
    re-transforms the kernels at every call, which at 64² cost about as much as the image
    (at 64² about as much as the image itself), and its own batched path is slower per image.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.direct = conv  # for maps smaller than NNPACK's tile
        self.register_buffer("weight", conv.weight.detach().float().contiguous())
        self.register_buffer("bias", _float_bias(conv))
        self.padding = list(_tuple(conv.padding, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIDE:
            return self.direct(x)
        try:
            return _side_by_side(x.float(), self.weight, self.bias, self.padding)
        except RuntimeError:  # e.g. NNPACK out of scratch memory: same function, stock kernel
            return self.direct(x)


def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


def _group_size(weight: torch.Tensor, pixels: int) -> int:
    """How many items of `pixels` pixels share one NNPACK call. Only 3×3 kernels (Winograd,
    6×6 output tiles) are shared, each item starting at a multiple of the tile, so that every
    item is computed exactly as alone (measured bit-identical); the FFT paths of other kernels
    round differently by position."""
    return max(1, PACK_PIXELS // pixels) if tuple(weight.shape[-2:]) == (3, 3) else 1


def _by_groups(fn, x: torch.Tensor, group: int) -> torch.Tensor:
    """`fn` over consecutive groups of `group` items of `x`, concatenated."""
    if group >= x.shape[0]:
        return fn(x)
    return torch.cat([fn(x[i:i + group]) for i in range(0, x.shape[0], group)])


def _side_by_side(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding) -> torch.Tensor:
    """NNPACK 2-D convolution of each item of `x` [N,C,H,W] (float32) with `weight` [K,C,kh,kw],
    the items side by side in calls of `_group_size` items. → [N,K,Ho,Wo]."""
    group = _group_size(weight, x.shape[2] * x.shape[3])
    if 2 * padding[1] + 1 < weight.shape[3]:  # narrower than 'same' padding: items would mix
        group = 1
    return _by_groups(lambda g: _one_wide_call(g, weight, bias, padding), x, group)


def _one_wide_call(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding) -> torch.Tensor:
    """All items of `x` side by side in one NNPACK call (see `_side_by_side`)."""
    n, c, h, w = x.shape
    ph, pw = padding
    kh, kw = weight.shape[2:]
    if n == 1:
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [ph, pw], [1, 1])
    step = _round_up(w + pw, WINOGRAD_TILE)   # item i at column i·step, ≥ pw zero columns after it
    wide = x.new_zeros(1, c, h, n * step)
    wide[0].view(c, h, n, step)[..., :w] = x.permute(1, 2, 0, 3)
    out = torch._nnpack_spatial_convolution(wide, weight, bias, [ph, pw], [1, 1])
    ho, wo = out.shape[2], w + 2 * pw - kw + 1
    return out[0, :, :, :n * step].reshape(-1, ho, n, step)[..., :wo].permute(2, 0, 1, 3).contiguous()


class NNPackConv3d(nn.Module):
    """`conv` (kd×k×k, stride 1, groups 1) as one NNPACK 2-D convolution with kd·K outputs,
    whose depth taps are then summed with the right depth shift.

    `[N,C,D,H,W]` float32 → `[N,K,Do,Ho,Wo]` (contiguous). The depth slices of all items are
    stacked into one tall image (each slice between `p` zero rows, so no slice sees its
    neighbours) because NNPACK's single-image path is ~2× faster than its batched one; the
    kd depth taps are stacked as output channels, so the input is transformed once (kd
    separate calls, one per tap, are slower on W's layers), and output
    slice o adds tap t's map of input slice o + t − pd of the same item.
    """

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.direct = conv  # for maps smaller than NNPACK's tile
        w = conv.weight.detach().float()
        kd, k_out = w.shape[2], w.shape[0]
        self.register_buffer("weight", w.permute(2, 0, 1, 3, 4).reshape(kd * k_out, w.shape[1], *w.shape[3:])
                             .contiguous())                      # [kd·K, C, k, k], row t·K + k
        self.register_buffer("bias", _float_bias(conv))
        self.register_buffer("no_bias", torch.zeros(kd * k_out))
        self.taps, self.pads = kd, _tuple(conv.padding, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIDE_3D:
            return self.direct(x)
        try:
            return self._depth_shifted(x)
        except RuntimeError:  # e.g. NNPACK out of scratch memory: same function, stock kernel
            return self.direct(x)

    def _depth_shifted(self, x: torch.Tensor) -> torch.Tensor:
        _, _, d, h, w = x.shape
        return _by_groups(self._tall, x, _group_size(self.weight, d * (h + 2 * self.pads[1]) * w))

    def _tall(self, x: torch.Tensor) -> torch.Tensor:
        """All depth slices of all items of `x` in one tall image, item-major; each item's
        block of rows starts at a multiple of the Winograd tile (so it is computed exactly as
        alone)."""
        n, c, d, h, w = x.shape
        kd, (kh, kw) = self.taps, self.weight.shape[2:]
        k_out = self.weight.shape[0] // kd
        pd, ph, pw = self.pads
        hb = h + 2 * ph                      # rows per slice block: ph zero rows, h rows, ph zero rows
        do, ho, wo = d + 2 * pd - kd + 1, hb - kh + 1, w + 2 * pw - kw + 1
        rows = _round_up(d * hb, WINOGRAD_TILE) if n > 1 else d * hb
        # kh − 1 tail rows so the 2-D output has exactly n·rows rows
        tall = x.new_zeros(1, c, n * rows + kh - 1, w)
        tall[0, :, :n * rows].view(c, n, rows, w)[:, :, :d * hb].unflatten(2, (d, hb))[:, :, :, ph:ph + h] = \
            x.float().transpose(0, 1)
        taps = torch._nnpack_spatial_convolution(tall, self.weight, self.no_bias, [0, pw], [1, 1])
        taps = taps.view(kd, k_out, n, rows, wo)[:, :, :, :d * hb].unflatten(3, (d, hb))
        out = self.bias.view(1, -1, 1, 1, 1).expand(n, k_out, do, ho, wo).contiguous()
        for t in range(kd):
            lo, hi = max(0, pd - t), min(do, d + pd - t)   # output slices whose input slice exists
            if hi > lo:
                out[:, :, lo:hi] += taps[t, :, :, lo + t - pd:hi + t - pd, :ho].transpose(0, 1)
        return out


class ShiftAddConv2d(nn.Module):
    """`conv` (stride 1, groups 1, K·k² small, C large) as `T = W[K·k², C] @ x[C, H·W]` followed
    by k² shifted adds of the tap maps. `[N,C,H,W]` float32 → `[N,K,Ho,Wo]`."""

    MAX_TAP_MAPS = 64   # K·kh·kw: beyond this the shifted adds cost more than they save
    MIN_CHANNELS = 512

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k_out, c, kh, kw = conv.weight.shape
        self.register_buffer("wmat", conv.weight.detach().float().permute(0, 2, 3, 1).reshape(k_out * kh * kw, c)
                             .contiguous())
        self.register_buffer("bias", _float_bias(conv))
        self.kernel, self.padding = (kh, kw), _tuple(conv.padding, 2)

    @classmethod
    def eligible(cls, conv: nn.Module) -> bool:
        if not isinstance(conv, nn.Conv2d) or type(conv.padding) is str or conv.groups != 1:
            return False
        kh, kw = conv.kernel_size
        return (all(s == 1 for s in conv.stride) and all(d == 1 for d in conv.dilation)
                and conv.padding_mode == "zeros" and conv.in_channels >= cls.MIN_CHANNELS
                and conv.out_channels * kh * kw <= cls.MAX_TAP_MAPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        k_out = self.wmat.shape[0] // (kh * kw)
        ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        taps = torch.matmul(self.wmat, x.float().reshape(n, c, h * w)).view(n, k_out, kh, kw, h, w)
        out = self.bias.view(1, -1, 1, 1).expand(n, k_out, ho, wo).contiguous()
        for dy in range(kh):
            # output row y reads input row y + dy − ph: the rows where that exists
            y0, y1 = max(0, ph - dy), min(ho, h + ph - dy)
            for dx in range(kw):
                x0, x1 = max(0, pw - dx), min(wo, w + pw - dx)
                if y1 > y0 and x1 > x0:
                    out[:, :, y0:y1, x0:x1] += taps[:, :, dy, dx, y0 + dy - ph:y1 + dy - ph, x0 + dx - pw:x1 + dx - pw]
        return out


def _fast_conv(conv: nn.Module):
    """The faster float32 version of `conv` (NNPACK where available, shift-add for few-output
    layers), or None when it has none."""
    if eligible(conv):
        return (NNPackConv3d if isinstance(conv, nn.Conv3d) else NNPackConv2d)(conv)
    return ShiftAddConv2d(conv) if ShiftAddConv2d.eligible(conv) else None


def replace_convs(net: nn.Module) -> int:
    """Swap every eligible Conv2d / Conv3d of `net` (in place) for its faster float32 version.
    Returns the number swapped."""
    return swap_modules(net, _fast_conv)
