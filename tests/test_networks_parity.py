"""Parity of the five networks with the upstream fixtures (SEED=0 synthetic weights).

Tolerances are those of shared/fixtures/parity/README.md: network outputs
|a−b| ≤ 1e-4 + 1e-4·|b|, G's image 2e-4 + 1e-4·|b|, M's raw outputs additionally ≤ 5e-6,
statistics rtol 1e-4. Every test checks the compact view (tests/networks_fixtures.py); with
../shared present it also checks the full arrays.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import synth_weights
from networks_fixtures import planes_to_f16, reference, stats
from liveportrait_core.networks import (AppearanceFeatureExtractor, MotionExtractor,
                                        SPADEGenerator, StitchingRetargeting, WarpingModule)

CLASSES = {"appearance_feature_extractor": AppearanceFeatureExtractor,
           "motion_extractor": MotionExtractor, "warping_module": WarpingModule,
           "spade_generator": SPADEGenerator}


def assert_close(actual, expected, atol=1e-4, rtol=1e-4, what=""):
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    err = np.abs(a - b)
    excess = err - (atol + rtol * np.abs(b))
    assert excess.max() <= 0, f"{what}: max |Δ| {err.max():.3g} exceeds atol {atol} + rtol {rtol}"
    return float(err.max())


def assert_stats(x: torch.Tensor, mean, std, what="", axes=None):
    m, s = stats(x.numpy(), axes)
    assert_close(m, mean, atol=1e-6, rtol=1e-4, what=f"{what} mean")
    assert_close(s, std, atol=0, rtol=1e-4, what=f"{what} std")


def build(name: str) -> torch.nn.Module:
    model = CLASSES[name]()
    model.load_state_dict(synth_weights.state_dicts(0)[name], strict=True)
    return model.eval()


def image_batch(u8: np.ndarray) -> torch.Tensor:
    """uint8 (…,256,256,3) RGB → float32 (B,3,256,256) in [0,1]."""
    x = torch.from_numpy(u8.astype(np.float32) / 255)
    x = x[None] if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def f_output() -> torch.Tensor:
    """F applied to F's fixture input (shared by the F and W tests)."""
    ref, _ = reference("appearance_feature_extractor")
    with torch.no_grad():
        return build("appearance_feature_extractor")(image_batch(ref["input_u8"]))


def test_state_dict_keys_shapes_and_order_match_spec():
    doc = synth_weights.key_doc()
    for name, cls in CLASSES.items():
        sd = cls().state_dict()
        assert [(k, list(v.shape)) for k, v in sd.items()] == \
               [(e["key"], e["shape"]) for e in doc[name]["keys"]], name
    mlps = StitchingRetargeting().state_dict()
    subs = doc["stitching_retargeting_module"]["sub_dicts"]
    expected = {f"{s}.{e['key'].removeprefix('module.')}": e["shape"]
                for s in subs for e in subs[s]["keys"]}
    assert {k: list(v.shape) for k, v in mlps.items()} == expected


def test_appearance_feature_extractor_parity(f_output):
    ref, full = reference("appearance_feature_extractor")
    out = f_output
    assert out.shape == (1, 32, 16, 64, 64) and out.dtype == torch.float32
    assert_close(out[:, :, ::3, ::5, ::5], ref["output_sub"], what="F output_sub")
    assert_stats(out, ref["output_mean"], ref["output_std"], "F output")
    if full is not None:
        assert_close(out, full["output"], what="F output")
        # W's fixture input is exactly F's output rounded to float16 (the compact W test relies on it)
        w = np.load(full.fid.name.replace("appearance_feature_extractor", "warping_module"))
        assert np.array_equal(full["output"].astype(np.float16), w["feature_3d_f16"])


def test_motion_extractor_parity():
    ref, _ = reference("motion_extractor")
    model = build("motion_extractor")
    x = image_batch(ref["input_u8"])
    with torch.no_grad():
        singles = [model(x[i:i + 1]) for i in range(len(x))]  # the fixture ran batch 1
        batched = model(x)
    for key in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        got = torch.cat([s[key] for s in singles]).numpy()
        expected = ref[f"raw_{key}"]
        assert_close(got, expected, what=f"M {key}")
        # Catches a LayerNorm eps of 1e-5 instead of 1e-6 (moves outputs by 1e-5..2e-5).
        assert_close(got, expected, atol=5e-6, rtol=0, what=f"M {key} (tight)")
        assert batched[key].shape == got.shape and batched[key].dtype == torch.float32
        assert_close(batched[key].numpy(), expected, atol=5e-6, rtol=0, what=f"M {key} B=4")


def _w_feature(ref_w, full_w, f_output) -> torch.Tensor:
    if full_w is not None:
        return torch.from_numpy(full_w["feature_3d_f16"].astype(np.float32))
    return f_output.half().float()  # == feature_3d_f16 (asserted by the full-mode F test)


