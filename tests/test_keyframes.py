"""Keyframe sequences: per-control tracks, frame maps, automatic blink, strength, frame ranges
with fades, JSON round trip and rejections, and the driving motion through compose."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from liveportrait_core.compose import ComposeOptions, compose
from liveportrait_core.editing.controls import CONTROLS, apply_controls
from liveportrait_core.editing.keyframes import (BlinkOptions, Key, KeyframeSequence, apply_sequence,
                                                 blink_curve, blink_onsets, frame_count, frame_times,
                                                 load_sequence, save_sequence, sequence_from_dict,
                                                 sequence_from_json, sequence_motion, sequence_to_json,
                                                 sequence_values)
from liveportrait_core.errors import InputError
from liveportrait_core.motion import NUM_KP, Motion


def seq(*keys, **kw) -> KeyframeSequence:
    return KeyframeSequence(keys=[Key(*k) if isinstance(k, tuple) else k for k in keys], **kw)


def source(n: int = 1, seed: int = 0) -> Motion:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    return Motion.from_degrees(pitch=r(n) * 20 - 10, yaw=r(n) * 50 - 25, roll=r(n) * 20 - 10,
                               exp=(r(n, NUM_KP, 3) - 0.5) * 0.05, t=(r(n, 3) - 0.5) * 0.1,
                               scale=1.3 + r(n, 1) * 0.2, kp=(r(n, NUM_KP, 3) - 0.5) * 0.6,
                               eye_ratio=torch.full((n, 2), 0.35), lip_ratio=torch.full((n, 1), 0.1))


# ------------------------------------------------------------------------------ tracks


def test_each_control_is_its_own_track():
    s = seq((0.0, {"smile": 0.2, "head_yaw": 0.0}), (1.0, {"head_yaw": 20.0}), (2.0, {"smile": 1.0}),
            (3.0, {"head_yaw": -10.0}, "step"), fps=10)
    v = sequence_values(s)
    assert list(v) == ["head_yaw", "smile"]  # CONTROLS order, only the named controls
    assert all(x.dtype == torch.float32 and x.shape == (31,) for x in v.values())
    yaw, smile = v["head_yaw"].double(), v["smile"].double()
    # exact at the keys that name the control
    assert (yaw[0], yaw[10], yaw[30]) == (0.0, 20.0, -10.0)
    assert (float(smile[0]), float(smile[20])) == (pytest.approx(0.2), pytest.approx(1.0))
    # smile ignores the yaw keys at 1 s and 3 s: one linear ramp 0.2 → 1.0 over 0..2 s, then held
    assert torch.allclose(smile[:21], torch.linspace(0.2, 1.0, 21, dtype=torch.float64), atol=1e-6)
    assert torch.all(smile[20:] == smile[20])
    # yaw: linear 0 → 20 over 0..1 s, then a step: 20 held until the key at 3 s
    assert torch.allclose(yaw[:11], torch.linspace(0, 20, 11, dtype=torch.float64), atol=1e-5)
    assert torch.all(yaw[10:30] == 20.0) and yaw[30] == -10.0


def test_track_starts_at_neutral_and_ratio_targets_jump():
    s = seq((1.0, {"move_z": 1.1, "eyebrow": 10.0}, "ease-in"), (2.0, {"lip_open_ratio": 0.4}), fps=4)
    v = sequence_values(s)
    # neutral (move_z 1, eyebrow 0) at t = 0, eased in: v = n + (k − n)·u²
    u = torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert torch.allclose(v["move_z"][:5].double(), 1 + 0.1 * u * u, atol=1e-7)
    assert torch.allclose(v["eyebrow"][:5].double(), 10 * u * u, atol=1e-6)
    # a ratio target is "leave as is" (−1) until its key, then the ratio; no blend in between
    assert v["lip_open_ratio"].tolist() == [-1.0] * 8 + [pytest.approx(0.4)]


def test_frame_count_and_frame_maps():
    assert frame_count(seq((2.0, {"smile": 1.0}), fps=25)) == 51  # up to and including the key
    assert frame_count(seq((2.0, {"smile": 1.0}), fps=25, duration=3.0)) == 75
    assert frame_count(seq(fps=25)) == 1
    f = lambda loop: (frame_times(11, 2.0, 2.0, loop) * 2).round().long().tolist()  # noqa: E731  in frames
    assert f("hold") == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    assert f("loop") == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]
    assert f("ping-pong") == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2]
    # exact frame times when length·fps is whole
    assert frame_times(7, 25.0, 0.2, "loop").tolist() == [0, 0.04, 0.08, 0.12, 0.16, 0.0, 0.04]
    # a length that is not a whole number of frames: wrapped in seconds
    t = frame_times(6, 10.0, 0.25, "ping-pong")
    assert t.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.1, 0.0])
    t = frame_times(6, 10.0, 0.25, "loop")
    assert t.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.05, 0.15, 0.0])


def test_loop_modes_in_values():
    keys = [(0.0, {"smile": 0.0}), (0.4, {"smile": 1.0})]
    for loop, want in [("hold", [0, .25, .5, .75, 1, 1, 1, 1, 1]), ("loop", [0, .25, .5, .75, 0, .25, .5, .75, 0]),
                       ("ping-pong", [0, .25, .5, .75, 1, .75, .5, .25, 0])]:
        v = sequence_values(seq(*keys, fps=10, duration=0.9, loop=loop))["smile"]
        assert v.tolist() == pytest.approx(want), loop


# ------------------------------------------------------------------------------ blink


def test_blink_seeding_and_shape():
    b = BlinkOptions(interval=3.0, duration=0.2, seed=7)
    a1, a2 = blink_onsets(b, 2500, 25.0), blink_onsets(b, 2500, 25.0)
    assert torch.equal(a1, a2) and a1.numel() > 10
    other = blink_onsets(BlinkOptions(interval=3.0, duration=0.2, seed=8), 2500, 25.0)
    assert not torch.equal(a1[:10], other[:10])
    gaps = torch.diff(a1).double() / 25.0
    assert float(gaps.min()) >= 1.5 - 0.04  # never closer than half the mean interval (± a frame)
    # each blink: 5 frames at 25 fps, closing over 2, fully closed once, back open
    curve = blink_curve(b, 2500, 25.0)
    o = int(a1[0])
    assert curve[o - 1] == 0 and curve[o + 2] == 1.0 and curve[o + 5] == 0
    assert curve[o:o + 3].tolist() == [0.0, 0.5, 1.0]
    assert curve[o + 2:o + 6].tolist() == pytest.approx([1.0, 20 / 27, 7 / 27, 0.0])
    assert int((curve == 1.0).sum()) == a1.numel()


def test_blink_mean_interval_over_a_long_sequence():
    mean = 4.0
    onsets = blink_onsets(BlinkOptions(interval=mean, duration=0.2, seed=123), 25 * 4000, 25.0)
    gaps = torch.diff(onsets).double() / 25.0
    n = gaps.numel()
    # gaps are mean/2 + Exp(mean/2): standard deviation mean/2, so the sample mean has sd (mean/2)/√n
    sd = (mean / 2) / math.sqrt(n)
    assert n > 900
    assert abs(float(gaps.mean()) - mean) < 4 * sd + 0.5 / 25
    assert abs(float(gaps.std()) - mean / 2) < 0.15 * mean / 2


def test_blink_combines_with_keyed_blink():
    keyed = [(0.0, {"blink": -5.0}), (4.0, {"blink": 3.0})]
    on = BlinkOptions(interval=1.0, duration=0.4, seed=3)
    base = sequence_values(seq(*keyed, fps=25))["blink"].double()
    w = blink_curve(on, 101, 25.0)
    assert w.max() == 1.0
    mx = sequence_values(seq(*keyed, fps=25, blink=on))["blink"].double()
    want = base + w * (torch.clamp(base, max=-20.0) - base)  # towards min(keyed, −20) = −20
    assert torch.allclose(mx, want, atol=1e-5)
    assert float(mx.min()) == -20.0  # fully closed, never beyond
    sm = sequence_values(seq(*keyed, fps=25, blink=BlinkOptions(interval=1.0, duration=0.4, seed=3,
                                                                combine="sum")))["blink"].double()
    assert torch.allclose(sm, (base - 20 * w).clamp(-20, 5), atol=1e-5)
    # blink alone (no keys): only the blink control, 0 when open
    only = sequence_values(seq(fps=25, duration=4.0, blink=on))
    assert list(only) == ["blink"] and torch.allclose(only["blink"].double(), -20 * blink_curve(on, 100, 25.0), atol=1e-5)


# ------------------------------------------------------------------------------ motions


def test_sequence_motion_is_apply_controls_on_neutral_with_strength():
    s = seq((0.0, {"smile": 0.0, "head_pitch": 0.0}), (0.2, {"smile": 1.0, "head_pitch": 10.0}),
            fps=25, strength=0.5)
    m = sequence_motion(s)
    assert len(m) == 6 and m.fps == 25.0 and m.anchor is not None and len(m.anchor) == 1
    smile_rows = {(r.keypoint, r.axis): r.gain for r in CONTROLS["smile"].rows}
    u = torch.arange(6, dtype=torch.float64) / 5
    for (k, a), g in smile_rows.items():
        assert torch.allclose(m.exp[:, k, a].double(), 0.5 * g * u, atol=1e-7)
    assert torch.allclose(m.pitch.double(), 5.0 * u, atol=1e-5)
    assert torch.equal(m.exp[0], torch.zeros(NUM_KP, 3)) and torch.equal(m.R[0], torch.eye(3))


@pytest.mark.parametrize("option", ["expression-friendly", "pose-friendly"])
def test_neutral_frames_retarget_to_exactly_the_source(option):
    """Frame values 0 → Retarget (compose, relative) gives exactly the source keypoints,
    also when the sequence does not start neutral (the motion's neutral anchor is used)."""
    s = seq((0.0, {"smile": 0.8, "head_yaw": 15.0, "blink": -10.0}), (0.2, {"smile": 0.0, "head_yaw": 0.0, "blink": 0.0}),
            fps=25, duration=0.4)
    src = source()
    plan = compose(src, sequence_motion(s), None, ComposeOptions(driving_option=option))
    x_s = src.keypoints()
    assert len(plan) == 10
    for i in range(5, 10):  # neutral from 0.2 s on
        assert torch.equal(plan.x_d[i], x_s[0]), i
    assert not torch.equal(plan.x_d[0], x_s[0])


def multi_face_motion(frames: int = 10) -> Motion:
    parts = []
    for face in (0, 1):
        m = source(frames, seed=face)
        m.face_id = torch.full((frames,), face, dtype=torch.int64)
        m.frame_index = torch.arange(frames)
        parts.append(m)
    m = Motion.concat(parts)
    order = torch.argsort(m.frame_index, stable=True)  # frame-major, as a group photo video
    return m.select(order)


def test_apply_sequence_frame_range_with_fades_exact_weights():
    motion = multi_face_motion(12)
    s = seq((0.0, {"smile": 1.0}), fps=25)  # constant smile 1
    out = apply_sequence(motion, s, frame_range=(2, 10), fade_in=2, fade_out=3)
    frames = motion.frames()
    want_w = {0: 0, 1: 0, 2: 1 / 3, 3: 2 / 3, 4: 1, 5: 1, 6: 1, 7: 0.75, 8: 0.5, 9: 0.25, 10: 0, 11: 0}
    g = {(r.keypoint, r.axis): r.gain for r in CONTROLS["smile"].rows}
    delta = out.exp.double() - motion.exp.double()
    for i in range(len(motion)):
        w = want_w[int(frames[i])]
        for (k, a), gain in g.items():
            assert float(delta[i, k, a]) == pytest.approx(w * gain, abs=1e-8)
        if w == 0:
            assert torch.equal(out.exp[i], motion.exp[i])
    # untouched components stay bit-identical
    mask = torch.ones(NUM_KP, 3, dtype=torch.bool)
    for k, a in g:
        mask[k, a] = False
    assert torch.equal(out.exp[:, mask], motion.exp[:, mask]) and torch.equal(out.R, motion.R)


def test_apply_sequence_timing_starts_at_the_range_and_uses_the_motion_fps():
    motion = multi_face_motion(8)
    motion.fps = 10.0
    s = seq((0.0, {"head_roll": 0.0}), (0.4, {"head_roll": 8.0}), fps=25)
    out = apply_sequence(motion, s, frame_range=(2, 8))
    frames = motion.frames()
    droll = (out.roll.double() - motion.roll.double())
    want = {0: 0, 1: 0, 2: 0, 3: 2, 4: 4, 5: 6, 6: 8, 7: 8}  # 0.1 s per frame, time 0 = frame 2
    for i in range(len(motion)):
        assert float(droll[i]) == pytest.approx(want[int(frames[i])], abs=1e-4)
    # the same as apply_controls with the values laid out by hand
    per_item = torch.tensor([want[int(f)] for f in frames], dtype=torch.float32)
    ref = apply_controls(motion, {"head_roll": per_item}, frame_range=(2, 8))
    assert torch.allclose(out.R, ref.R, atol=1e-6)


# ------------------------------------------------------------------------------ JSON


def full_sequence() -> KeyframeSequence:
    return seq(Key(0.0, {"smile": 0.0, "head_yaw": 0.0}), Key(0.5, {"smile": 1.0}, "ease-in-out"),
               Key(1.25, {"head_yaw": -12.5, "lip_open_ratio": 0.3}, "smooth"), Key(2.0, {"smile": 0.1}, "step"),
               fps=30.0, duration=3.0, loop="ping-pong", strength=0.8,
               blink=BlinkOptions(interval=3.5, duration=0.15, seed=42, amount=-15.0, combine="sum"))


def test_json_round_trip_and_atomic_save(tmp_path):
    s = full_sequence()
    again = sequence_from_json(sequence_to_json(s))
    assert again == s
    path = tmp_path / "a.keyframes.json"
    assert save_sequence(s, str(path)) == str(path)
    assert load_sequence(str(path)) == s
    data = json.loads(path.read_text())
    assert data["format"] == "liveportrait-keyframes" and data["version"] == 1
    assert data["keys"][2] == {"time": 1.25, "easing": "smooth", "values": {"head_yaw": -12.5, "lip_open_ratio": 0.3}}
    # a failing save leaves the existing file as it was and no temporary file
    before = path.read_bytes()
    bad = full_sequence()
    bad.keys[1].values["smile"] = 9.0
    with pytest.raises(InputError, match="key 1"):
        save_sequence(bad, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["a.keyframes.json"]
    # frames instead of seconds; format / version may be omitted in hand-written files
    s2 = sequence_from_json('{"fps": 20, "keys": [{"frame": 0, "values": {"wink": 0}}, {"frame": 10, "values": {"wink": 30}}]}')
    assert [k.time for k in s2.keys] == [0.0, 0.5] and s2.keys[1].values == {"wink": 30.0}
    assert torch.equal(sequence_values(s2)["wink"], torch.linspace(0, 30, 11))


def _doc(keys, **top):
    return json.dumps({"format": "liveportrait-keyframes", "version": 1, "fps": 25, **top, "keys": keys})


@pytest.mark.parametrize("text,words", [
    (_doc([{"time": 0, "values": {"smiel": 1}}]), ["key 0", "smiel", "unknown control"]),
    (_doc([{"time": 1, "values": {"smile": 1}}, {"time": 0.5, "values": {"smile": 0}}]),
     ["key 1", "not after key 0", "increasing"]),
    (_doc([{"time": 1, "values": {"smile": 1}}, {"time": 1, "values": {"wink": 3}}]), ["key 1", "not after"]),
    (_doc([{"time": -0.5, "values": {"smile": 1}}]), ["key 0", "≥ 0"]),
    ('{"keys": [{"time": 0, "values": {}}, {"time": 1, "values": {"smile": NaN}}]}', ["key 1", "smile", "finite"]),
    ('{"keys": [{"time": NaN, "values": {}}]}', ["key 0", "time", "finite"]),
    (_doc([{"time": 0, "values": {"head_yaw": 40}}]), ["key 0", "head_yaw", "-25", "25"]),
    (_doc([{"time": 0, "values": {"smile": "big"}}]), ["key 0", "smile", "number"]),
    (_doc([{"time": 0, "easing": "bounce", "values": {}}]), ["key 0", "bounce"]),
    (_doc([{"time": 0, "values": {}, "colour": 1}]), ["key 0", "colour"]),
    (_doc([{"time": 0, "frame": 0, "values": {}}]), ["key 0", "exactly one"]),
    (_doc([{"frame": 1.5, "values": {}}]), ["key 0", "frame", "whole"]),
    (_doc([], loop="bounce"), ["loop", "bounce"]),
    (_doc([], fps=0), ["fps"]),
    (_doc([], duration=-1), ["duration"]),
    (_doc([], duration=1e6), ["frames", "at most"]),
    (_doc([], strength=-1), ["strength"]),
    (_doc([], blink={"interval": 1, "duration": 0.8}), ["blink duration", "half"]),
    (_doc([], blink={"interval": 2, "rate": 3}), ["blink", "rate"]),
    (_doc([], blink={"interval": 2, "amount": -30}), ["blink amount"]),
    (_doc([], extra=1), ["extra"]),
    ('{"format": "liveportrait-expression", "version": 1, "controls": {}}', ["expression preset"]),
    (_doc([], version=2), ["version 2", "newer"]),
    ('{"keys": [', ["not valid JSON"]),
    ('[1, 2]', ["JSON object"]),
])
def test_rejections_name_the_key_and_control(text, words):
    with pytest.raises(InputError) as e:
        sequence_from_json(text, "seq.json")
    msg = str(e.value)
    assert msg.startswith("seq.json")
    for w in words:
        assert w in msg, (w, msg)


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_sequence(str(tmp_path / "missing.keyframes.json"))
    p = tmp_path / "b.keyframes.json"
    p.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(InputError, match="b.keyframes.json.*UTF-8"):
        load_sequence(str(p))
    with pytest.raises(InputError, match="folder"):
        save_sequence(full_sequence(), str(tmp_path / "nope" / "x.keyframes.json"))
    with pytest.raises(InputError, match="frames"):
        sequence_values(full_sequence(), n_frames=0)
    with pytest.raises(InputError, match="frame_range"):
        apply_sequence(multi_face_motion(3), full_sequence(), frame_range=(3, 1))
    assert sequence_from_dict({"keys": []}).keys == []


def test_shipped_example_sequence():
    here = os.path.dirname(os.path.abspath(__file__))
    s = load_sequence(os.path.join(here, "..", "example_workflows", "liveportrait_keyframes.keyframes.json"))
    v = sequence_values(s)
    n = frame_count(s)
    assert 2 * s.fps <= n <= 6 * s.fps  # a few seconds
    for name in ("smile", "head_yaw", "blink"):
        assert name in v and float(v[name].abs().max()) > 0, name
    assert float(v["blink"].min()) <= -15  # the eyes really close at least once
    assert v["head_yaw"][0] == 0 and v["smile"][0] == 0  # starts on the source face
