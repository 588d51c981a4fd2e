"""Keypoint math against the reference fixtures: degrees, rotations, keypoint transform, ratios,
Kalman smoothing, the expression-friendly hull multiplier and all 257 `motion_math.npz` cases
(final keypoints, stitching inputs, every retargeting-MLP call, every smoothing call)."""
from __future__ import annotations

import json
import os
import pickle
from functools import lru_cache

import numpy as np
import pytest
import torch

import synth_weights
from conftest import DATA_DIR, compact_file, parity_file
from liveportrait_core.compose import (ComposeOptions, apply_hull_multiplier, compose,
                                       hull_multiplier)
from liveportrait_core.motion import (Motion, degrees_from_bins, degrees_from_rotation,
                                      eye_lip_ratios, rotation_from_degrees, transform_keypoint)
from liveportrait_core.networks.stitching_retargeting import StitchingRetargeting
from liveportrait_core.smoothing import kalman_smooth
from liveportrait_core.templates import load_motion, save_motion

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny MLP batches: a 2-thread pool only adds stalls on a busy machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@lru_cache(maxsize=None)
def npz(full: str, compact: str) -> dict:
    path = parity_file(full) or compact_file(compact)
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def mm() -> dict:
    return npz("motion_math.npz", "motion_math.npz")


def cases() -> list:
    return json.loads(str(mm()["meta_json"]))["cases"]


@lru_cache(maxsize=1)
def mlps() -> StitchingRetargeting:
    # only the MLP part of synth_weights.state_dicts(0) (generating all networks takes seconds)
    subs = synth_weights.key_doc()["stitching_retargeting_module"]["sub_dicts"]
    sd = {s: synth_weights._group(subs[s]["keys"], 0) for s in synth_weights.SUBDICTS}
    net = StitchingRetargeting()
    net.load_state_dict({f"{s}.{k.removeprefix('module.')}": v for s, d in sd.items() for k, v in d.items()})
    return net.eval()


def check(a, b, what: str, atol: float = ATOL) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    err = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"
    return err


# ----------------------------------------------------------------------------- §3.1–3.3, §8


def extractor() -> dict:
    return npz("motion_extractor.npz", "motion_extractor_post.npz")


def test_degrees_from_bins_reference():
    e = extractor()
    check(degrees_from_bins(torch.from_numpy(e["deg_test_logits"])), e["deg_test_degrees"], "deg_test", 1e-4)
    assert float(degrees_from_bins(torch.zeros(1, 66))[0]) == 0.0  # uniform logits → 0°
    already = torch.tensor([[12.5], [-3.0]])
    assert torch.equal(degrees_from_bins(already), already.flatten())  # degrees pass through


def test_rotation_from_degrees_reference_and_inverse():
    e = extractor()
    pyr = e["rot_test_pyr_deg"]
    R = rotation_from_degrees(pyr[:, 0], pyr[:, 1], pyr[:, 2])
    check(R, e["rot_test_R"], "rot_test_R", 1e-6)
    p, y, r = degrees_from_rotation(R)
    check(torch.stack([p, y, r], 1), pyr, "degrees_from_rotation", 1e-3)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-6)


