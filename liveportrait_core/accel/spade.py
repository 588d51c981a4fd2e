"""Stand-ins for G's SPADE layers in derived copies (accel/derive.py): same function, faster.

* `FastSPADE` (bf16 / fp16 on CPU): `IN(x)·(1+γ) + β` with the `1+` folded into γ's bias, one
  fused `addcmul`, and an instance norm that keeps the channels-last layout.
* `FastSPADEResnetBlock` (float32 NNPACK copies): the block's SPADEs share one `mlp_shared`
  conv, γ|β are one conv, and the shortcut's 1×1 conv is folded into its SPADE's β.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..networks.spade_generator import SPADE, SPADEResnetBlock
from .nnpack import PACK_PIXELS
from .swap import swap_modules


def _stacked_conv(like: nn.Conv2d, weights, biases) -> nn.Conv2d:
    """A copy of conv `like` whose outputs are the given weight / bias blocks, stacked in order
    (several convs of the same input as one, so the input is read and transformed once)."""
    conv = copy.deepcopy(like)
    with torch.no_grad():
        conv.weight = nn.Parameter(torch.cat([w.detach() for w in weights]), requires_grad=False)
        conv.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
    conv.out_channels = int(conv.weight.shape[0])
    return conv


class FastSPADE(nn.Module):
    """Stand-in for SPADE (`IN(x)·(1+γ) + β`) in prepared copies.

    The `1+` is folded into the γ conv's bias and the modulation is one fused `addcmul`; the
    instance norm is a training-mode batch norm (same statistics, accumulated in float32 by
    PyTorch): of the N·C maps as channels for contiguous inputs, of each item alone for
    channels-last ones, whose CPU kernel then keeps the layout. The stock instance norm returns
    the default layout, and mixing layouts slows G down a lot (benchmarks/networks.py).
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


class FastSPADEResnetBlock(nn.Module):
    """Stand-in for a SPADEResnetBlock in float32 NNPACK copies: its two or three SPADEs read
    the same conditioning map, so their `mlp_shared` convs run as one conv with all outputs
    (one input transform instead of three), and each SPADE
    modulates with its slice (`FastSPADE(fuse=True)`, γ|β as one conv). The shortcut's
    bias-free 1×1 `conv_s` is folded into its SPADE's β (`then`): at 256² the β conv makes 64
    instead of 256 maps."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        names = ["norm_0", "norm_1"] + (["norm_s"] if self.learned_shortcut else [])
        spades = [FastSPADE(getattr(block, k), fuse=True, then=block.conv_s if k == "norm_s" else None)
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
            # per-item outputs; benchmarks/networks.py times both)
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


def replace_spade(net: nn.Module) -> int:
    """Swap every `SPADE` of `net` (in place) for a `FastSPADE`. Returns the number swapped."""
    return swap_modules(net, lambda m: FastSPADE(m) if isinstance(m, SPADE) else None)


def replace_spade_blocks(net: nn.Module) -> int:
    """Swap every `SPADEResnetBlock` of `net` (in place, spectral norm already materialised)
    for a `FastSPADEResnetBlock`. Returns the number swapped."""
    return swap_modules(net, lambda m: FastSPADEResnetBlock(m) if isinstance(m, SPADEResnetBlock) else None)
