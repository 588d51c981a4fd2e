"""Relative motion from a chosen neutral: ComposeOptions.anchor_frame, Motion.anchor, neutral
motions and edited motions through compose, ratio targets of a driving motion, the anchor in
select / concat / motion files, and the named closed-eye constant."""
from __future__ import annotations

import warnings

import pytest
import torch

from liveportrait_core.compose import ComposeOptions, compose
from liveportrait_core.compose_steps import CLOSED_EYE_REPLACEMENT_RATIO
from liveportrait_core.editing import apply_controls, edit_driving, edited_keypoints, neutral_motion
from liveportrait_core.errors import InputError
from liveportrait_core.motion import Motion
from liveportrait_core.stitching import eye_delta, stitch_keypoints
from liveportrait_core.templates import load_motion, save_motion
from test_motion_math import _one_thread, driving_motion, mlps, source_motion  # noqa: F401

PLAIN = dict(stitching=False)


def drv(prefix: str = "drv_video5") -> Motion:
    return driving_motion({"template_prefix": prefix, "driving": "video"}, None)


@pytest.mark.parametrize("option", ["expression-friendly", "pose-friendly"])
def test_anchor_frame_k_gives_the_source_at_frame_k(option):
    img, d = source_motion("src_image"), drv()
    default = compose(img, d, mlps(), ComposeOptions(driving_option=option))
    assert torch.equal(compose(img, d, mlps(), ComposeOptions(driving_option=option, anchor_frame=0)).x_d,
                       default.x_d)
    for k in range(5):
        p = compose(img, d, mlps(), ComposeOptions(anchor_frame=k, driving_option=option, **PLAIN))
        exact = [torch.equal(p.x_d[i], p.x_s[i]) for i in range(5)]
        if option == "expression-friendly":  # measured from frame k's own driven keypoints
            assert exact == [i == k for i in range(5)], k
        else:  # R_k·R_kᵀ is the identity up to rounding
            assert torch.allclose(p.x_d[k], p.x_s[k], atol=1e-6, rtol=0) and sum(exact) <= 1
            far = [i for i in range(5) if i != k]
            assert all((p.x_d[i] - p.x_s[i]).abs().max() > 1e-4 for i in far)


def test_motion_anchor_matches_anchor_frame_and_the_option_overrides_it():
    img, d = source_motion("src_image"), drv()
    by_frame = compose(img, d, mlps(), ComposeOptions(anchor_frame=3))
    anchored = d.select(slice(None))
    anchored.anchor = d.select([3])
    by_anchor = compose(img, anchored, mlps(), ComposeOptions())
    assert torch.allclose(by_anchor.x_d, by_frame.x_d, atol=1e-6, rtol=0)
    assert torch.equal(compose(img, anchored, mlps(), ComposeOptions(anchor_frame=1)).x_d,
                       compose(img, d, mlps(), ComposeOptions(anchor_frame=1)).x_d)
    # absolute mode ignores anchors
    assert torch.equal(compose(img, anchored, mlps(), ComposeOptions(relative_motion=False)).x_d,
                       compose(img, d, mlps(), ComposeOptions(relative_motion=False)).x_d)
    vid = source_motion("src_video2")
    a = compose(vid, anchored, mlps(), ComposeOptions(smooth_variance=0.0, **PLAIN))
    b = compose(vid, d, mlps(), ComposeOptions(anchor_frame=3, smooth_variance=0.0, **PLAIN))
    assert torch.equal(a.x_d, b.x_d)


def test_anchor_frame_errors():
    img, d = source_motion("src_image"), drv()
    with pytest.raises(InputError, match=r"anchor_frame is 5.*5 frame\(s\) \(0\.\.4\)"):
        compose(img, d, None, ComposeOptions(anchor_frame=5))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InputError, match="anchor_frame"):
            compose(img, d, None, ComposeOptions(anchor_frame=bad))
    broken = d.select(slice(None))
    broken.anchor = d.select([0, 1])
    with pytest.raises(InputError, match="anchor"):
        compose(img, broken, None)


def test_neutral_motion_is_neutral():
    m = neutral_motion(3, 30.0)
    assert len(m) == 3 and m.fps == 30.0 and m.kp is None and m.eye_ratio is None
    assert torch.equal(m.R, torch.eye(3).expand(3, 3, 3)) and not m.exp.any() and not m.t.any()
    assert torch.equal(m.scale, torch.ones(3, 1)) and not (m.pitch.any() or m.yaw.any() or m.roll.any())
    assert len(m.anchor) == 1 and m.anchor.anchor is None and torch.equal(m.anchor.R, torch.eye(3)[None])
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="frames"):
            neutral_motion(bad, 25.0)
    with pytest.raises(InputError, match="fps"):
        neutral_motion(2, 0.0)


