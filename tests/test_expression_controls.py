"""Expression controls: the table against the spec's numbers (which keypoint rows / axes move and
by how much per unit), identity at neutral (bit for bit, also for a turned head and for motion
templates), validation messages, frame ranges with fades, strength, ratio targets and
`edited_keypoints` (what the editor renders)."""
from __future__ import annotations

import math

import pytest
import torch

from liveportrait_core.editing import (CONTROLS, apply_controls, edit_driving, edited_keypoints,
                                       expression_offsets, frame_weights, neutral_motion, neutral_values,
                                       pose_deltas, validate_controls)
from liveportrait_core.errors import InputError
from liveportrait_core.motion import Motion, rotation_from_degrees, transform_keypoint
from liveportrait_core.stitching import eye_delta, lip_delta, stitch_keypoints
from test_motion_math import _one_thread, driving_motion, mlps, source_motion  # noqa: F401

# The spec's rows, transcribed independently of the table: control → [(keypoint, axis, gain)]
# for positive values, and for negative values where they differ.
X, Y, Z = 0, 1, 2
PURSE = [(14, Y, 0.001), (3, Y, -0.0005), (7, Y, -0.0005), (17, Z, -0.0005)]
GRIN = [(20, Z, -0.001), (20, Y, -0.001), (14, Y, -0.001)]
LIPS = [(19, Y, 0.001), (19, Z, 0.0001), (17, Y, -0.0001)]
WINK = [(11, Y, 0.001), (13, Y, -0.0003), (17, X, 0.0003), (17, Y, 0.0003), (3, Y, -0.0003)]


def blink_in_gaze(eye_kps):  # gaze y adds a blink b = -v/2: 11.y -0.001·b, 13.y 0.0003·b, 15.y, 16.y
    rows = {11: [(11, Y, -0.001 * -0.5), (13, Y, 0.0003 * -0.5)], 15: [(15, Y, -0.001 * -0.5), (16, Y, 0.0003 * -0.5)]}
    return [r for k in eye_kps for r in rows[k]]


POSITIVE = {
    "move_x": [(5, X, -1.0)], "move_y": [(5, Y, 1.0)], "pout": [(19, X, 1.0)], "purse": PURSE, "grin": GRIN,
    "lips_open": LIPS,
    "smile": [(20, Y, -0.01), (14, Y, -0.02), (17, Y, 0.0065), (17, Z, 0.003), (13, Y, -0.00275),
              (16, Y, -0.00275), (3, Y, -0.0035), (7, Y, -0.0035)],
    "wink": WINK, "eyebrow": [(1, Y, 0.001), (2, Y, -0.001)],
    "gaze_x": [(11, X, 0.0007), (15, X, 0.001)],
    "gaze_y": [(11, Y, -0.001), (15, Y, -0.001)] + blink_in_gaze([11, 15]),
    "blink": [(11, Y, -0.001), (15, Y, -0.001), (13, Y, 0.0003), (16, Y, 0.0003), (1, Y, -0.00025), (2, Y, 0.00025)],
    "pupil_left_x": [(11, X, 0.0007)], "pupil_right_x": [(15, X, 0.001)],
    "pupil_left_y": [(11, Y, -0.001)] + blink_in_gaze([11]), "pupil_right_y": [(15, Y, -0.001)] + blink_in_gaze([15]),
    "eee": GRIN, "woo": PURSE, "aaa": LIPS, "wink_tilt": WINK,
}
NEGATIVE = {
    "eyebrow": [(1, X, -0.001), (2, X, 0.001), (1, Y, 0.0003), (2, Y, -0.0003)],
    "gaze_x": [(11, X, 0.001), (15, X, 0.0007)],
    "pupil_left_x": [(11, X, 0.001)], "pupil_right_x": [(15, X, 0.0007)],
}
POSE = {"head_pitch": (1, 0, 0), "head_yaw": (0, 1, 0), "head_roll": (0, 0, 1), "aaa": (-0.05, 0, 0),
        "wink_tilt": (0, -0.1, -0.1)}
