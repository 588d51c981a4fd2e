"""Shared building blocks of the LivePortrait networks (docs/ARCHITECTURE.md, Networks).

All blocks are inference-only: batch norms always use their running statistics and
spectral-normalised convs always use the eval-mode weight, whatever `module.training` says, so a
forgotten `.eval()` can neither change results nor mutate buffers.

Precision policy for modules cast to float16 / bfloat16 (`.to(dtype)`): convolutions and linear
layers run in the module dtype (except float16 on CPU, see accel/half.py); numerically sensitive
reductions (layer-norm statistics, GRN norms, the spectral-norm divisor) are computed in float32
and cast back (instance norm: PyTorch already accumulates in float32). Outputs keep the input
dtype. In float32 every block performs the reference's operations in the reference's order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Conv2d / Conv3d / Linear: `torch.nn` layers (same keys) that compute CPU float16 in float32
# (reduced-precision storage policy, see accel/half.py); float32 is torch's own computation.
from ..accel.half import Conv2d, Conv3d, Linear, compute_dtype

__all__ = ["Conv2d", "Conv3d", "Linear", "upcast", "BatchNorm2d", "BatchNorm3d", "LayerNormLast",
           "LayerNormFirst", "GRN", "instance_norm", "SNConv2d", "SameBlock2d", "DownBlock2d",
           "DownBlock3d", "UpBlock3d", "ResBlock3d"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 → float32; any other dtype unchanged (float64 stays float64)."""
    return x.float() if x.dtype in _LOW_PRECISION else x


# --------------------------------------------------------------------------------------------
# Normalisation layers


class _EvalBatchNorm:
    """Mixin: batch norm with running statistics only (eval semantics, eps from the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class BatchNorm2d(_EvalBatchNorm, nn.BatchNorm2d):
    """`nn.BatchNorm2d(C)` (eps 1e-5, same keys) that always normalises with running stats."""


class BatchNorm3d(_EvalBatchNorm, nn.BatchNorm3d):
    """`nn.BatchNorm3d(C)` (eps 1e-5, same keys) that always normalises with running stats."""


class LayerNormLast(nn.Module):
    """Layer norm over the last dim of a channels-last tensor (`LN_last`), eps 1e-6, affine.

    Keys `weight`, `bias` of shape (C,). Statistics in float32 for low-precision inputs.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        y = F.layer_norm(xf, (xf.shape[-1],), self.weight.to(xf.dtype), self.bias.to(xf.dtype),
                         self.eps)
        return y.to(x.dtype)


