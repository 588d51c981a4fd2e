"""NNPACK-backed float32 convolutions of the 'fast' precision (liveportrait_core/accel/nnpack.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from liveportrait_core.accel.nnpack import (MIN_SIDE, MIN_SIDE_3D, NNPackConv2d, NNPackConv3d, eligible,
                                           nnpack_available, replace_convs)

pytestmark = pytest.mark.skipif(not nnpack_available(), reason="this torch build has no NNPACK")


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("cin,cout,k,pad,bias,shape", [
    (64, 64, 3, 1, True, (2, 64, 13, 11)),     # batch of 2, sides not multiples of the tile
    (64, 96, 3, 1, False, (1, 64, 16, 16)),    # no bias
    (24, 16, 7, 3, True, (1, 24, 12, 10)),     # 7×7 (NNPACK's FFT path)
])
def test_conv2d_matches_stock_convolution(cin, cout, k, pad, bias, shape, monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, padding=pad, bias=bias).eval()
    x = torch.randn(shape)
    calls, nnpack = [], torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(1) or nnpack(*a))
    with torch.inference_mode():
        ref, got = conv(x), NNPackConv2d(conv)(x)
    assert len(calls) == 1  # a batch of 3×3 convolutions: the items side by side in one call
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert _rel_err(got, ref) < 1e-4
    # each item is computed exactly as alone (bit-identical at any batch size)
    with torch.inference_mode():
        for i in range(shape[0]):
            assert torch.equal(NNPackConv2d(conv)(x[i:i + 1]), got[i:i + 1])


@pytest.mark.parametrize("cin,cout,k,pad,shape", [
    (64, 64, 3, 1, (2, 64, 5, 17, 16)),        # W's 3³ convolutions: depth padding 1, batch 2
    (32, 22, 7, 3, (1, 32, 6, 16, 18)),      # W's 7³ mask convolution (depth < kernel)
    (32, 22, 7, 3, (2, 32, 6, 16, 18)),      # …batch of 2: one call per item (FFT path)
])
def test_conv3d_matches_stock_convolution(cin, cout, k, pad, shape, monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv3d(cin, cout, k, padding=pad).eval()
    x = torch.randn(shape)
    calls, nnpack = [], torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: calls.append(1) or nnpack(*a))
    with torch.inference_mode():
        ref, got = conv(x), NNPackConv3d(conv)(x)
    # one 2-D call with all depth taps (not the fallback); 3×3 kernels: all items in it too
    assert len(calls) == (1 if k == 3 else shape[0])
    assert got.shape == ref.shape
    assert _rel_err(got, ref) < 1e-4
    # items stay independent: each alone gives exactly what it gives in the batch
    with torch.inference_mode():
        for i in range(shape[0]):
            assert torch.equal(NNPackConv3d(conv)(x[i:i + 1]), got[i:i + 1])


def test_small_maps_use_the_stock_convolution_exactly():
    conv = nn.Conv3d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 4, MIN_SIDE_3D - 1, MIN_SIDE_3D - 1)
    with torch.inference_mode():
        assert torch.equal(NNPackConv3d(conv)(x), conv(x))
    x = x[..., : MIN_SIDE - 1, : MIN_SIDE - 1]
    conv2 = nn.Conv2d(64, 64, 3, padding=1).eval()
    with torch.inference_mode():
        assert torch.equal(NNPackConv2d(conv2)(x[:, :, 0]), conv2(x[:, :, 0]))


def test_eligibility_rules():
    assert eligible(nn.Conv2d(256, 128, 3, padding=1))
    assert eligible(nn.Conv3d(142, 22, 7, padding=3))        # large kernel: worth it with 22 outputs
    assert not eligible(nn.Conv2d(3, 64, 3, padding=1))      # too narrow (F's first convolution)
    assert not eligible(nn.Conv2d(128, 32, 3, padding=1))    # too few outputs for a 3×3
    assert eligible(nn.Conv3d(128, 32, 3, padding=1))        # …but a 3³ makes one call with 3·32
    assert not eligible(nn.Conv2d(256, 256, 1))              # 1×1: nothing to save
    assert not eligible(nn.Conv2d(256, 256, 3, stride=2, padding=1))
    assert not eligible(nn.Conv2d(256, 256, 3, padding=1, groups=2))
    assert not eligible(nn.Conv2d(2272, 1, 7, padding=3))     # one output channel


def test_replace_convs_swaps_only_eligible_layers_and_keeps_the_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                        nn.Conv2d(64, 8, 1)).eval()
    x = torch.rand(1, 3, 20, 20)
    with torch.inference_mode():
        ref = net(x)
        assert replace_convs(net) == 1
        got = net(x)
    assert isinstance(net[2], NNPackConv2d) and isinstance(net[0], nn.Conv2d)
    assert _rel_err(got, ref) < 1e-4


@pytest.mark.parametrize("shape,pad", [((1, 512, 12, 10), 3), ((2, 512, 9, 9), 1)])
def test_shift_add_conv_matches_stock_convolution(shape, pad):
    from liveportrait_core.accel.nnpack import ShiftAddConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 1, 7, padding=pad).eval()   # W's occlusion head shape (fewer channels)
    assert ShiftAddConv2d.eligible(conv) and not ShiftAddConv2d.eligible(nn.Conv2d(512, 8, 7))
    x = torch.randn(shape)
    with torch.inference_mode():
        ref, got = conv(x), ShiftAddConv2d(conv)(x)
    assert got.shape == ref.shape
    assert _rel_err(got, ref) < 1e-5


def test_an_input_nnpack_refuses_falls_back_to_the_stock_convolution(monkeypatch):
    conv2, conv3 = nn.Conv2d(64, 64, 3, padding=1).eval(), nn.Conv3d(64, 64, 3, padding=1).eval()
    fast2, fast3 = NNPackConv2d(conv2), NNPackConv3d(conv3)

    def refuse(*args, **kwargs):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", refuse)
    x = torch.randn(1, 64, 3, 16, 16)
    with torch.inference_mode():
        assert torch.equal(fast3(x), conv3(x))
        assert torch.equal(fast2(x[:, :, 0]), conv2(x[:, :, 0]))


@pytest.mark.parametrize("fin,fout", [(32, 32), (32, 16)])  # G's middle blocks / learned shortcut
def test_fused_spade_block_computes_the_block(fin, fout):
    from liveportrait_core.accel.derive import materialize_spectral_norm
    from liveportrait_core.accel.spade import FastSPADEResnetBlock as _FastSPADEResnetBlock
    from liveportrait_core.networks.spade_generator import SPADEResnetBlock

    torch.manual_seed(0)
    block = SPADEResnetBlock(fin, fout, label_nc=8).eval()
    materialize_spectral_norm(block)
    fused = _FastSPADEResnetBlock(block)
    assert fused.mlp_shared.out_channels == 128 * (3 if fin != fout else 2)
    if fin != fout:  # conv_s folded into the shortcut's β: γ for fin channels, β for fout
        assert fused.norm_s.mlp_gamma_beta.out_channels == fin + fout
    x, seg = 2.0 + torch.randn(2, fin, 12, 12), torch.randn(2, 8, 6, 6)
    with torch.inference_mode():
        ref, got = block(x, seg), fused(x, seg)
    assert _rel_err(got, ref) < 1e-5