def test_from_extractor_matches_kp_info():
    e = extractor()
    raw = {k: torch.from_numpy(e["raw_" + k]) for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")}
    m = Motion.from_extractor(raw, fps=30.0)
    for k in ("pitch", "yaw", "roll"):
        check(getattr(m, k), e["deg_" + k].reshape(-1), k, 1e-4)
    check(m.R, e["kp_info_R"], "R")
    check(m.exp, e["kp_info_exp"], "exp", 0)
    check(m.kp, e["kp_info_kp"], "kp", 0)
    check(m.keypoints(), e["kp_info_x"], "transform_keypoint")
    assert m.fps == 30.0 and m.eye_ratio is None and len(m) == 4


def test_transform_keypoint_ignores_tz():
    kp, exp = torch.randn(2, 21, 3), torch.randn(2, 21, 3)
    R, s = rotation_from_degrees([10, -5], [3, 0], [0, 7]), torch.tensor([[1.5], [0.5]])
    a = transform_keypoint(kp, R, exp, s, torch.tensor([[0.1, 0.2, 0.0], [0.0, -0.1, 0.0]]))
    b = transform_keypoint(kp, R, exp, s, torch.tensor([[0.1, 0.2, 9.0], [0.0, -0.1, -9.0]]))
    assert torch.equal(a, b)
    assert torch.allclose(a[0, :, 0] - 0.1, 1.5 * (kp[0] @ R[0] + exp[0])[:, 0], atol=1e-6)


def test_eye_lip_ratios_reference():
    d = mm()
    for p in ("src_image", "src_image2"):
        eye, lip = eye_lip_ratios(d[p + "_lmk203"])
        check(eye, d[p + "_c_eyes"], p + " eyes", 0)
        check(lip, d[p + "_c_lip"], p + " lip", 0)
    for p in ("src_video", "src_video2"):
        eye, lip = eye_lip_ratios(torch.from_numpy(d[p + "_lmk203_crop256"]))
        check(eye, d[p + "_c_eyes"][:, 0], p + " eyes", 0)
        check(lip, d[p + "_c_lip"][:, 0], p + " lip", 0)


# ----------------------------------------------------------------------------- §10, hull


@pytest.mark.parametrize("var", ["3e-7", "1e-5", "1e-3"])
def test_kalman_smooth_reference(var):
    k = npz("kalman_smooth.npz", "motion_kalman.npz")
    check(kalman_smooth(k["exp_seq"][:, 0], float(var)), k["exp_smooth_" + var], "exp", 1e-6)
    check(kalman_smooth(torch.from_numpy(k["R_seq"][:, 0]), float(var)), k["R_smooth_" + var], "R", 1e-6)
    if var != "1e-3":  # smoothing must actually change the sequence
        assert np.abs(k["exp_smooth_" + var] - k["exp_seq"][:, 0]).max() > 1e-4


def test_hull_multiplier_reference():
    d = mm()
    m = hull_multiplier(torch.from_numpy(d["hull_x_s"][0]), torch.from_numpy(d["hull_x_d"][0, 0]))
    assert abs(m - float(d["hull_multiplier"])) < 1e-12
    out = apply_hull_multiplier(torch.from_numpy(d["hull_x_d"][:, 0]), torch.from_numpy(d["hull_x_s"]), m)
    check(out, d["hull_x_d_out"][:, 0], "hull_x_d_out", 0)


# ----------------------------------------------------------------------------- 257 cases

OPTION_NAMES = {
    "flag_relative_motion": "relative_motion", "flag_stitching": "stitching",
    "flag_eye_retargeting": "eye_retargeting", "flag_lip_retargeting": "lip_retargeting",
    "flag_normalize_lip": "normalize_lip", "flag_source_video_eye_retargeting": "source_video_eye_retargeting",
    "driving_option": "driving_option", "driving_multiplier": "driving_multiplier",
    "animation_region": "animation_region", "driving_smooth_observation_variance": "smooth_variance",
}
IGNORED = {"flag_crop_driving_video"}  # only changes which driving template was recorded


def source_motion(p: str) -> Motion:
    d = mm()
    m = Motion.from_degrees(d[p + "_pitch"], d[p + "_yaw"], d[p + "_roll"], d[p + "_exp"], d[p + "_t"],
                            d[p + "_scale"], d[p + "_kp"], eye_ratio=d[p + "_c_eyes"],
                            lip_ratio=d[p + "_c_lip"], fps=30.0)
    if p + "_R" in d:  # video sources: the reference's own per-frame R and x_s
        check(m.R, d[p + "_R"][:, 0], p + " R", 0)
        check(m.keypoints(), d[p + "_x_s"][:, 0], p + " x_s", 0)
    return m


def driving_motion(case: dict, tmp_path) -> Motion:
    d, p = mm(), case["template_prefix"]
    if p == "pkl_real":  # the real reference template d1.pkl
        real = os.path.join(DATA_DIR, "templates", "d1.pkl")
        m = load_motion(real if os.path.exists(real) else compact_file("motion_templates/d1.pkl"))
        for k, f in (("R", "R"), ("exp", "exp"), ("t", "t"), ("scale", "scale"),
                     ("eye_ratio", "c_eyes"), ("lip_ratio", "c_lip")):
            check(getattr(m, k), d[f"pkl_real_tpl_{f}"][:, 0], "d1.pkl " + k, 0)
        assert len(m) == int(d["pkl_real_n_frames"]) and m.fps == float(d["pkl_real_output_fps"])
        return m
    m = Motion.from_rotation(d[p + "_tpl_R"], d[p + "_tpl_exp"], d[p + "_tpl_t"], d[p + "_tpl_scale"],
                             kp=d[p + "_tpl_kp"], eye_ratio=d[p + "_tpl_c_eyes"], lip_ratio=d[p + "_tpl_c_lip"])
    if case["driving"] != "template":
        return m
    path = str(tmp_path / "driving.pkl")
    if len(m) == 1:  # our writer: current keys, no kp / x_s
        save_motion(Motion.from_rotation(m.R, m.exp, m.t, m.scale, eye_ratio=m.eye_ratio,
                                         lip_ratio=m.lip_ratio), path)
    else:  # the old layout: R_d, c_d_eyes_lst, c_d_lip_lst, no kp / x_s
        tpl = {"n_frames": len(m), "output_fps": 25,
               "motion": [{"scale": d[p + "_tpl_scale"][i], "R_d": d[p + "_tpl_R"][i],
                           "exp": d[p + "_tpl_exp"][i], "t": d[p + "_tpl_t"][i]} for i in range(len(m))],
               "c_d_eyes_lst": list(d[p + "_tpl_c_eyes"]), "c_d_lip_lst": list(d[p + "_tpl_c_lip"])}
        with open(path, "wb") as f:
            pickle.dump(tpl, f, protocol=4)
    t = load_motion(path)
    assert t.kp is None and len(t) == len(m)
    return t


def mlp_calls(calls: list, mlp: str, source_video: bool):
    """The trace's MLP calls in the reference's call order (ARCHITECTURE.md §9.3)."""
    kinds = {"eye": ["source_eye", "eye"], "lip": ["lip_normalize", "lip"]}[mlp]
    rows = []
    for c in calls:
        if c.kind in kinds:
            for j, f in enumerate(c.frames.tolist()):
                once = c.kind == "lip_normalize" and not source_video  # image: once, before the loop
                rows.append(((-1, 0) if once else (f, kinds.index(c.kind)), c.ratio[j], c.delta[j]))
    rows.sort(key=lambda r: r[0])
    return (torch.stack([r[1] for r in rows]), torch.stack([r[2] for r in rows])) if rows else None


@pytest.mark.parametrize("cid", [f"{i:03d}" for i in range(257)])
def test_motion_math_case(cid, tmp_path):
    case = next(c for c in cases() if c["id"] == cid)
    d = mm()
    unknown = set(case["options"]) - set(OPTION_NAMES) - IGNORED
    assert not unknown, unknown
    opts = ComposeOptions(**{OPTION_NAMES[k]: v for k, v in case["options"].items() if k in OPTION_NAMES})
    src, drv = source_motion(case["source_prefix"]), driving_motion(case, tmp_path)
    assert (len(drv) > 1) == (case["driving_treated_as"] == "video")
    trace: dict = {}
    plan = compose(src, drv, mlps(), opts, trace=trace)
    tr = trace[0]
    n = case["n_frames"]
    assert len(plan) == n and plan.x_d.dtype == torch.float32
    check(plan.x_d, d[f"x_d__{cid}"][:, 0], "x_d")
    check(plan.x_s, d[f"x_s__{cid}"][:, 0], "x_s")
    assert torch.equal(plan.frame_index, torch.arange(n))
    src_video = case["source"] == "video"
    assert torch.equal(plan.source_index, torch.arange(n) if src_video else torch.zeros(n, dtype=torch.int64))
    assert plan.fps == (30.0 if src_video else drv.fps)
    if f"pre_stitch__{cid}" in d:
        assert tr.pre_stitch is not None, "stitching did not run"
        check(tr.pre_stitch, d[f"pre_stitch__{cid}"][:, 0], "pre_stitch")
    else:
        assert tr.pre_stitch is None, "stitching ran but the reference did not stitch"
    for mlp in ("eye", "lip"):
        got = mlp_calls(tr.calls, mlp, src_video)
        if f"{mlp}_ratio__{cid}" in d:
            assert got is not None, f"no {mlp} MLP call"
            check(got[0], d[f"{mlp}_ratio__{cid}"][:, 0], f"{mlp} ratios")
            check(got[1], d[f"{mlp}_delta__{cid}"][:, 0], f"{mlp} deltas")
        else:
            assert got is None, f"unexpected {mlp} MLP call"
    for j, name in enumerate(("exp", "R")):
        if f"smooth_in__{cid}_{j}" in d:
            check(getattr(tr, f"smooth_in_{name}").reshape(-1), d[f"smooth_in__{cid}_{j}"].reshape(-1), "smooth in")
            check(getattr(tr, f"smooth_out_{name}"), d[f"smooth_out__{cid}_{j}"], "smooth out", 1e-6)
        else:
            assert getattr(tr, f"smooth_in_{name}") is None
    if "motion_multiplier" in case:
        assert abs(tr.motion_multiplier - case["motion_multiplier"]) < 1e-9
    else:
        assert tr.motion_multiplier is None


def test_pose_and_expression_friendly_differ_only_by_rounding():
    d = mm()
    src, drv = source_motion("src_image"), driving_motion({"template_prefix": "drv_video", "driving": "video"}, None)
    a = compose(src, drv, mlps(), ComposeOptions(driving_option="expression-friendly"))
    b = compose(src, drv, mlps(), ComposeOptions(driving_option="pose-friendly"))
    check(a.x_d, b.x_d.numpy(), "expression vs pose friendly", 1e-6)
    check(a.x_d, d["x_d__000"][:, 0], "case 000")


@pytest.mark.parametrize("case", ["base", "retarget"])
def test_e2e_keypoints_from_reference_motion(case):
    """The end-to-end run's keypoints (e2e_image_to_video.npz) from its recorded motions and
    landmarks: ratios from 203 points, x_s, stitching input, retargeting inputs, final x_d."""
    d = npz("e2e_image_to_video.npz", "motion_e2e_keypoints.npz")
    eye, lip = eye_lip_ratios(d["source_lmk203"])
    check(eye, d["c_s_eyes"], "source eye ratio", 0)
    check(lip, d["c_s_lip"], "source lip ratio", 0)
    eye_d, lip_d = eye_lip_ratios(d["driving_lmk203"])
    check(eye_d, d["tpl_c_eyes"][:, 0], "driving eye ratios", 0)
    check(lip_d, d["tpl_c_lip"][:, 0], "driving lip ratios", 0)
    src = Motion.from_degrees(d["source_pitch"], d["source_yaw"], d["source_roll"], d["source_exp"],
                              d["source_t"], d["source_scale"], d["source_kp"], eye_ratio=eye, lip_ratio=lip)
    check(src.R, d["source_R"], "source R", 0)
    drv = Motion.from_rotation(d["tpl_R"], d["tpl_exp"], d["tpl_t"], d["tpl_scale"], kp=d["tpl_kp"],
                               eye_ratio=eye_d, lip_ratio=lip_d, fps=float(d["tpl_output_fps"]))
    check(drv.keypoints(), d["tpl_x_s"][:, 0], "driving x_s", 0)
    trace: dict = {}
    retarget = case == "retarget"
    plan = compose(src, drv, mlps(), ComposeOptions(eye_retargeting=retarget, lip_retargeting=retarget), trace)
    tr = trace[0]
    assert tr.motion_multiplier == pytest.approx(float(d[f"{case}_motion_multiplier"]), abs=1e-12)
    check(tr.pre_stitch, d[f"{case}_x_d_pre_stitch"][:, 0], "pre_stitch")
    check(plan.x_s, d[f"{case}_x_s"][:, 0], "x_s", 0)
    check(plan.x_d, d[f"{case}_x_d_final"][:, 0], "x_d final")
    assert plan.fps == 25.0
    if retarget:
        calls = {c.kind: c for c in tr.calls}
        check(calls["eye"].ratio, d["retarget_eye_ratio_combined"][:, 0], "eye ratio input", 0)
        check(calls["lip"].ratio, d["retarget_lip_ratio_combined"][:, 0], "lip ratio input", 0)
        check(calls["eye"].delta, d["retarget_eyes_delta"][:, 0], "eye delta")
        check(calls["lip"].delta, d["retarget_lip_delta"][:, 0], "lip delta")