RANGES = {"head_pitch": (-15, 15), "head_yaw": (-25, 25), "head_roll": (-15, 15), "move_x": (-0.19, 0.19),
          "move_y": (-0.19, 0.19), "move_z": (0.9, 1.2), "pout": (-0.09, 0.09), "purse": (-20, 15), "grin": (0, 15),
          "lips_open": (-90, 120), "smile": (-0.3, 1.3), "wink": (0, 39), "eyebrow": (-30, 30), "gaze_x": (-30, 30),
          "gaze_y": (-63, 63), "blink": (-20, 5), "pupil_left_x": (-15, 15), "pupil_left_y": (-15, 15),
          "pupil_right_x": (-15, 15), "pupil_right_y": (-15, 15), "eee": (-20, 15), "woo": (-20, 15),
          "aaa": (-30, 120), "wink_tilt": (0, 25), "eye_open_ratio": (-1, 0.8), "lip_open_ratio": (-1, 0.8)}
CONTRACT_ORDER = ["head_pitch", "head_yaw", "head_roll", "move_x", "move_y", "move_z", "pout", "purse", "grin",
                  "lips_open", "smile", "wink", "eyebrow", "gaze_x", "gaze_y", "blink", "pupil_left_x",
                  "pupil_left_y", "pupil_right_x", "pupil_right_y", "eee", "woo"]
FIELDS = ("pitch", "yaw", "roll", "R", "exp", "t", "scale", "kp", "eye_ratio", "lip_ratio", "face_id",
          "frame_index", "eye_target", "lip_target")


def expected_offsets(name: str, v: float) -> torch.Tensor:
    """[21,3] float32: the spec's rows summed in float64, rounded once."""
    rows = NEGATIVE.get(name, POSITIVE.get(name, [])) if v < 0 else POSITIVE.get(name, [])
    out = torch.zeros(21, 3, dtype=torch.float64)
    for k, a, g in rows:
        out[k, a] += g * v
    return out.float()


def assert_same_motion(a: Motion, b: Motion) -> None:
    for k in FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, k
            # bit for bit (also the sign of zeros)
            assert torch.equal(x.view(torch.int32) if x.dtype == torch.float32 else x,
                               y.view(torch.int32) if y.dtype == torch.float32 else y), k
    assert a.fps == b.fps and a.anchor is b.anchor


def turned(m: Motion, pitch=12.0, yaw=-28.0, roll=9.0) -> Motion:
    """A real source motion with its head turned (R rebuilt from the new degrees)."""
    return m.with_pose(pitch=m.pitch + pitch, yaw=m.yaw + yaw, roll=m.roll + roll)


# ----------------------------------------------------------------------------- the table


def test_table_has_every_control_in_order_with_the_spec_ranges():
    names = list(CONTROLS)
    assert names[:len(CONTRACT_ORDER)] == CONTRACT_ORDER
    assert set(names) == set(RANGES) and len(names) == len(set(names))
    for name, c in CONTROLS.items():
        assert c.name == name and name.isidentifier() and name == name.lower()
        assert (c.minimum, c.maximum) == RANGES[name], name
        assert c.minimum <= c.neutral <= c.maximum and c.step > 0 and c.label and c.tooltip, name
        assert c.kind in ("pose", "offset", "scale", "ratio"), name
    assert CONTROLS["move_z"].neutral == 1.0 and CONTROLS["move_z"].kind == "scale"
    for r in ("eye_open_ratio", "lip_open_ratio"):
        assert CONTROLS[r].kind == "ratio" and CONTROLS[r].neutral == -1.0
    assert {n for n, c in CONTROLS.items() if c.negative_rows is not None} == set(NEGATIVE)
    assert neutral_values() == {n: c.neutral for n, c in CONTROLS.items()}


