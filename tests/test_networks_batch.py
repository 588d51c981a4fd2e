"""Batch invariance, inference-only semantics and reduced-precision runs of the networks.

(W's and G's batch behaviour is checked inside tests/test_networks_parity.py, on the fixture
inputs: W with the upstream batch-of-2 fixture, G with a batch of 2 against a batch-1 call.)
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import synth_weights
from networks_fixtures import planes_to_f16, reference
from test_networks_parity import build, image_batch
from liveportrait_core.networks.blocks import SameBlock2d, SNConv2d
from liveportrait_core.networks.warping_module import coordinate_grid


def _sn_conv(seed: int) -> SNConv2d:
    """A G_middle-sized spectral-norm conv loaded with the SEED=`seed` synthetic tensors."""
    sd = synth_weights.state_dicts(seed)["spade_generator"]
    conv = SNConv2d(64, 64, 3, padding=1)
    conv.load_state_dict({k.removeprefix("up_1.conv_1."): v for k, v in sd.items()
                          if k.startswith("up_1.conv_1.")}, strict=True)
    return conv


def _sn_reference(conv: SNConv2d, x: torch.Tensor) -> torch.Tensor:
    """Independent float64 evaluation of the eval-mode spectral-norm conv."""
    w = conv.weight_orig.double()
    sigma = conv.weight_u.double() @ (w.reshape(w.shape[0], -1) @ conv.weight_v.double())
    return torch.nn.functional.conv2d(x.double(), w / sigma, conv.bias.double(), padding=1)


def test_spectral_norm_never_mutates_u_v_and_ignores_training_mode():
    conv = _sn_conv(0)
    u, v = conv.weight_u.clone(), conv.weight_v.clone()
    x = torch.randn(2, 64, 9, 9, generator=torch.Generator().manual_seed(1))
    conv.train()
    with torch.no_grad():
        y_train = conv(x)
    conv.eval()
    with torch.no_grad():
        y_eval = conv(x)
    assert torch.equal(conv.weight_u, u) and torch.equal(conv.weight_v, v)
    assert torch.equal(y_train, y_eval)
    assert (y_eval.double() - _sn_reference(conv, x)).abs().max() < 1e-5


def test_spectral_norm_follows_reloaded_weights_dtype_and_in_place_edits():
    x = torch.randn(1, 64, 8, 8, generator=torch.Generator().manual_seed(2))
    conv = _sn_conv(0)
    with torch.no_grad():
        y0 = conv(x)
        other = _sn_conv(1)
        conv.load_state_dict(other.state_dict())  # reload (in-place copy_ into the same tensors)
        assert torch.equal(conv(x), other(x))
        assert not torch.allclose(conv(x), y0)
        conv.weight_orig.mul_(2.0)  # σ doubles too: the eval weight is scale invariant
        assert torch.allclose(conv(x), other(x), atol=1e-5)
        conv.weight_u.neg_()  # σ changes sign → the output's conv part flips sign
        assert torch.allclose(conv(x) - conv.bias[:, None, None],
                              -(other(x) - other.bias[:, None, None]), atol=1e-5)
    conv = _sn_conv(1).double()
    with torch.no_grad():
        y = conv(x.double())
    assert y.dtype == torch.float64
    assert (y - _sn_reference(conv, x)).abs().max() < 1e-12
    conv = _sn_conv(1).to(torch.bfloat16)
    with torch.no_grad():
        y = conv(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert (y.double() - _sn_reference(_sn_conv(1), x)).abs().max() < 0.05


def test_batch_norm_always_uses_running_statistics():
    block = SameBlock2d(3, 8)
    torch.nn.init.normal_(block.norm.running_mean)
    before = block.norm.running_mean.clone()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    block.train()
    y_train = block(x)
    block.eval()
    assert torch.equal(block.norm.running_mean, before)
    assert torch.equal(y_train, block(x))


def test_coordinate_grid_is_corner_aligned_xyz():
    g = coordinate_grid(3, 4, 5)
    assert g.shape == (3, 4, 5, 3)
    assert torch.equal(g[0, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.equal(g[2, 3, 4], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(g[1, 2, 1], torch.tensor([-0.5, 1 / 3, 0.0]))


@pytest.fixture(scope="module")
def two_images() -> torch.Tensor:
    ref, _ = reference("motion_extractor")
    return image_batch(ref["input_u8"][:2])  # source crop + driving frame 0


def test_appearance_feature_extractor_batch_equals_per_item(two_images):
    model = build("appearance_feature_extractor")
    with torch.no_grad():
        batched = model(two_images)
        singles = torch.cat([model(two_images[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 32, 16, 64, 64)
    assert torch.equal(batched, singles)


def _emulated(dtype: torch.dtype) -> bool:
    """bfloat16 on a CPU without native bf16: oneDNN emulates it, several hundred times slower
    than float32 (measured), so full-size networks would take many minutes; the same code
    paths are then checked on small inputs against float32 instead."""
    from liveportrait_core.accel.precision import bf16_supported_cpu

    return dtype == torch.bfloat16 and not bf16_supported_cpu()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_f_and_m_run_in_reduced_precision(two_images, dtype):
    images = two_images[:, :, ::4, ::4].contiguous() if _emulated(dtype) else two_images
    for name, tol in (("appearance_feature_extractor", 0.05), ("motion_extractor", 0.05)):
        model = build(name)
        with torch.no_grad():
            ref = model(images)
            model.to(dtype)
            low = model(images.to(dtype))
        pairs = [(ref, low)] if name != "motion_extractor" else [(ref[k], low[k]) for k in ref]
        for r, lo in pairs:
            assert lo.dtype == dtype and torch.isfinite(lo).all()
            # error relative to the output's scale
            rel = (lo.float() - r).abs().max() / r.abs().max()
            assert rel < tol, (name, float(rel))


def test_g_runs_in_bfloat16_on_a_small_map():
    """G cast to bfloat16 against itself in float32 on a 4×4 map (affordable where bf16 is
    emulated; where it is native the full-fixture test below covers W and G)."""
    torch.manual_seed(0)
    g = build("spade_generator")
    seg = torch.rand(1, 256, 4, 4) - 0.5
    with torch.no_grad():
        ref = g(seg)
        img = g.to(torch.bfloat16)(seg.bfloat16())
    assert img.dtype == torch.bfloat16 and img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    rel = float((img.float() - ref).abs().max() / ref.abs().max())
    assert rel < 0.05, rel  # bf16 round-off; a wrong op gives O(1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_w_and_g_run_in_reduced_precision(dtype):
    """W and G cast to `dtype`, on the fixture inputs, against the float32 fixture outputs."""
    if _emulated(dtype):
        pytest.skip("bfloat16 is emulated on this CPU (W+G would take tens of minutes); runs where "
                    "bf16 is native, and G's bf16 path is checked on a small map above")
    ref_w, full_w = reference("warping_module")
    ref_g, _ = reference("spade_generator")
    feature_g = torch.from_numpy(planes_to_f16(ref_g["feature_f16_planes"],
                                               tuple(ref_g["feature_shape"])).astype(np.float32))
    if full_w is not None:
        feature_w = torch.from_numpy(full_w["feature_3d_f16"].astype(np.float32))
    else:
        with torch.no_grad():
            feature_w = build("appearance_feature_extractor")(
                image_batch(reference("appearance_feature_extractor")[0]["input_u8"])).half().float()
    w = build("warping_module").to(dtype)
    g = build("spade_generator").to(dtype)
    with torch.no_grad():
        o = w(feature_w.to(dtype), kp_source=torch.from_numpy(ref_w["kp_source"]).to(dtype),
              kp_driving=torch.from_numpy(ref_w["kp_driving"]).to(dtype))
        img = g(feature_g.to(dtype))
    assert o["out"].dtype == dtype and img.dtype == dtype
    out_err = (o["out"][:, ::2, ::5, ::5].float().numpy() - ref_w["out_sub"])
    occ_err = (o["occlusion_map"].float().numpy() - ref_w["occlusion_map"])
    def_err = (o["deformation"][:, ::3, ::5, ::5].float().numpy() - ref_w["deformation_sub"])
    img_err = (img[:, :, ::5, ::5].float().numpy() - ref_g["output_sub"])
    # Bounds ≈ 3× the errors measured here (bf16: out 5e-3, occ 4e-3, deformation 4.5e-3 ≈ 0.14 px,
    # image max 0.09 / mean 0.009; fp16 about 10× smaller), far below what a wrong op would give.
    lim = {torch.bfloat16: (0.02, 0.012, 0.015, 0.25, 0.025),
           torch.float16: (0.003, 0.0012, 0.002, 0.03, 0.003)}[dtype]
    assert np.abs(out_err).max() < lim[0]
    assert np.abs(occ_err).max() < lim[1]
    assert np.abs(def_err).max() < lim[2]
    assert np.abs(img_err).max() < lim[3] and np.abs(img_err).mean() < lim[4]


def test_warping_module_rejects_mismatched_keypoints():
    from liveportrait_core.errors import InputError
    from liveportrait_core.networks import WarpingModule
    w = WarpingModule()
    f = torch.zeros(2, 32, 16, 64, 64)
    with pytest.raises(InputError, match="kp_driving must have shape \\(2, 21, 3\\)"):
        w(f, kp_source=torch.zeros(2, 21, 3), kp_driving=torch.zeros(1, 21, 3))
