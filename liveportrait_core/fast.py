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
* Optionally (float32 on CPUs without fast bf16) the wide k×k / k×k×k convolutions computed by
  NNPACK's Winograd / FFT kernels (fast_convs.py: ~5× fewer products, float32 round-off only).

Callers keep the prepared copy on the object that owns the models (the Animator); nothing is
cached by object identity here.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from .fast_convs import PACK_PIXELS, replace_convs

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _sn_conv_to_plain(m: nn.Module) -> Optional[nn.Conv2d]:
    """A plain Conv2d equal to an SN-conv module holding `weight_orig/weight_u/weight_v`."""
    w = m.weight_orig.detach().float()
    if w.dim() != 4:
        return None
    sigma = torch.dot(m.weight_u.detach().float(), torch.mv(w.reshape(w.shape[0], -1), m.weight_v.detach().float()))
    bias = getattr(m, "bias", None)
    pad = getattr(m, "padding", 0)
    conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=pad, bias=bias is not None)
    conv.weight = nn.Parameter(w / sigma, requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
    return conv


def materialize_spectral_norm(net: nn.Module) -> int:
    """Replace every spectral-normalised weight in `net` (in place) by its eval weight.

    Handles the torch hook API, the parametrization API and custom SN-conv modules that hold
    `weight_orig`, `weight_u`, `weight_v` (replaced by a plain Conv2d with
    `W_eff = weight_orig / (u·(W v))`, ARCHITECTURE.md §1). Returns the number converted.
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm

    if net.training:
        raise RuntimeError("materialize_spectral_norm needs an eval-mode network")
    n = 0
    for m in list(net.modules()):
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                torch.nn.utils.remove_spectral_norm(m, hook.name)  # uses stored u, v (no iteration)
                n += 1
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                with torch.no_grad():
                    parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                n += 1
        for name, child in list(m._modules.items()):
            if child is not None and all(hasattr(child, k) for k in ("weight_orig", "weight_u", "weight_v")) \
                    and not isinstance(child, _CONVS):
                plain = _sn_conv_to_plain(child)
                if plain is not None:
                    m._modules[name] = plain
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


# (conv child, BN child) pairs where the BN is applied directly to that conv's output, by the
# reference's module layout (ARCHITECTURE.md §1, §4): conv→BN blocks, the dense-motion
# `compress`→`norm`, and the pre-activation ResBlock3d where `norm2` follows `conv1`.
FOLD_PAIRS = (("conv", "norm"), ("compress", "norm"), ("conv1", "norm2"))


def _probe_inputs(block: nn.Module):
    gen = torch.Generator().manual_seed(0)
    for c in block.children():
        if isinstance(c, _CONVS):
            spatial = (2, 8, 8) if isinstance(c, nn.Conv3d) else (8, 8) if isinstance(c, nn.Conv2d) else (16,)
            yield torch.randn((1, c.in_channels) + spatial, generator=gen, dtype=c.weight.dtype)


def _runs_same(block: nn.Module, swap) -> Optional[bool]:
    """Does `block` compute the same after `swap()`? None when it cannot be probed alone."""
    if type(block).forward is nn.Module.forward:
        return None  # a plain container (no forward of its own)
    for x in _probe_inputs(block):
        try:
            with torch.no_grad():
                ref = block(x)
        except Exception:  # noqa: BLE001 - wrong probe shape / needs more arguments
            continue
        swap()
        with torch.no_grad():
            got = block(x)
        scale = max(1.0, float(ref.abs().max()))
        return bool(torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * scale))
    return None


def fold_batchnorm(net: nn.Module) -> int:
    """Fold BN into the conv it directly follows (pairs of FOLD_PAIRS), in place.

    Each block that can run on its own is checked on a small random input and reverted when
    the output changes (so a BN that does not directly follow the conv is never folded);
    containers without a forward are folded by the layout rule alone. Returns pairs folded.
    """
    n = 0
    verdicts = {}  # (block class, pair) → probe result: one probe per block type (same forward code)
    for block in list(net.modules()):
        for conv_name, bn_name in FOLD_PAIRS:
            conv, bn = getattr(block, conv_name, None), getattr(block, bn_name, None)
            if not (isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.track_running_stats
                    and bn.running_var is not None and conv.out_channels == bn.num_features):
                continue

            def swap(block=block, conv_name=conv_name, bn_name=bn_name, conv=conv, bn=bn):
                setattr(block, conv_name, _fold(conv, bn))
                setattr(block, bn_name, nn.Identity())

            key = (type(block), conv_name, bn_name)
            if key in verdicts and verdicts[key] is not None:
                same = verdicts[key]
                if same:
                    swap()
            else:
                same = verdicts[key] = _runs_same(block, swap)
            if same is None and not isinstance(getattr(block, bn_name), nn.Identity):
                swap()
            elif same is False:
                setattr(block, conv_name, conv)
                setattr(block, bn_name, bn)
                continue
            n += 1
    return n


class _LowPrecisionPool3dBlock(nn.Module):
    """Stand-in for a `conv3d → BN → ReLU → AvgPool3d(1,2,2)` block (DownBlock3d) whose
    pooling has no bfloat16 CPU kernel: pools in float32 and casts back (one rounding)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv, self.norm = block.conv, block.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(self.conv(x)))
        if y.dtype in (torch.float16, torch.bfloat16) and y.device.type == "cpu":
            return torch.nn.functional.avg_pool3d(y.float(), kernel_size=(1, 2, 2)).to(y.dtype)
        return torch.nn.functional.avg_pool3d(y, kernel_size=(1, 2, 2))