@pytest.mark.parametrize("name", [n for n in CONTROLS if n in POSITIVE])
def test_each_offset_control_moves_exactly_its_rows(name):
    lo, hi = RANGES[name]
    for v in sorted({hi, lo, 1.0 if hi >= 1 else hi / 2, -1.0 if lo <= -1 else lo / 2, 0.37 * hi}):
        if v == 0:
            continue
        got = expression_offsets({name: v}, 1)[0]
        want = expected_offsets(name, v)
        assert got.dtype == torch.float32
        assert torch.equal(got, want), (name, v, (got - want).abs().max())
        assert int((got != 0).sum()) == len({(k, a) for k, a, _ in
                                             (NEGATIVE.get(name, POSITIVE[name]) if v < 0 else POSITIVE[name])})
    assert torch.equal(expression_offsets({name: 0.0}, 1), torch.zeros(1, 21, 3))


def test_piecewise_controls_switch_rows_at_zero():
    up, down = expression_offsets({"eyebrow": 10.0}, 1)[0], expression_offsets({"eyebrow": -10.0}, 1)[0]
    assert up[1, 1] == pytest.approx(0.01) and up[2, 1] == pytest.approx(-0.01) and up[1, 0] == 0
    assert down[1, 0] == pytest.approx(0.01) and down[2, 0] == pytest.approx(-0.01)
    assert down[1, 1] == pytest.approx(-0.003) and down[2, 1] == pytest.approx(0.003)
    right, left = expression_offsets({"gaze_x": 10.0}, 1)[0], expression_offsets({"gaze_x": -10.0}, 1)[0]
    assert (right[11, 0], right[15, 0]) == (pytest.approx(0.007), pytest.approx(0.01))
    assert (left[11, 0], left[15, 0]) == (pytest.approx(-0.01), pytest.approx(-0.007))
    # one value per item: each item uses the rows of its own sign
    per = expression_offsets({"gaze_x": torch.tensor([10.0, -10.0, 0.0])}, 3)
    assert torch.equal(per[0], right) and torch.equal(per[1], left) and not per[2].any()


def test_per_eye_pupils_add_up_to_the_gaze_and_shapes_reuse_rows():
    for v in (-12.0, 7.5):
        both = expression_offsets({"pupil_left_x": v, "pupil_right_x": v}, 1)
        assert torch.allclose(both, expression_offsets({"gaze_x": v}, 1), atol=1e-9, rtol=0)
        both = expression_offsets({"pupil_left_y": v, "pupil_right_y": v}, 1)
        assert torch.allclose(both, expression_offsets({"gaze_y": v}, 1), atol=1e-9, rtol=0)
    for a, b in (("eee", "grin"), ("woo", "purse"), ("aaa", "lips_open"), ("wink_tilt", "wink")):
        assert torch.equal(expression_offsets({a: 5.0}, 1), expression_offsets({b: 5.0}, 1))


def test_pose_controls_give_degrees_per_unit():
    for name, per_unit in POSE.items():
        v = 10.0
        got = pose_deltas({name: v}, 2)
        assert torch.equal(got, torch.tensor([[g * v for g in per_unit]] * 2, dtype=torch.float64).float()), name
    assert not pose_deltas({"smile": 1.0, "move_z": 1.1, "eye_open_ratio": 0.3}, 1).any()
    for name in ("head_pitch", "head_yaw", "head_roll", "move_z", "eye_open_ratio"):
        assert not expression_offsets({name: CONTROLS[name].maximum}, 1).any(), name