@pytest.mark.parametrize("src_name", ["src_image", "src_video2"])
@pytest.mark.parametrize("region", ["all", "exp", "pose", "lip", "eyes"])
def test_neutral_motion_through_compose_gives_the_source_exactly(src_name, region):
    src = source_motion(src_name)
    for n in (1, 4):
        o = dict(animation_region=region, smooth_variance=0.0)
        p = compose(src, neutral_motion(n, 25.0), mlps(), ComposeOptions(**o, **PLAIN))
        assert torch.equal(p.x_d, p.x_s), (n, region)
        s = compose(src, neutral_motion(n, 25.0), mlps(), ComposeOptions(**o))
        assert torch.equal(s.x_d, s.x_s + (stitch_keypoints(mlps(), s.x_s, s.x_s) - s.x_s) * 1.0)


def test_edited_neutral_motion_drives_the_edits_frame_by_frame():
    img = source_motion("src_image")
    values = {"smile": torch.tensor([0.0, 0.8, 0.0, 0.3]), "wink": torch.tensor([0.0, 0.0, 20.0, 0.0])}
    edit = apply_controls(neutral_motion(4, 25.0), values)
    p = compose(img, edit, mlps(), ComposeOptions(**PLAIN))
    assert torch.equal(p.x_d[0], p.x_s[0]) and len(p) == 4 and p.fps == 25.0
    for i in (1, 2, 3):  # the same as editing the picture directly (offset controls)
        one = {k: float(v[i]) for k, v in values.items()}
        want = edited_keypoints(img, one, None, stitching=False)[0]
        assert torch.allclose(p.x_d[i], want, atol=1e-6, rtol=0) and not torch.equal(p.x_d[i], p.x_s[i])
    # a video source: every frame gets its frame's edit, within the reference's expression set
    # of video sources (EXP_SET): e.g. the wink's rows all are in it, move x (5.x) is not
    vid = source_motion("src_video2")
    q = compose(vid, edit, mlps(), ComposeOptions(smooth_variance=0.0, **PLAIN))
    assert torch.equal(q.x_d[0], q.x_s[0])
    x = edited_keypoints(vid.select([2]), {"wink": 20.0}, None, stitching=False)
    assert torch.allclose(q.x_d[2], x[0], atol=1e-6, rtol=0) and not torch.equal(q.x_d[2], q.x_s[2])
    moved = compose(vid, apply_controls(neutral_motion(4, 25.0), {"move_x": 0.1}), mlps(),
                    ComposeOptions(smooth_variance=0.0, **PLAIN))
    assert torch.equal(moved.x_d, moved.x_s)
    moved = compose(img, apply_controls(neutral_motion(1, 25.0), {"move_x": 0.1}), mlps(), ComposeOptions(**PLAIN))
    assert torch.allclose(moved.x_d - moved.x_s, img.scale * torch.tensor([-0.1, 0, 0]).expand(1, 21, 3) *
                          (torch.arange(21) == 5).reshape(1, 21, 1), atol=1e-6, rtol=0)


def test_ratio_targets_of_the_driving_reach_the_eye_network():
    img = source_motion("src_image")
    edit = apply_controls(neutral_motion(3, 25.0), {"eye_open_ratio": torch.tensor([-1.0, 0.25, -1.0])})
    p = compose(img, edit, mlps(), ComposeOptions(**PLAIN))
    assert torch.equal(p.x_d[0], p.x_s[0]) and torch.equal(p.x_d[2], p.x_s[2])
    d = eye_delta(mlps(), p.x_s[1:2], torch.cat([img.eye_ratio, torch.tensor([[0.25]])], 1))
    assert torch.equal(p.x_d[1], (p.x_s[1:2] + d)[0])
    with pytest.warns(UserWarning, match="eye open-ratio target"):
        skipped = compose(img, edit, None, ComposeOptions(**PLAIN))
    assert torch.equal(skipped.x_d, skipped.x_s)
    no_ratios = img.select([0])
    no_ratios.eye_ratio = None
    with pytest.raises(InputError, match="source eye ratios"):
        compose(no_ratios, edit, mlps(), ComposeOptions(**PLAIN))