def _replace_pool3d_blocks(net: nn.Module) -> int:
    """Swap DownBlock3d-like blocks for `_LowPrecisionPool3dBlock` after checking equality."""
    n, verified = 0, None
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if type(child).__name__ != "DownBlock3d" or not isinstance(getattr(child, "conv", None), nn.Conv3d):
                continue
            new = _LowPrecisionPool3dBlock(child)
            if verified is None:  # one probe: every instance runs the same forward code
                x = torch.randn(1, child.conv.in_channels, 2, 8, 8, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    verified = bool(torch.allclose(child(x), new(x), rtol=1e-5, atol=1e-6))
            if verified:
                parent._modules[name] = new
                n += 1
    return n


def _stacked_conv(like: nn.Conv2d, weights, biases) -> nn.Conv2d:
    """A copy of conv `like` whose outputs are the given weight / bias blocks, stacked in order
    (several convs of the same input as one, so the input is read and transformed once)."""
    conv = copy.deepcopy(like)
    with torch.no_grad():
        conv.weight = nn.Parameter(torch.cat([w.detach() for w in weights]), requires_grad=False)
        conv.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
    conv.out_channels = int(conv.weight.shape[0])
    return conv


class _FastSPADE(nn.Module):
    """Stand-in for SPADE (`IN(x)·(1+γ) + β`) in prepared copies.

    The `1+` is folded into the γ conv's bias and the modulation is one fused `addcmul`; the
    instance norm is a training-mode batch norm (same statistics, accumulated in float32 by
    PyTorch): of the N·C maps as channels for contiguous inputs, of each item alone for
    channels-last ones, whose CPU kernel then keeps the layout. The stock instance norm returns
    the default layout, and mixing layouts made G ~2× slower (measured).
    `fuse`: γ and β (two convs of the same input) become one conv with both outputs, so the
    input is read and transformed once (used by the float32 NNPACK path).
    """

    def __init__(self, spade: nn.Module, eps: float = 1e-5, fuse: bool = False,
                 then: Optional[nn.Conv2d] = None):
        super().__init__()
        self.mlp_shared, self.eps = spade.mlp_shared, eps
        gamma1 = copy.deepcopy(spade.mlp_gamma)
        with torch.no_grad():
            gamma1.bias.add_(1.0)
            if fuse or then is not None:
                beta_w, beta_b = spade.mlp_beta.weight.detach(), spade.mlp_beta.bias.detach()
                if then is not None:  # then(·) is linear: then(n·γ + β) = then(n·γ) + then∘β
                    if then.bias is not None or tuple(then.kernel_size) != (1, 1):
                        raise TypeError("only a bias-free 1×1 conv folds into β")
                    w_then = then.weight.detach().double()[:, :, 0, 0]
                    beta_w = torch.einsum("oc,cikl->oikl", w_then, beta_w.double()).to(beta_w.dtype)
                    beta_b = (w_then @ beta_b.double()).to(beta_b.dtype)
                    self.then = then
                self.mlp_gamma_beta = _stacked_conv(spade.mlp_beta, [gamma1.weight, beta_w], [gamma1.bias, beta_b])
                self.split = [gamma1.out_channels, beta_w.shape[0]]
            else:
                self.mlp_gamma, self.mlp_beta = gamma1, spade.mlp_beta

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if seg.shape[2:] != x.shape[2:]:
            seg = torch.nn.functional.interpolate(seg, size=x.shape[2:], mode="nearest")
        return self.modulate(x, self.mlp_shared(seg))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Instance norm of contiguous `x` [N,C,H,W]: one training-mode batch norm of the N·C
        maps as channels (per-map statistics, accumulated in float32 by PyTorch)."""
        n, c = x.shape[:2]
        return torch.nn.functional.batch_norm(x.reshape(1, n * c, *x.shape[2:]), None, None, training=True,
                                              eps=self.eps).view_as(x)

    def modulate(self, x: torch.Tensor, actv: torch.Tensor, normalized: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`IN(x)·(1+γ) + β` with γ, β from the hidden map `actv` (= ReLU(mlp_shared(seg))),
        or `then(IN(x)·(1+γ) + β)` when built with `then` (a bias-free 1×1 conv, folded into β:
        fewer β outputs when `then` narrows the channels, as G's learned shortcuts do).
        `normalized`: IN(x), when the caller has it already."""
        if hasattr(self, "mlp_gamma_beta"):
            gamma1, beta = self.mlp_gamma_beta(actv).split(self.split, dim=1)
        else:
            gamma1, beta = self.mlp_gamma(actv), self.mlp_beta(actv)
        if normalized is None and not x.is_contiguous() and not hasattr(self, "then"):  # channels-last
            out = torch.empty_like(gamma1)
            for i in range(x.shape[0]):  # per item: the batch norm keeps the layout
                xi = torch.nn.functional.batch_norm(x[i:i + 1], None, None, training=True, eps=self.eps)
                torch.addcmul(beta[i:i + 1], xi, gamma1[i:i + 1], out=out[i:i + 1])
            return out
        xn = normalized if normalized is not None else self.normalize(x)
        if hasattr(self, "then"):
            return self.then(xn * gamma1).add_(beta)
        return torch.addcmul(beta, xn, gamma1)


def _replace_spade(net: nn.Module) -> int:
    """Swap SPADE modules for `_FastSPADE` after checking (one probe, float32) equality."""
    n, verified = 0, None
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if type(child).__name__ != "SPADE" or not isinstance(getattr(child, "mlp_gamma", None), nn.Conv2d) \
                    or child.mlp_gamma.bias is None:
                continue
            new = _FastSPADE(child)
            if verified is None:  # one probe: every instance runs the same forward code
                gen = torch.Generator().manual_seed(0)
                label_nc = child.mlp_shared[0].in_channels
                x = 3.0 + torch.randn(2, child.mlp_gamma.out_channels, 8, 8, generator=gen)
                seg = torch.randn(2, label_nc, 4, 4, generator=gen)
                verified = _probe_same(child, new, x, seg)
            if verified:
                parent._modules[name] = new
                n += 1
    return n


class _FastSPADEResnetBlock(nn.Module):
    """Stand-in for a SPADEResnetBlock in float32 NNPACK copies: its two or three SPADEs read
    the same conditioning map, so their `mlp_shared` convs run as one conv with all outputs
    (one input transform instead of three: −136 ms at 256², measured), and each SPADE
    modulates with its slice (`_FastSPADE(fuse=True)`, γ|β as one conv). The shortcut's
    bias-free 1×1 `conv_s` is folded into its SPADE's β (`then`): at 256² the β conv makes 64
    instead of 256 maps."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        names = ["norm_0", "norm_1"] + (["norm_s"] if self.learned_shortcut else [])
        spades = [_FastSPADE(getattr(block, k), fuse=True, then=block.conv_s if k == "norm_s" else None)
                  for k in names]
        convs = [sp.mlp_shared[0] for sp in spades]
        self.mlp_shared = _stacked_conv(convs[0], [c.weight for c in convs], [c.bias for c in convs])
        self.hidden = [c.out_channels for c in convs]
        for k, sp in zip(names, spades):
            del sp.mlp_shared  # computed here, once for all
            setattr(self, k, sp)
        self.conv_0, self.conv_1 = block.conv_0, block.conv_1

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1 and 2 * x.shape[2] * x.shape[3] > PACK_PIXELS:
            # maps too large to share NNPACK calls: the block one item at a time (batched, a
            # 256² block's maps overflow the caches, and each conv would concatenate its
            # per-item outputs: batch 4 ran 10-20 % slower per frame, measured)
            return torch.cat([self(x[i:i + 1], seg[i:i + 1]) for i in range(x.shape[0])])
        if seg.shape[2:] != x.shape[2:]:
            seg = torch.nn.functional.interpolate(seg, size=x.shape[2:], mode="nearest")
        lrelu = torch.nn.functional.leaky_relu_  # in place: fresh maps, 17-100 MB per item at 256²
        actv = torch.relu_(self.mlp_shared(seg)).split(self.hidden, dim=1)
        xn = self.norm_0.normalize(x)  # norm_0 and norm_s normalise the same x (same eps)
        xs = self.norm_s.modulate(x, actv[2], xn) if self.learned_shortcut else x  # conv_s included
        dx = self.conv_0(lrelu(self.norm_0.modulate(x, actv[0], xn), 0.2))
        dx = self.conv_1(lrelu(self.norm_1.modulate(dx, actv[1]), 0.2))
        return xs + dx


def _probe_same(ref_mod: nn.Module, new_mod: nn.Module, x: torch.Tensor, seg: torch.Tensor) -> bool:
    with torch.no_grad():
        ref, got = ref_mod(x, seg), new_mod(x, seg)
    return bool(torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max()))))


def _replace_spade_blocks(net: nn.Module) -> int:
    """Swap SPADEResnetBlocks for `_FastSPADEResnetBlock` after checking equality on one probe
    per (fin, fout) shape; blocks that do not match the expected layout are left alone."""
    n, verdicts = 0, {}
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if type(child).__name__ != "SPADEResnetBlock":
                continue
            try:
                new = _FastSPADEResnetBlock(child)
            except (AttributeError, IndexError, TypeError):  # not the expected layout
                continue
            key = (child.conv_0.in_channels, child.conv_1.out_channels)
            if key not in verdicts:
                gen = torch.Generator().manual_seed(0)
                x = 3.0 + torch.randn(1, key[0], 8, 8, generator=gen)
                seg = torch.randn(1, new.mlp_shared.in_channels, 4, 4, generator=gen)
                verdicts[key] = _probe_same(child, new, x, seg)
            if verdicts[key]:
                parent._modules[name] = new
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
    # Input-casting hooks of the loaded network would round keypoints to the low dtype; the
    # caller of a prepared copy passes features in `dtype` and keypoints in float32 itself.
    for k, hook in list(m._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_cast_inputs":
            del m._forward_pre_hooks[k]
            m._forward_pre_hooks_with_kwargs.pop(k, None)
    materialize_spectral_norm(m)
    if fold:
        fold_batchnorm(m)
    spade = 0
    if nnpack and dtype == torch.float32 and device.type == "cpu":
        _replace_spade_blocks(m)  # before the conv swap, so the fused convs are swapped too
        replace_convs(m)
    if dtype in (torch.float16, torch.bfloat16) and device.type == "cpu":
        _replace_pool3d_blocks(m)  # torch has no bf16/fp16 CPU avg_pool3d kernel
        spade = _replace_spade(m)
    m = m.to(device=device, dtype=dtype)
    # With the layout-keeping SPADE, channels-last is what makes G fast (bf16, measured ~1.5×
    # against the default layout), so a network with swapped SPADEs is stored channels-last.
    if spade:  # inputs too: a default-layout conditioning map would be converted at every SPADE
        m.register_forward_pre_hook(_inputs_channels_last)
    if memory_channels_last or spade:
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