def test_offsets_sum_over_controls():
    both = expression_offsets({"smile": 0.5, "wink": 10.0}, 1)
    want = (torch.zeros(21, 3, dtype=torch.float64))
    for k, a, g in POSITIVE["smile"]:
        want[k, a] += g * 0.5
    for k, a, g in POSITIVE["wink"]:
        want[k, a] += g * 10.0
    assert torch.equal(both[0], want.float())


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("values,words", [
    ({"smil": 1.0}, ["unknown control 'smil'", "smile"]),
    ({"smile": 2.0}, ["'smile'", "-0.3", "1.3", "got 2"]),
    ({"head_yaw": -30}, ["'head_yaw'", "-25", "25 deg"]),
    ({"smile": float("nan")}, ["'smile'", "finite"]),
    ({"wink": float("inf")}, ["'wink'", "finite"]),
    ({"smile": torch.tensor([0.1, 5.0])}, ["'smile'", "at frame 1", "got 5"]),
    ({"smile": torch.tensor([0.1, float("nan")])}, ["'smile'", "finite", "at frame 1"]),
    ({"smile": True}, ["'smile'", "number"]),
    ({"smile": "big"}, ["'smile'", "number"]),
    ({"smile": torch.zeros(2, 2)}, ["'smile'", "shape (2, 2)"]),
    ({"eye_open_ratio": 0.9}, ["'eye_open_ratio'", "0.8"]),
    ({"move_z": 0.5}, ["'move_z'", "0.9", "1.2"]),
])
def test_bad_values_name_the_input_and_the_range(values, words):
    with pytest.raises(InputError) as e:
        validate_controls(values, "preset 'happy.json'")
    msg = str(e.value)
    assert msg.startswith("preset 'happy.json': ")
    for w in words:
        assert w in msg, (w, msg)


def test_validation_accepts_bounds_and_float32_copies():
    out = validate_controls({"eye_open_ratio": torch.tensor([0.8, -1.0]), "smile": 1.3, "head_yaw": -25})
    assert out["smile"] == 1.3 and out["head_yaw"] == -25.0 and out["eye_open_ratio"].dtype == torch.float32
    with pytest.raises(InputError, match="mapping"):
        validate_controls([("smile", 1.0)], "x")


def test_apply_controls_rejects_bad_ranges_strength_and_lengths():
    m = neutral_motion(4, 25.0)
    for kw, words in ((dict(strength=-1.0), "strength"), (dict(strength=float("nan")), "strength"),
                      (dict(frame_range=(3, 3)), "frame_range"), (dict(frame_range=(-1, 2)), "frame_range"),
                      (dict(frame_range=(0.5, 2)), "frame_range"), (dict(fade_in=-1), "fade_in"),
                      (dict(fade_out=1.5), "fade_out")):
        with pytest.raises(InputError, match=words):
            apply_controls(m, {"smile": 1.0}, **kw)
    with pytest.raises(InputError, match="one per item"):
        apply_controls(m, {"smile": torch.tensor([1.0, 0.0])})


# ----------------------------------------------------------------------------- identity at neutral


def fixture_motions() -> dict:
    src = source_motion("src_image")
    tpl = driving_motion({"template_prefix": "drv_video5", "driving": "video"}, None)
    return {"image": src, "turned image": turned(src), "video": source_motion("src_video2"),
            "turned video": turned(source_motion("src_video2"), -14.0, 33.0, -20.0), "template": tpl}


def test_all_neutral_gives_the_input_bit_for_bit():
    all_neutral = neutral_values()
    for what, m in fixture_motions().items():
        n = len(m)
        per_frame = {k: torch.full((n,), v) for k, v in all_neutral.items()}
        for values in (all_neutral, per_frame, {}):
            out = apply_controls(m, values)
            assert out is not m
            assert_same_motion(out, m)
            if m.kp is not None:
                assert torch.equal(out.keypoints(), m.keypoints()), what
    # the template's R is not what rotation_from_degrees(its degrees) gives: kept, not rebuilt
    tpl = fixture_motions()["template"]
    assert not torch.equal(rotation_from_degrees(tpl.pitch, tpl.yaw, tpl.roll), tpl.R)


def test_neutral_edit_of_a_turned_head_keeps_its_keypoints_with_stitching():
    m = fixture_motions()["turned image"]
    x = edited_keypoints(m, neutral_values(), mlps(), stitching=False)
    assert torch.equal(x, m.keypoints())
    x = edited_keypoints(m, neutral_values(), mlps(), stitching=True)
    assert torch.equal(x, stitch_keypoints(mlps(), m.keypoints(), m.keypoints()))