class LayerNormFirst(nn.Module):
    """Layer norm over dim 1 of an NCHW tensor (`LN_first`), eps 1e-6, affine.

    Computed explicitly as the reference does: u = mean_c(x), s = mean_c((x-u)^2),
    (x-u)/sqrt(s+eps)·w[c] + b[c].
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        u = xf.mean(1, keepdim=True)
        s = (xf - u).pow(2).mean(1, keepdim=True)
        y = (xf - u) / torch.sqrt(s + self.eps)
        w = self.weight.to(xf.dtype)[:, None, None]
        b = self.bias.to(xf.dtype)[:, None, None]
        return (w * y + b).to(x.dtype)


class GRN(nn.Module):
    """ConvNeXt-V2 global response norm on channels-last `x (B,H,W,C)`.

    G = ‖x‖₂ over (H,W); N = G / (mean_C(G) + 1e-6); y = γ·(x·N) + β + x. Keys `gamma`, `beta`
    of shape (1,1,1,C). Computed in float32 for low-precision inputs (a sum of squares over
    H·W values overflows float16).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = upcast(x)
        g = torch.linalg.vector_norm(xf, 2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        y = self.gamma.to(xf.dtype) * (xf * n) + self.beta.to(xf.dtype) + xf
        return y.to(x.dtype)


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Affine-free instance norm (biased variance, per sample and channel).

    PyTorch's instance norm already accumulates float16 / bfloat16 statistics in float32
    (measured: within 1 ulp of normalising an upcast copy), so no float32 copy is made here.
    """
    return F.instance_norm(x, eps=eps)


# --------------------------------------------------------------------------------------------
# Spectral-normalised convolution


class SNConv2d(nn.Module):
    """Conv2d whose weight is spectrally normalised with the *stored* power-iteration vectors.

    Keys (upstream hook-API layout): `bias` (if any), `weight_orig (out,in,k,k)`,
    `weight_u (out,)`, `weight_v (in·k·k,)`. Eval weight, recomputed in float32 on every call from
    the current tensors (so reloading weights or changing dtype/device can never leave a stale
    copy, and nothing ever writes to u / v):
        σ = u · (weight_orig.reshape(out, -1) @ v);   W_eff = weight_orig / σ
    The cost (one mat-vec and one division per conv) is well under 1 % of the conv itself.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding = kernel_size, padding
        # Registration order = upstream key order: bias, weight_orig, then the u/v buffers.
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight_orig, a=5 ** 0.5)
        u = torch.randn(out_channels)
        v = torch.randn(in_channels * kernel_size * kernel_size)
        self.register_buffer("weight_u", u / u.norm())
        self.register_buffer("weight_v", v / v.norm())

    def sigma(self) -> torch.Tensor:
        """Eval-mode divisor σ = u·(W v) as a float32 (float64 if the module is float64) scalar."""
        w = upcast(self.weight_orig)
        return torch.dot(self.weight_u.to(w.dtype), torch.mv(w.reshape(w.shape[0], -1),
                                                             self.weight_v.to(w.dtype)))

    def eval_weight(self) -> torch.Tensor:
        """W_eff = weight_orig / σ, in float32 (float64 if the module is float64)."""
        return upcast(self.weight_orig) / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cdt = compute_dtype(x)  # CPU float16 computes in float32 (accel/half.py)
        w = self.eval_weight().to(cdt)
        b = None if self.bias is None else self.bias.to(cdt)
        return F.conv2d(x.to(cdt), w, b, padding=self.padding).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, bias={self.bias is not None}")


# --------------------------------------------------------------------------------------------
# Conv blocks


class SameBlock2d(nn.Module):
    """conv 3×3 pad 1 → BN → ReLU (LeakyReLU(0.01) if `lrelu`). Keys `conv.*`, `norm.*`."""

    def __init__(self, cin: int, cout: int, lrelu: bool = False):
        super().__init__()
        self.conv = Conv2d(cin, cout, 3, padding=1)
        self.norm = BatchNorm2d(cout)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x, 0.01) if self.lrelu else F.relu(x)


class DownBlock2d(nn.Module):
    """conv 3×3 pad 1 → BN → ReLU → AvgPool 2×2: (B,cin,H,W) → (B,cout,H/2,W/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv2d(cin, cout, 3, padding=1)
        self.norm = BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """conv3d 3³ pad 1 → BN3d → ReLU → AvgPool (1,2,2): depth kept, H and W halved."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3d(cin, cout, 3, padding=1)
        self.norm = BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))
        # AvgPool3d (1,2,2) as a 2-D pool over (B, C·D, H, W): identical values (same 4-term
        # mean), and unlike avg_pool3d it has CPU bfloat16 / float16 kernels.
        b, c, d, h, w = x.shape
        return F.avg_pool2d(x.reshape(b, c * d, h, w), kernel_size=2).view(b, c, d, h // 2, w // 2)


class UpBlock3d(nn.Module):
    """nearest upsample (1,2,2) → conv3d 3³ pad 1 → BN3d → ReLU: depth kept, H and W doubled."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv3d(cin, cout, 3, padding=1)
        self.norm = BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(ReLU(BN2(conv1(ReLU(BN1(x)))))), convs 3³ C→C."""

    def __init__(self, channels: int):
        super().__init__()
        # Registration order = key order: conv1, conv2, norm1, norm2.
        self.conv1 = Conv3d(channels, channels, 3, padding=1)
        self.conv2 = Conv3d(channels, channels, 3, padding=1)
        self.norm1 = BatchNorm3d(channels)
        self.norm2 = BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return x + y