def test_warping_module_parity(f_output):
    ref, full = reference("warping_module")
    model = build("warping_module")
    feature = _w_feature(ref, full, f_output)
    captured = {}
    model.dense_motion_network.hourglass.register_forward_pre_hook(
        lambda mod, args: captured.__setitem__("hourglass_input", args[0]))
    with torch.no_grad():
        o = model(feature, kp_source=torch.from_numpy(ref["kp_source"]),
                  kp_driving=torch.from_numpy(ref["kp_driving"]))
        mask = model.dense_motion_network(feature, kp_driving=torch.from_numpy(ref["kp_driving"]),
                                          kp_source=torch.from_numpy(ref["kp_source"]))["mask"]
    assert o["out"].shape == (1, 256, 64, 64) and o["occlusion_map"].shape == (1, 1, 64, 64)
    assert o["deformation"].shape == (1, 16, 64, 64, 3)
    assert_close(o["out"][:, ::2, ::5, ::5], ref["out_sub"], what="W out_sub")
    assert_stats(o["out"], ref["out_mean"], ref["out_std"], "W out")
    assert_close(o["occlusion_map"], ref["occlusion_map"], what="W occlusion_map")
    assert_close(o["deformation"][:, ::3, ::5, ::5], ref["deformation_sub"], what="W deformation")
    assert_close(mask[:, :, ::4, ::12, ::12], ref["dm_mask_sub2"], what="W mask")
    assert_close(captured["hourglass_input"][:, :, ::12, ::24, ::24],
                 ref["dm_hourglass_input_sub2"], what="W hourglass input")
    if full is not None:
        for key in ("out", "occlusion_map", "deformation"):
            assert_close(o[key], full[key], what=f"W {key}")
        assert_close(mask[:, :, ::2, ::4, ::4], full["dm_mask_sub"], what="W mask (full)")
        assert_close(captured["hourglass_input"][:, :, ::4, ::8, ::8],
                     full["dm_hourglass_input_sub"], what="W hourglass input (full)")

    # Batch of 2 with different features *and* keypoints: catches keypoint-major B·22 flattening.
    feature2 = torch.cat([feature, feature.flip(dims=[4])])
    with torch.no_grad():
        o2 = model(feature2, kp_source=torch.from_numpy(ref["b2_kp_source"]),
                   kp_driving=torch.from_numpy(ref["b2_kp_driving"]))
    assert_close(o2["out"][:, ::4, ::6, ::6], ref["b2_out_sub"], what="W b2 out")
    assert_stats(o2["out"], ref["b2_out_mean"], ref["b2_out_std"], "W b2 out", axes=(1, 2, 3))
    assert_close(o2["occlusion_map"], ref["b2_occlusion_map"], what="W b2 occlusion")
    assert_close(o2["deformation"][:, ::2, ::4, ::4], ref["b2_deformation_sub"], what="W b2 def")
    if full is not None:
        assert_close(o2["out"][:, :, ::2, ::2], full["b2_out_sub2"], what="W b2 out (full)")
    for key in ("out", "occlusion_map", "deformation"):  # item 0 of the batch == the B=1 call
        assert torch.equal(o2[key][:1], o[key]), key


def test_spade_generator_parity():
    ref, full = reference("spade_generator")
    model = build("spade_generator")
    names = [str(n) for n in ref["sn_names"]]
    assert len(names) == 18
    with torch.no_grad():
        sigmas = np.array([float(model.get_submodule(n).sigma()) for n in names])
        w_eval = model.up_1.conv_1.eval_weight()
    assert_close(sigmas, ref["sn_sigma"], atol=0, rtol=1e-6, what="G sigma")
    assert w_eval.dtype == torch.float32
    assert_close(w_eval[::2, ::2], ref["sn_up_1_conv_1_weight_eval_sub"], atol=1e-7, rtol=1e-5,
                 what="G eval weight")
    # The stored u, v must be used as they are (no power iteration, no normalisation).
    sd = synth_weights.state_dicts(0)["spade_generator"]
    assert torch.equal(model.up_1.conv_1.weight_u, sd["up_1.conv_1.weight_u"])

    f16 = planes_to_f16(ref["feature_f16_planes"], tuple(ref["feature_shape"]))
    feature = torch.from_numpy(f16.astype(np.float32))
    if full is not None:
        assert np.array_equal(f16, full["feature_f16"])
    # Batch of 2 (the fixture input + its mirror image): item 0 is checked against the fixture,
    # item 1 against a batch-1 call below.
    with torch.no_grad():
        out2 = model(torch.cat([feature, feature.flip(dims=[3])]))
    out = out2[:1]
    assert out2.shape == (2, 3, 512, 512) and out2.dtype == torch.float32
    assert_close(out[:, :, ::5, ::5], ref["output_sub"], atol=2e-4, what="G output_sub")
    assert_stats(out, ref["output_mean"], ref["output_std"], "G output")
    if full is not None:
        assert_close(out, full["output"], atol=2e-4, what="G output")
    with torch.no_grad():
        single1 = model(feature.flip(dims=[3]))
    assert torch.equal(out2[1:], single1)


def test_stitching_retargeting_parity():
    ref, _ = reference("stitching_retargeting")
    model = StitchingRetargeting()
    sd = synth_weights.state_dicts(0)["stitching_retargeting_module"]
    model.load_state_dict({f"{s}.{k.removeprefix('module.')}": v
                           for s, d in sd.items() for k, v in d.items()}, strict=True)
    with torch.no_grad():
        for fn, name in ((model.stitching, "stitching"), (model.eye, "eye"), (model.lip, "lip")):
            got = fn(torch.from_numpy(ref[f"{name}_in"]))
            assert_close(got.numpy(), ref[f"{name}_out"], what=f"MLP {name}")
            assert_close(got.numpy(), ref[f"{name}_out"], atol=2e-6, rtol=0, what=f"MLP {name}")