def test_only_edited_items_change():
    m = fixture_motions()["video"]  # 4 frames
    out = apply_controls(m, {"smile": torch.tensor([0.0, 0.8, 0.0, 0.0]), "head_yaw": torch.tensor([0.0, 0, 5, 0])})
    for i in (0, 3):
        assert_same_motion(out.select([i]), m.select([i]))
    assert torch.equal(out.R[1], m.R[1]) and not torch.equal(out.exp[1], m.exp[1])
    assert torch.equal(out.exp[2], m.exp[2]) and not torch.equal(out.R[2], m.R[2])


# ----------------------------------------------------------------------------- the composition


def test_offsets_are_added_after_the_rotation():
    """x_new − x = s·Δ for a turned head: the offsets are not rotated with the head."""
    m = fixture_motions()["turned image"]
    values = {"smile": 1.0, "wink": 20.0, "move_x": 0.1}
    off = expression_offsets(values, 1)
    out = apply_controls(m, values)
    assert torch.equal(out.R, m.R) and torch.equal(out.yaw, m.yaw)
    assert torch.equal(out.exp, m.exp + off)
    x_new = edited_keypoints(m, values, None, stitching=False)
    assert torch.allclose(x_new - m.keypoints(), m.scale.reshape(1, 1, 1) * off, atol=1e-6, rtol=0)
    rotated = (m.kp + m.exp + off) @ m.R - (m.kp + m.exp) @ m.R  # what rotating them would give
    assert (rotated - off).abs().max() > 1e-3


def test_pose_scale_and_offsets_follow_the_formula():
    m = fixture_motions()["turned image"]
    values = {"head_pitch": 5.0, "head_yaw": -10.0, "head_roll": 3.0, "move_z": 1.1, "smile": 0.5}
    out = apply_controls(m, values)
    for key, d in (("pitch", 5.0), ("yaw", -10.0), ("roll", 3.0)):
        assert torch.equal(getattr(out, key), (getattr(m, key).double() + d).float()), key
    R_new = rotation_from_degrees(out.pitch, out.yaw, out.roll)
    assert torch.equal(out.R, R_new)
    assert torch.equal(out.scale, m.scale * torch.tensor(1.1, dtype=torch.float64).float())
    want = transform_keypoint(m.kp, R_new, m.exp + expression_offsets(values, 1),
                              m.scale * 1.1, m.t)  # x = z·s·(x_c·R_new + δ + Δ) + t
    assert torch.allclose(edited_keypoints(m, values, None, stitching=False), want, atol=1e-6, rtol=0)


def test_frame_range_and_fades_give_exact_weights():
    f = torch.arange(10)
    w = frame_weights(f, (2, 8), fade_in=2, fade_out=3)
    assert w.tolist() == [0, 0, 1 / 3, 2 / 3, 1, 3 / 4, 2 / 4, 1 / 4, 0, 0]
    assert frame_weights(f, None).tolist() == [1.0] * 10
    assert frame_weights(f, None, fade_in=1).tolist() == [0.5] + [1.0] * 9
    assert frame_weights(f, (5, 100)).tolist() == [0] * 5 + [1] * 5
    m = neutral_motion(10, 25.0)
    out = apply_controls(m, {"smile": 1.0, "head_yaw": 8.0}, frame_range=(2, 8), fade_in=2, fade_out=3)
    for i in range(10):
        assert torch.equal(out.exp[i], expected_offsets("smile", w[i].item())), i
        assert out.yaw[i] == torch.tensor(8.0 * w[i].item(), dtype=torch.float64).float(), i
    for i in (0, 1, 8, 9):
        assert_same_motion(out.select([i]), m.select([i]))
    # frame numbers come from frame_index when the motion has one
    late = m.select(slice(None))
    late.frame_index = torch.arange(10) + 100
    out = apply_controls(late, {"smile": 1.0}, frame_range=(104, 106))
    assert [bool(out.exp[i].any()) for i in range(10)] == [i in (4, 5) for i in range(10)]