def test_edit_driving_adds_edits_on_top_of_a_driving_video():
    img, d = source_motion("src_image"), drv()
    base = compose(img, d, mlps(), ComposeOptions(**PLAIN))
    assert torch.equal(compose(img, edit_driving(d, {}), mlps(), ComposeOptions(**PLAIN)).x_d, base.x_d)
    trace: dict = {}
    edited = compose(img, edit_driving(d, {"smile": 1.0}), mlps(), ComposeOptions(**PLAIN), trace)
    # offsets are not rotated: each frame moves by its scale s_s·s_d/s_anchor × the hull multiplier
    scale = (img.scale * (d.scale / d.scale[0:1])).reshape(5) * trace[0].motion_multiplier
    diff = edited.x_d - base.x_d
    assert torch.allclose(diff[:, 20, 1], scale * -0.01, atol=1e-6, rtol=0)
    assert torch.allclose(diff[:, 14, 1], scale * -0.02, atol=1e-6, rtol=0)
    assert diff[:, [0, 4, 8], :].abs().max() < 1e-6
    # apply_controls alone edits the anchor frame too, so relative mode cancels frame 0's edit
    naive = compose(img, apply_controls(d, {"smile": 1.0}), mlps(), ComposeOptions(**PLAIN))
    assert torch.allclose(naive.x_d, base.x_d, atol=1e-5)


def test_anchor_in_select_concat_and_motion_files(tmp_path):
    m = apply_controls(neutral_motion(3, 30.0), {"smile": torch.tensor([0.0, 1.0, 0.5]), "lip_open_ratio": 0.2})
    part = m.select([1, 2])
    assert part.anchor is m.anchor and torch.equal(part.lip_target, m.lip_target[1:])
    both = Motion.concat([m, part])
    assert len(both) == 5 and both.anchor is m.anchor and torch.equal(both.lip_target[3:], m.lip_target[1:])
    plain = Motion.concat([neutral_motion(2, 30.0).select(slice(None))])
    assert plain.anchor is not None
    other = neutral_motion(2, 30.0)
    other.anchor = other.select([1])
    other.anchor.anchor = None
    other.anchor.exp = other.anchor.exp + 1
    with pytest.raises(InputError, match="different anchors"):
        Motion.concat([m, other])
    no_anchor = Motion.from_rotation(m.R, m.exp, m.t, m.scale)
    with pytest.raises(InputError, match="anchors"):
        Motion.concat([m, no_anchor])
    mixed = Motion.concat([no_anchor.select([0]), no_anchor.select([1])])
    assert mixed.anchor is None and mixed.eye_target is None

    path = save_motion(m, str(tmp_path / "edit.lpmotion.safetensors"))
    back = load_motion(path)
    for k in ("R", "exp", "t", "scale", "pitch", "lip_target"):
        assert torch.equal(getattr(back, k), getattr(m, k)), k
    assert back.eye_target is None and back.anchor is not None and torch.equal(back.anchor.R, m.anchor.R)
    assert torch.equal(back.anchor.exp, m.anchor.exp)

    def version(p):
        import json
        import struct
        with open(p, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        return json.loads(header["__metadata__"]["liveportrait_motion"])["version"]

    assert version(path) == 2
    assert version(save_motion(no_anchor, str(tmp_path / "plain.lpmotion.safetensors"))) == 1
    with pytest.warns(UserWarning, match="anchor, lip_target"):
        pkl = save_motion(m, str(tmp_path / "edit.pkl"))
    back = load_motion(pkl)
    assert back.anchor is None and back.lip_target is None and torch.equal(back.exp, m.exp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_motion(no_anchor, str(tmp_path / "plain.pkl"))


def test_closed_first_frame_eyes_use_the_named_replacement_ratio():
    vid = source_motion("src_video2")
    closed = vid.with_ratios(eye_ratio=torch.cat([torch.full((1, 2), 0.1), vid.eye_ratio[1:]]))
    trace: dict = {}
    compose(closed, drv(), mlps(), ComposeOptions(source_video_eye_retargeting=True), trace)
    call = next(c for c in trace[0].calls if c.kind == "source_eye")
    assert torch.equal(call.ratio[:, 2], torch.full((4,), CLOSED_EYE_REPLACEMENT_RATIO, dtype=torch.float32))
    opened = vid.with_ratios(eye_ratio=torch.cat([torch.tensor([[0.3, 0.34]]), vid.eye_ratio[1:]]))
    trace = {}
    compose(opened, drv(), mlps(), ComposeOptions(source_video_eye_retargeting=True), trace)
    call = next(c for c in trace[0].calls if c.kind == "source_eye")
    assert float(call.ratio[0, 2]) == pytest.approx(0.32)
