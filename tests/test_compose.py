"""compose() beyond the reference fixtures: length policies, several faces, target ratios,
missing weights / ratios, option and input errors."""
from __future__ import annotations

import warnings

import pytest
import torch

from liveportrait_core.compose import (ComposeOptions, MissingRatiosError, _extend, compose)
from liveportrait_core.errors import InputError, LivePortraitError
from liveportrait_core.motion import Motion
from test_motion_math import _one_thread, driving_motion, mlps, source_motion  # noqa: F401

NO_SMOOTH = dict(smooth_variance=0.0)


def drv(prefix: str) -> Motion:
    return driving_motion({"template_prefix": prefix, "driving": "video"}, None)


def test_extend_policies():
    assert _extend(4, 9, "loop").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert _extend(4, 9, "ping-pong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert _extend(4, 9, "hold").tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3]
    assert _extend(1, 3, "ping-pong").tolist() == [0, 0, 0]
    assert _extend(5, 3, "loop").tolist() == [0, 1, 2]


@pytest.mark.parametrize("policy,src_idx", [("loop", [0, 1, 2, 3, 0]), ("ping-pong", [0, 1, 2, 3, 2]),
                                            ("hold", [0, 1, 2, 3, 3])])
def test_source_shorter_than_driving(policy, src_idx):
    src, d5 = source_motion("src_video2"), drv("drv_video5")  # 4 source frames, 5 driving
    cut = compose(src, d5, mlps(), ComposeOptions())
    assert len(cut) == 4  # the reference: min(#source, #driving)
    plan = compose(src, d5, mlps(), ComposeOptions(length_policy=policy, **NO_SMOOTH))
    assert len(plan) == 5 and plan.source_index.tolist() == src_idx
    assert plan.frame_index.tolist() == list(range(5))
    # same as a 5-frame source video made of those frames, cut to the driving length
    manual = src.select(src_idx)
    manual.frame_index = torch.arange(5)
    ref = compose(manual, d5, mlps(), ComposeOptions(**NO_SMOOTH))
    assert torch.equal(plan.x_d, ref.x_d) and torch.equal(plan.x_s, ref.x_s)
    # with smoothing (the default) the extended sequence is smoothed as a whole
    smoothed = compose(src, d5, mlps(), ComposeOptions(length_policy=policy))
    assert len(smoothed) == 5 and not torch.equal(smoothed.x_d, plan.x_d)


def test_driving_shorter_than_source_loops_driving():
    src, d3 = source_motion("src_video2"), drv("drv_video")  # 4 source frames, 3 driving
    assert len(compose(src, d3, mlps(), ComposeOptions())) == 3
    plan = compose(src, d3, mlps(), ComposeOptions(length_policy="loop", **NO_SMOOTH))
    assert len(plan) == 4 and plan.source_index.tolist() == [0, 1, 2, 3]
    looped = Motion.concat([d3, d3.select([0])])
    ref = compose(src, looped, mlps(), ComposeOptions(**NO_SMOOTH))
    assert torch.equal(plan.x_d, ref.x_d)
    hold = compose(src, d3, mlps(), ComposeOptions(length_policy="hold", **NO_SMOOTH))
    ref = compose(src, Motion.concat([d3, d3.select([2])]), mlps(), ComposeOptions(**NO_SMOOTH))
    assert torch.equal(hold.x_d, ref.x_d)


def test_policy_irrelevant_for_image_source_and_driving_image():
    img, d3, d1 = source_motion("src_image"), drv("drv_video"), drv("drv_image")
    for policy in ("cut", "loop", "hold", "ping-pong"):
        assert len(compose(img, d3, mlps(), ComposeOptions(length_policy=policy))) == 3
        assert len(compose(img, d1, mlps(), ComposeOptions(length_policy=policy))) == 1
        assert len(compose(source_motion("src_video2"), d1, mlps(), ComposeOptions(length_policy=policy))) == 4


def with_faces(m: Motion, face: int, frames) -> Motion:
    out = m.select(slice(None))
    out.face_id = torch.full((len(m),), face, dtype=torch.int64)
    out.frame_index = torch.as_tensor(frames, dtype=torch.int64)
    return out


def test_two_faces_in_an_image():
    a, b, d3 = source_motion("src_image"), source_motion("src_image2"), drv("drv_video")
    src = Motion.concat([with_faces(a, 0, [0]), with_faces(b, 7, [0])])
    plan = compose(src, d3, mlps(), ComposeOptions(eye_retargeting=True, lip_retargeting=True))
    assert len(plan) == 6
    assert plan.face_id.tolist() == [0, 7] * 3 and plan.frame_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert plan.source_index.tolist() == [0, 1] * 3
    for face, m in ((0, a), (7, b)):
        single = compose(m, d3, mlps(), ComposeOptions(eye_retargeting=True, lip_retargeting=True))
        sel = plan.face_id == face
        assert torch.allclose(plan.x_d[sel], single.x_d, atol=1e-6, rtol=0)
        assert torch.equal(plan.x_s[sel], single.x_s)


def test_faces_present_in_different_frames_of_a_video():
    v, d5 = source_motion("src_video2"), drv("drv_video5")  # 4 frames
    # face 3 = the same face, but only visible in frames 1..3
    src = Motion.concat([with_faces(v, 0, [0, 1, 2, 3]), with_faces(v.select([1, 2, 3]), 3, [1, 2, 3])])
    plan = compose(src, d5, mlps(), ComposeOptions(**NO_SMOOTH))
    assert plan.frame_index.tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert plan.face_id.tolist() == [0, 0, 3, 0, 3, 0, 3]
    assert plan.source_index.tolist() == [0, 1, 4, 2, 5, 3, 6]
    f0, f3 = plan.face_id == 0, plan.face_id == 3
    # per-frame math (no smoothing): frame k of face 3 is driven by driving frame k, like face 0
    assert torch.allclose(plan.x_d[f3], plan.x_d[f0][1:], atol=1e-6, rtol=0)
    assert plan.fps == v.fps


def test_missing_mlps_skip_stitching_and_warn_for_retargeting():
    img, d3 = source_motion("src_image"), drv("drv_video")
    plain = compose(img, d3, mlps(), ComposeOptions(stitching=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_mlp = compose(img, d3, None, ComposeOptions())  # stitching silently skipped (reference)
    assert torch.equal(no_mlp.x_d, plain.x_d)
    with pytest.warns(UserWarning, match="eye retargeting"):
        skipped = compose(img, d3, None, ComposeOptions(eye_retargeting=True))
    assert torch.equal(skipped.x_d, plain.x_d)


def test_target_ratios_replace_driving_ratios():
    img, d3 = source_motion("src_image"), drv("drv_video")
    opts = dict(eye_retargeting=True, lip_retargeting=True)
    fixed = d3.with_ratios(eye_ratio=torch.full((3, 2), 0.25), lip_ratio=torch.full((3, 1), 0.4))
    a = compose(img, d3, mlps(), ComposeOptions(target_eye_ratio=0.25, target_lip_ratio=0.4, **opts))
    b = compose(img, fixed, mlps(), ComposeOptions(**opts))
    assert torch.equal(a.x_d, b.x_d)
    per_frame = compose(img, d3, mlps(), ComposeOptions(target_eye_ratio=[0.1, 0.2, 0.3], **opts))
    ref = compose(img, d3.with_ratios(eye_ratio=torch.tensor([[0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])),
                  mlps(), ComposeOptions(**opts))
    assert torch.equal(per_frame.x_d, ref.x_d)
    with pytest.raises(InputError, match="target_eye_ratio"):
        compose(img, d3, mlps(), ComposeOptions(target_eye_ratio=[0.1, 0.2], **opts))


def test_missing_source_ratios_is_a_clear_error():
    img = source_motion("src_image")
    img.eye_ratio = None
    with pytest.raises(MissingRatiosError, match="source"):
        compose(img, drv("drv_video"), mlps(), ComposeOptions(eye_retargeting=True))


@pytest.mark.parametrize("kw,match", [(dict(animation_region="face"), "animation_region"),
                                      (dict(driving_option="fast"), "driving_option"),
                                      (dict(length_policy="repeat"), "length_policy"),
                                      (dict(smooth_variance=-1.0), "smooth_variance"),
                                      (dict(driving_multiplier=float("nan")), "driving_multiplier"),
                                      (dict(stitching="no"), "stitching"),
                                      (dict(target_lip_ratio=-0.5), "target_lip_ratio")])
def test_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        compose(source_motion("src_image"), drv("drv_video"), None, ComposeOptions(**kw))


def test_bad_inputs():
    img, d3 = source_motion("src_image"), drv("drv_video")
    tpl = Motion.from_rotation(d3.R, d3.exp, d3.t, d3.scale)
    with pytest.raises(InputError, match="canonical keypoints"):
        compose(tpl, d3, None)
    two = Motion.concat([with_faces(d3, 0, [0, 1, 2]), with_faces(d3, 1, [0, 1, 2])])
    with pytest.raises(InputError, match="several faces"):
        compose(img, two, None)
    dup = Motion.concat([with_faces(img, 0, [0]), with_faces(img, 0, [0])])
    with pytest.raises(InputError, match="two items"):
        compose(dup, d3, None)
    broken = img.select([0])
    broken.exp = torch.zeros(2, 21, 3)
    with pytest.raises(InputError, match="exp"):
        compose(broken, d3, None)
    wrong_dtype = img.select([0])
    wrong_dtype.t = wrong_dtype.t.double()
    with pytest.raises(InputError, match="float32"):
        compose(wrong_dtype, d3, None)
    assert issubclass(MissingRatiosError, LivePortraitError)


def test_driving_multiplier_scales_motion():
    img, d3 = source_motion("src_image"), drv("drv_video")
    one = compose(img, d3, mlps(), ComposeOptions())
    zero = compose(img, d3, mlps(), ComposeOptions(driving_multiplier=0.0))
    assert torch.equal(zero.x_d, zero.x_s)
    two = compose(img, d3, mlps(), ComposeOptions(driving_multiplier=2.0))
    assert torch.allclose(two.x_d - two.x_s, 2 * (one.x_d - one.x_s), atol=1e-6)