def test_strength_scales_every_kind_of_control():
    m = fixture_motions()["image"]
    half = apply_controls(m, {"smile": 1.0, "head_yaw": 10.0, "move_z": 1.2, "eye_open_ratio": 0.3}, strength=0.5)
    assert torch.equal(half.exp, m.exp + expected_offsets("smile", 0.5))
    assert torch.equal(half.yaw, (m.yaw.double() + 5.0).float())
    assert torch.equal(half.scale, m.scale * torch.tensor(1.1, dtype=torch.float64).float())
    assert half.eye_target.tolist() == [[pytest.approx(0.3), 0.5]]
    assert_same_motion(apply_controls(m, {"smile": 1.0, "head_yaw": 10.0}, strength=0.0), m)


def test_ratio_targets_are_set_and_reach_the_retargeting_networks():
    m = source_motion("src_video2")  # 4 frames with open ratios
    out = apply_controls(m, {"eye_open_ratio": torch.tensor([-1.0, 0.3, 0.0, -1.0]), "lip_open_ratio": 0.5},
                         frame_range=(0, 3))
    assert out.eye_target.tolist() == [[0, 0], [pytest.approx(0.3), 1], [0, 1], [0, 0]]
    assert out.lip_target[:, 1].tolist() == [1, 1, 1, 0]
    assert m.eye_target is None and torch.equal(out.exp, m.exp)
    x = edited_keypoints(m, {"eye_open_ratio": torch.tensor([-1.0, 0.3, 0.0, -1.0])}, mlps(), stitching=False)
    x_s = m.keypoints()
    assert torch.equal(x[0], x_s[0]) and torch.equal(x[3], x_s[3])
    ratio = torch.cat([m.eye_ratio[1:3], torch.tensor([[0.3], [0.0]])], 1)
    assert torch.equal(x[1:3], x_s[1:3] + eye_delta(mlps(), x_s[1:3], ratio))
    x = edited_keypoints(m.select([0]), {"lip_open_ratio": 0.5}, mlps(), stitching=False, strength=0.5)
    d = lip_delta(mlps(), x_s[0:1], torch.cat([m.lip_ratio[0:1], torch.tensor([[0.5]])], 1))
    assert torch.equal(x, x_s[0:1] + d * 0.5)
    with pytest.warns(UserWarning, match="eye open-ratio target"):
        assert torch.equal(edited_keypoints(m, {"eye_open_ratio": 0.3}, None, stitching=False), x_s)


def test_edited_keypoints_needs_canonical_keypoints():
    t = fixture_motions()["template"]
    with pytest.raises(InputError, match="canonical keypoints"):
        edited_keypoints(Motion.from_rotation(t.R, t.exp, t.t, t.scale), {"smile": 1.0}, None)


def test_edit_driving_pins_the_anchor_to_the_unedited_frame():
    d = fixture_motions()["template"]
    out = edit_driving(d, {"smile": 1.0})
    assert out.anchor is not None and len(out.anchor) == 1 and out.anchor.anchor is None
    assert torch.equal(out.anchor.exp[0], d.exp[0]) and torch.equal(out.exp[0], d.exp[0] + expected_offsets("smile", 1))
    assert torch.equal(edit_driving(d, {}, anchor_frame=3).anchor.R, d.R[3:4])
    with pytest.raises(InputError, match="anchor_frame"):
        edit_driving(d, {}, anchor_frame=5)
    one = edit_driving(d.select([2]), {"smile": 1.0})  # a driving image: its pose, the neutral-lips expression
    from liveportrait_core.motion import LIP_ARRAY
    assert torch.equal(one.anchor.exp, LIP_ARRAY.float()) and torch.equal(one.anchor.R, d.R[2:3])
    assert math.isclose(float(one.anchor.scale), float(d.scale[2]))
