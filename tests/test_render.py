"""Rendering: end-to-end parity with the reference, batching, streaming, cancel, fast mode.

Full-size networks cost ~3-4 s per frame here, so the real-network tests share one set of
renders (module fixtures): the e2e base case in one batch of 3, the retarget case in batches
of 1, two base frames again with batch 1 (must be bit-identical), one frame in fast mode.
Plumbing (chunks, cancel, feature cache) uses tiny stand-in networks.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import compact_file, parity_file

from liveportrait_core.compose import ComposeOptions, KeypointPlan, compose
from liveportrait_core.extract import extract_motion
from liveportrait_core.images import crops_to_input, render_to_u8
from liveportrait_core.progress import Cancelled
from liveportrait_core.render import Animator

CASES = ("base", "retarget")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def models(weights_pth):
    from liveportrait_core.weights import load_models

    return load_models(weights_pth)


@pytest.fixture(scope="module")
def e2e():
    full = parity_file("e2e_image_to_video.npz")
    d = dict(np.load(full or compact_file("e2e_image_to_video.npz")))
    d["_full"] = full is not None
    return d


def _motions(models, d, case):
    src = extract_motion(models, torch.from_numpy(d["source_crop256_u8"])[None], fps=25.0,
                         eye_ratio=torch.from_numpy(d["c_s_eyes"]), lip_ratio=torch.from_numpy(d["c_s_lip"]))
    drv = extract_motion(models, torch.from_numpy(d["driving_frames_u8"]), fps=float(d["tpl_output_fps"]),
                         eye_ratio=torch.from_numpy(d["tpl_c_eyes"].reshape(3, 2)),
                         lip_ratio=torch.from_numpy(d["tpl_c_lip"].reshape(3, 1)), batch_size=2)
    opts = ComposeOptions(eye_retargeting=case == "retarget", lip_retargeting=case == "retarget")
    return compose(src, drv, models.stitching_retargeting, opts)


@pytest.fixture(scope="module")
def rendered(models, e2e):
    """Both e2e cases through extract → compose → Animator (uint8 and raw float output)."""
    out = {}
    src = torch.from_numpy(e2e["source_crop256_u8"])[None]
    for case, bs in (("base", 3), ("retarget", 1)):
        plan = _motions(models, e2e, case)
        raw = Animator(models, "exact", batch_size=bs).render(plan, src, output="raw")
        out[case] = (plan, raw)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# ------------------------------------------------------------------------ e2e parity


@pytest.mark.parametrize("case", CASES)
def test_e2e_keypoints_match_reference(rendered, e2e, case):
    plan, _ = rendered[case]
    assert len(plan) == 3 and plan.fps == 25.0
    np.testing.assert_allclose(plan.x_s.numpy(), e2e[f"{case}_x_s"][:, 0], atol=1e-4)
    np.testing.assert_allclose(plan.x_d.numpy(), e2e[f"{case}_x_d_final"][:, 0], atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_e2e_frames_match_reference(rendered, e2e, case):
    _, raw = rendered[case]
    ours = render_to_u8(raw).numpy()
    assert ours.shape == (3, 512, 512, 3) and ours.dtype == np.uint8
    if e2e["_full"]:
        pairs = [(ours, e2e[f"{case}_I_p_u8"])]
    else:
        pairs = [(ours[:, 208:304, 208:304], e2e[f"{case}_I_p_region_u8"]),
                 (ours[:, ::8, ::8], e2e[f"{case}_I_p_grid8_u8"])]
        flat = ours.reshape(3, -1).astype(np.float64)
        np.testing.assert_allclose(flat.mean(1), e2e[f"{case}_I_p_mean"], atol=0.02)
        np.testing.assert_allclose(flat.std(1), e2e[f"{case}_I_p_std"], atol=0.02)
    for got, ref in pairs:
        diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 2, f"{case}: max abs diff {diff.max()}"
        assert diff.mean() <= 0.05, f"{case}: mean abs diff {diff.mean()}"


def test_e2e_pasteback_frame0(rendered, e2e):
    from liveportrait_core.face.paste import paste_back

    crop0 = render_to_u8(rendered["base"][1][:1]).numpy()
    M = e2e["source_M_c2o"].astype(np.float32)
    if e2e["_full"]:
        y0, x0 = 0, 0
        photo, ref = e2e["source_image_u8"], e2e["base_pasteback0_u8"]
    else:  # paste into the mask's bounding box only (outside it the photo is unchanged)
        y0, y1, x0, x1 = (int(v) for v in e2e["paste_box"])
        photo, ref = e2e["paste_source_u8"], e2e["base_pasteback0_box_u8"]
        M = (np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float32) @ M).astype(np.float32)
    out, _ = paste_back(photo, crop0, M)
    diff = np.abs(out[0].astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 2 and (diff == 0).mean() >= 0.99, (diff.max(), (diff == 0).mean())


def test_batch_size_does_not_change_frames(models, rendered, e2e):
    plan, raw3 = rendered["base"]  # rendered as one batch of 3
    sub = KeypointPlan(plan.x_s[2:], plan.x_d[2:], plan.source_index[2:], plan.fps)
    raw1 = Animator(models, "exact", batch_size=1).render(sub, torch.from_numpy(e2e["source_crop256_u8"])[None],
                                                          output="raw")
    assert torch.equal(raw1, raw3[2:])  # the last item of a batch of 3, rendered alone: bit-identical


def test_fast_mode_close_to_exact(models, rendered, e2e):
    plan, raw = rendered["base"]
    sub = KeypointPlan(plan.x_s[1:3], plan.x_d[1:3], plan.source_index[1:3], plan.fps)
    from liveportrait_core.accel.precision import bf16_supported_cpu
    from liveportrait_core.accel.nnpack import NNPackConv2d, NNPackConv3d, nnpack_available

    src = torch.from_numpy(e2e["source_crop256_u8"])[None]
    fast = Animator(models, "fast", batch_size=2)
    assert fast.dtype == (torch.bfloat16 if bf16_supported_cpu() else torch.float32)
    got_raw = fast.render(sub, src, output="raw")  # one batch of 2 frames
    got, exact = render_to_u8(got_raw).numpy(), render_to_u8(raw[1:3]).numpy()
    psnr = _psnr(got, exact)
    # measured ≈35 dB with bfloat16 (the reference's fp16 autocast gives ≈30 dB vs its float32)
    assert psnr > 30.0, psnr
    if fast.dtype == torch.float32 and nnpack_available():
        # float32 with NNPACK's Winograd / FFT convolutions: only transform round-off differs
        kinds = {type(m) for net in fast._networks().values() for m in net.modules()}
        assert {NNPackConv2d, NNPackConv3d} <= kinds
        assert psnr > 50.0, psnr
        # the batch of 2 shares NNPACK calls, yet each frame is exactly what it is alone
        one = KeypointPlan(plan.x_s[2:3], plan.x_d[2:3], plan.source_index[2:3], plan.fps)
        fast.batch_size = 1
        assert torch.equal(fast.render(one, src, output="raw"), got_raw[1:2])


# --------------------------------------------------------------- plumbing (tiny networks)


class _F(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.items = 0

    def forward(self, x):  # [B,3,256,256] → [B,2,2,4,4]: per-item mean colour, broadcast
        self.calls += 1
        self.items += x.shape[0]
        return x.mean(dim=(2, 3)).sum(1).view(-1, 1, 1, 1, 1).expand(-1, 2, 2, 4, 4).clone()


class _W(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, feature_3d, kp_source, kp_driving):
        self.calls += 1
        b = feature_3d.shape[0]
        shift = (kp_driving - kp_source).sum(dim=(1, 2)).view(b, 1, 1, 1)
        return {"out": feature_3d.reshape(b, 4, 4, 4) + shift}


class _G(torch.nn.Module):
    def forward(self, x):  # [B,4,4,4] → [B,3,8,8] in [0,1]
        return torch.sigmoid(torch.nn.functional.interpolate(x[:, :3], scale_factor=2))


def _tiny_models():
    return types.SimpleNamespace(appearance_feature_extractor=_F(), warping_module=_W(),
                                 spade_generator=_G(), device=torch.device("cpu"))


def _tiny_plan(n_frames: int, n_src: int, source_index=None):
    g = torch.Generator().manual_seed(1)
    x_s = torch.randn(n_frames, 21, 3, generator=g) * 0.1
    x_d = x_s + torch.randn(n_frames, 21, 3, generator=g) * 0.01
    idx = torch.as_tensor(source_index if source_index is not None else [i % n_src for i in range(n_frames)])
    return KeypointPlan(x_s, x_d, idx)


def _crops(n):
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 256, (n, 256, 256, 3), generator=g, dtype=torch.uint8)


def test_streaming_chunks_equal_all_at_once():
    m = _tiny_models()
    plan, crops = _tiny_plan(10, 3), _crops(3)
    whole = Animator(m, batch_size=10).render(plan, crops)
    chunks = list(Animator(m, batch_size=4).iter_render(plan, crops))
    assert [c.shape[0] for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat(chunks), whole)
    assert whole.shape == (10, 8, 8, 3) and whole.dtype == torch.float32
    u8 = Animator(m, batch_size=3).render(plan, crops, output="uint8")
    assert torch.equal(u8, (whole * 255).to(torch.uint8))  # truncation, as images.render_to_u8


def test_each_item_is_its_own_source_and_keypoints():
    m = _tiny_models()
    plan, crops = _tiny_plan(6, 2), _crops(2)
    out = Animator(m, batch_size=4).render(plan, crops, output="raw")
    for i in range(6):  # frame i alone must give the same as frame i inside a batch
        one = KeypointPlan(plan.x_s[i:i + 1], plan.x_d[i:i + 1], plan.source_index[i:i + 1])
        assert torch.equal(Animator(m, batch_size=1).render(one, crops, output="raw"), out[i:i + 1])


def test_source_features_computed_once_per_source_item():
    m = _tiny_models()
    # image source: 12 frames, one source item → F runs once
    Animator(m, batch_size=4).render(_tiny_plan(12, 1), _crops(1))
    assert m.appearance_feature_extractor.items == 1
    # video source, frames in order: each of 5 items once
    m = _tiny_models()
    Animator(m, batch_size=2).render(_tiny_plan(5, 5), _crops(5))
    assert m.appearance_feature_extractor.items == 5
    # looping source (0,1,2,0,1,2,…) with room for all: still once each
    m = _tiny_models()
    Animator(m, batch_size=2, max_cached_features=3).render(_tiny_plan(9, 3), _crops(3))
    assert m.appearance_feature_extractor.items == 3


def test_feature_cache_is_bounded():
    m = _tiny_models()
    a = Animator(m, batch_size=1, max_cached_features=2)
    plan = _tiny_plan(8, 4)  # 0,1,2,3,0,1,2,3 with room for 2: some recomputation, never > 2 kept
    sizes = []
    from liveportrait_core import render as R

    orig = R._FeatureCache.release_until

    def spy(self, b):
        orig(self, b)
        sizes.append(len(self.store))

    R._FeatureCache.release_until = spy
    try:
        ref = Animator(_tiny_models(), batch_size=8).render(plan, _crops(4))
        got = a.render(plan, _crops(4))
    finally:
        R._FeatureCache.release_until = orig
    assert max(sizes) <= 2 and torch.equal(got, ref)
    assert 4 < m.appearance_feature_extractor.items <= 8


def test_progress_and_cancel():
    m = _tiny_models()
    seen = []
    Animator(m, batch_size=3).render(_tiny_plan(7, 1), _crops(1), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]

    m = _tiny_models()

    def cancel():  # the user presses cancel while the second batch renders
        return m.warping_module.calls >= 3  # on CPU every frame of a batch is one W call

    got = []
    with pytest.raises(Cancelled, match="cancelled"):
        for chunk in Animator(m, batch_size=2).iter_render(_tiny_plan(20, 1), _crops(1), cancel=cancel):
            got.append(chunk)
    # polled between frames: frame 2's W ran, its G and frame 3 did not; the first batch was yielded
    assert len(got) == 1 and m.warping_module.calls == 3 and all(len(c) == 2 for c in got)


@pytest.mark.parametrize("k", [0, 2, 3])
def test_cancel_during_frame_k_of_a_batch_stops_before_frame_k_plus_1(k):
    """Exact mode on CPU: a cancel requested while frame k renders (inside a batch of 4) stops
    the render before frame k+1 starts, not at the end of the batch."""
    m = _tiny_models()
    requested = []
    decoded = []
    m.warping_module.register_forward_pre_hook(
        lambda mod, args: requested.append(mod.calls) if mod.calls == k else None)  # frame k starts
    m.spade_generator.register_forward_pre_hook(lambda mod, args: decoded.append(len(decoded)))
    with pytest.raises(Cancelled):
        list(Animator(m, batch_size=4).iter_render(_tiny_plan(8, 1), _crops(1), cancel=lambda: bool(requested)))
    assert requested == [k]
    assert m.warping_module.calls == k + 1  # frame k+1 never started
    assert len(decoded) == k  # and frame k stopped between W and G


def test_fast_copies_are_made_once_and_kept_with_the_models():
    from liveportrait_core.accel import prepare_networks, prepared_bytes, release_prepared
    from liveportrait_core.models import LivePortraitModels

    f, w, g = _F(), _W(), _G()
    m = LivePortraitModels(f, torch.nn.Linear(2, 2), w, g, None, None, torch.device("cpu"), torch.float32, "")
    assert prepare_networks(m, "exact") == {"F": f, "W": w, "G": g} and m.prepared == {}
    assert prepared_bytes(m) == 0
    a, b = Animator(m, "fast"), Animator(m, "fast")
    nets = a._networks()
    assert all(nets[k] is b._networks()[k] for k in "FWG") and nets["W"] is not w  # one derived set
    assert len(m.prepared) == 1 and prepared_bytes(m) == nets["W"].w.element_size()  # W's one parameter
    fast, exact = a.render(_tiny_plan(3, 1), _crops(1)), Animator(m).render(_tiny_plan(3, 1), _crops(1))
    assert fast.shape == exact.shape and float((fast - exact).abs().max()) < 0.02  # bf16 round-off at most
    m.to(dtype=torch.float32)  # same dtype: kept
    assert len(m.prepared) == 1
    m.to(dtype=torch.bfloat16)  # the weights are re-rounded: the copies derived from them go
    assert m.prepared == {}
    m.to(dtype=torch.float32)
    Animator(m, "fast")._networks()
    assert release_prepared(m) == 1 and m.prepared == {} and prepared_bytes(m) == 0


def test_bad_plans_are_clear_errors():
    from liveportrait_core.errors import InputError

    m = _tiny_models()
    with pytest.raises(InputError, match="source item 3"):
        Animator(m).render(_tiny_plan(4, 1, source_index=[0, 1, 2, 3]), _crops(2))
    with pytest.raises(InputError, match="precision"):
        Animator(m, precision="half")
    with pytest.raises(InputError, match="batch size"):
        Animator(m, batch_size=0)


def test_crops_to_input_matches_reference_preprocessing():
    crops = _crops(2)
    x = crops_to_input(crops)
    assert x.shape == (2, 3, 256, 256) and x.dtype == torch.float32
    assert torch.equal(x, crops.permute(0, 3, 1, 2).float() / 255.0)
    assert torch.allclose(crops_to_input(crops.float() / 255.0), x, atol=1e-6)  # ComfyUI float images
    small = crops_to_input(crops[:, :128, :128])  # resized with cv2 bilinear
    assert small.shape == (2, 3, 256, 256)


# ------------------------------------------------------------------ prepared (fast) copies


def test_prepared_copy_folds_batchnorm_and_keeps_the_function(models, e2e):
    from liveportrait_core.accel.derive import prepare_network
    from liveportrait_core.networks.blocks import SNConv2d

    F = models.appearance_feature_extractor
    P = prepare_network(F, torch.float32, memory_channels_last=False)
    bn = lambda net: sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    # every conv→BN pair folded; only the 6 pre-activation norm1 of the ResBlock3d stay
    assert bn(F) > 6 and bn(P) == 6
    x = crops_to_input(torch.from_numpy(e2e["source_crop256_u8"])[None])
    with torch.inference_mode():
        ref, got = F(x), P(x)
    assert (got - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())
    assert bn(F) > 6  # the original is untouched
    W = prepare_network(models.warping_module, torch.float32)
    assert bn(W) == 0
    G = prepare_network(models.spade_generator, torch.float32)
    assert not any(isinstance(m, SNConv2d) for m in G.modules())
    sn = next(m for m in models.spade_generator.modules() if isinstance(m, SNConv2d))
    plain = next(m for n, m in G.named_modules() if n == next(
        n2 for n2, m2 in models.spade_generator.named_modules() if m2 is sn))
    y = torch.randn(1, sn.in_channels, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(sn(y), plain(y), rtol=1e-4, atol=1e-4)


def test_flush_denormal_is_scoped_to_the_block():
    from liveportrait_core.accel.denormal import flush_denormal

    x = torch.full((1 << 18,), 1e-39)  # subnormal float32; large enough to use every thread
    assert (x * 1.0 != 0).all()
    with flush_denormal():
        assert (x * 1.0 == 0).all()  # flushed on the intra-op threads too
        with flush_denormal():
            pass
        assert (x * 1.0 == 0).all()  # nested exit keeps it on
    assert (x * 1.0 != 0).all()  # restored everywhere
