"""Expression Editor, Keyframes and Apply Expression nodes and the live-preview routes, through the
ComfyUI stand-in (synthetic weights, the example photo; one 512² frame per render).

The routes are tested as the functions the aiohttp handlers call (nodes/routes.py:
`preview_response`), so no server is needed here; tests/integration/ drives the real server.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comfy_stub import harness

harness.install()
from nodes_testing import activate, env, pack, read_image, run, sub, tree  # noqa: E402,F401


def run_node(cls, inputs, **kw):
    """harness.run_node with the widgets a test leaves out at their schema defaults (what an
    untouched node in the UI sends)."""
    full = {i.id: i.default for i in cls.GET_SCHEMA().inputs
            if getattr(i, "default", None) is not None and not i.optional}
    full.update(inputs)
    return harness.run_node(cls, full, **kw)



def _png_pixels(png: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


@pytest.fixture(scope="module")
def face(tree, pack):
    env = activate(tree, pack)
    (models,) = run(env, "LoadLivePortraitModels", weights="auto", precision="auto", download_from_hub="never")
    (det,) = run(env, "LivePortraitLoadFaceDetector", backend="offline", threshold=-1.0, max_side=640)
    photo = read_image("liveportrait_source.jpg")
    faces, _ = run(env, "LivePortraitCropFace", image=photo, models=models, detector=det, purpose="source",
                   scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, face_index=0, face_order="large-small", rotate=True,
                   smoothing=0.0)
    return dict(models=models, faces=faces, photo=photo)


@pytest.fixture(scope="module")
def runs(tree, pack, face):
    """The editor run once neutral and once with a few sliders moved (renders are the slow part)."""
    env = activate(tree, pack)
    return dict(neutral=_editor(env, face), edited=_editor(env, face, **EDIT, strength=0.8))


EDIT = {"smile": 0.9, "head_yaw": 12.0, "lips_open": 60.0, "eyebrow": -10.0}


def _editor(env, face, **kw):
    cls = env["LivePortraitExpressionEditor"]
    linked = ("models", "source_faces") + (("motion",) if "motion" in kw else ())
    return run_node(cls, dict(models=face["models"], source_faces=face["faces"], **kw), linked=linked)


def _routes(pack):
    return sub(pack[0], "nodes.routes")


def core(pack, name):
    """A core module as the pack imported it (its classes are the ones the nodes use)."""
    import importlib

    return importlib.import_module(f"{pack[0].__name__}.liveportrait_core.{name}")


def test_editor_schema_sliders_follow_the_control_table(pack):
    CONTROLS = core(pack, "editing.controls").CONTROLS

    info = harness.object_info(pack[1])["LivePortraitExpressionEditor"]
    names = [n for n, _, _ in harness.widget_names(info)]
    assert names[:8] == ["face_index", "strength", "frame_start", "frame_end", "fade_in", "fade_out",
                         "stitching", "precision"]
    assert names[8:] == list(CONTROLS)  # sliders last, in table order: new controls append widgets
    req = info["input"]["required"]
    for c in CONTROLS.values():
        spec = req[c.name][1]
        assert spec["display"] == "slider" and spec["default"] == c.neutral
        assert (spec["min"], spec["max"], spec["step"]) == (c.minimum, c.maximum, c.step)
        assert len(spec["tooltip"]) > 10
    assert info["output"] == ["LP_MOTION", "IMAGE"]


def test_neutral_edit_is_the_source_motion_and_run_equals_preview(env, face, pack, runs):
    extract_motion = core(pack, "extract").extract_motion
    res = runs["neutral"]
    motion, image = res.args
    src = extract_motion(face["models"], face["faces"])
    for k in ("R", "exp", "t", "scale", "kp", "pitch", "yaw", "roll"):
        assert torch.equal(getattr(motion, k), getattr(src, k)), k
    assert motion.anchor is not None and torch.equal(motion.anchor.exp, src.exp)
    assert image.shape == (1, 512, 512, 3) and image.dtype == torch.float32
    ids = res.ui["lp_preview"]
    assert len(ids) == 1 and len(ids[0]["id"]) == 24 and res.ui["images"]
    # the preview route with the same (neutral) values gives the node's pixels
    routes = _routes(pack)
    status, headers, body = routes.preview_response(json.dumps({"source": ids[0]["id"], "controls": {}}).encode())
    assert status == 200 and headers["Content-Type"] == "image/png"
    expect = np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(_png_pixels(body), expect)


def test_slider_values_change_image_and_motion_and_preview_matches_run(env, face, pack, runs):
    routes = _routes(pack)
    controls = EDIT
    res = runs["edited"]
    motion, image = res.args
    neutral_motion_, neutral_image = runs["neutral"].args
    assert not torch.equal(image, neutral_image)
    assert float((motion.yaw - neutral_motion_.yaw)[0]) == pytest.approx(12.0 * 0.8, abs=1e-4)
    assert not torch.equal(motion.exp, neutral_motion_.exp)
    cache = routes.preview_cache()
    before = cache.feature_computations
    body = json.dumps({"source": res.ui["lp_preview"][0]["id"], "controls": controls, "strength": 0.8}).encode()
    status, headers, png = routes.preview_response(body)
    assert status == 200 and float(headers["X-LivePortrait-Render-Ms"]) > 0
    assert np.array_equal(_png_pixels(png), np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8))
    assert cache.feature_computations == before  # one warp+decode, no re-extraction


def test_routes_reject_bad_requests_and_keep_serving(env, face, pack, runs):
    routes = _routes(pack)
    (key,) = [x["id"] for x in runs["neutral"].ui["lp_preview"]]
    bad = [
        (b"{not json", 400, "JSON"),
        (b"[1, 2]", 400, "object"),
        (json.dumps({"source": "0" * 24, "controls": {}}).encode(), 404, "unknown"),
        (json.dumps({"source": "../../etc/passwd", "controls": {}}).encode(), 404, "unknown"),
        (json.dumps({"source": key, "controls": {"smile": 5.0}}).encode(), 400, "smile"),
        (json.dumps({"source": key, "controls": {"nose_length": 1.0}}).encode(), 400, "nose_length"),
        (json.dumps({"source": key, "controls": {"smile": "a lot"}}).encode(), 400, "smile"),
        (json.dumps({"source": key, "controls": {"smile": True}}).encode(), 400, "smile"),
        (json.dumps({"source": key, "strength": 7}).encode(), 400, "strength"),
        (json.dumps({"source": key, "path": "/tmp/x.png"}).encode(), 400, "path"),
        (b'{"source": "' + b"a" * (70 * 1024) + b'"}', 413, "larger"),
        (b'{"source": "' + key.encode() + b'", "controls": {"smile": NaN}}', 400, "smile"),
    ]
    for body, status, word in bad:
        got, headers, out = routes.preview_response(body)
        assert got == status, (body[:60], got, out)
        assert headers["Content-Type"] == "application/json"
        assert word.lower() in json.loads(out)["error"].lower(), (word, out)
    ok, _, png = routes.preview_response(json.dumps({"source": key, "controls": {"wink": 20}}).encode())
    assert ok == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_newer_request_supersedes_a_waiting_one_and_free_empties_the_cache(env, face, pack, runs):
    routes = _routes(pack)
    (key,) = [x["id"] for x in runs["neutral"].ui["lp_preview"]]
    body = json.dumps({"source": key, "controls": {"smile": 0.3}, "client": "node-5"}).encode()
    first = routes.accept_preview(body)
    routes.accept_preview(body)  # a newer request of the same client arrives before the first renders
    status, _, out = routes.preview_response(body, first)
    assert status == 409 and "newer" in json.loads(out)["error"]
    other = routes.accept_preview(json.dumps({"source": key, "client": "node-6"}).encode())
    assert routes.preview_response(b"", other)[0] == 200  # other clients are not affected
    epoch = routes.cache_epoch()
    assert routes.free_cache() >= 1 and routes.cache_epoch() == epoch + 1
    status, _, out = routes.preview_response(json.dumps({"source": key}).encode())
    assert status == 404 and "run the workflow" in json.loads(out)["error"]
    # the editor's fingerprint changed, so ComfyUI re-runs it and it registers the face again
    assert env["LivePortraitExpressionEditor"].fingerprint_inputs() == epoch + 1
    (again,) = [x["id"] for x in _editor(env, face).ui["lp_preview"]]
    assert again == key and routes.preview_response(json.dumps({"source": key}).encode())[0] == 200


def test_editor_on_a_motion_edits_only_the_frame_range_with_fades(env, face, pack):
    kf = core(pack, "editing.keyframes")
    sequence_from_json, sequence_motion = kf.sequence_from_json, kf.sequence_motion

    drv = sequence_motion(sequence_from_json(json.dumps(
        {"fps": 10, "keys": [{"time": 0, "values": {"head_pitch": 0}}, {"time": 0.9, "values": {"head_pitch": 5}}]})))
    assert len(drv) == 10
    drv = type(drv)(**{**drv.__dict__, "anchor": None})  # like a driving video: no anchor
    motion, _ = _editor(env, face, motion=drv, smile=1.0, frame_start=2, frame_end=8, fade_in=2).args
    d = (motion.exp - drv.exp).abs().amax(dim=(1, 2))
    assert torch.all(d[:2] == 0) and torch.all(d[8:] == 0)
    assert 0 < float(d[2]) < float(d[3]) < float(d[4]) and float(d[4]) == pytest.approx(float(d[7]), rel=1e-6)
    assert motion.anchor is not None and torch.equal(motion.anchor.exp, drv.exp[:1])


def test_keyframes_node_sequence_blink_and_audio(env, pack):
    kf = core(pack, "editing.keyframes")
    sequence_from_json, sequence_values = kf.sequence_from_json, kf.sequence_values

    text = json.dumps({"keys": [{"time": 0, "values": {"smile": 0}}, {"time": 1.0, "values": {"smile": 1.0}}]})
    cls = env["LivePortraitKeyframes"]
    (m,) = run_node(cls, dict(sequence=text, fps=10.0)).args
    assert len(m) == 11 and m.fps == 10.0 and m.anchor is not None
    assert torch.equal(m.exp[0], torch.zeros(21, 3)) and not torch.equal(m.exp[10], m.exp[0])
    ref = sequence_values(sequence_from_json(text))
    assert ref["smile"].shape == (26,)  # the JSON's own fps (25) is replaced by the node's 10
    (blinky,) = run_node(cls, dict(sequence=text, fps=10.0, duration=3.0, blink_interval=1.0,
                                           blink_seed=3)).args
    assert len(blinky) == 30
    # audio: silence then a loud burst from 1.0 s: lips open only during the burst
    sr = 16000
    wave = torch.zeros(1, 1, 2 * sr)
    wave[..., sr:] = 0.5 * torch.sin(torch.arange(sr) * 2 * torch.pi * 220 / sr)
    (talk,) = run_node(cls, dict(sequence='{"keys": []}', fps=10.0, audio={"waveform": wave, "sample_rate": sr},
                                         audio_controls="lips_open=120"), linked=("audio",)).args
    assert len(talk) == 20
    moved = (talk.exp - talk.anchor.exp).abs().amax(dim=(1, 2))
    assert torch.all(moved[:10] == 0) and torch.all(moved[11:] > 0)
    with pytest.raises(Exception, match="audio_controls"):
        run_node(cls, dict(sequence='{"keys": []}', audio={"waveform": wave, "sample_rate": sr},
                                   audio_controls="lips_open=999"), linked=("audio",))
    with pytest.raises(Exception, match="key 1"):
        run_node(cls, dict(sequence=json.dumps({"keys": [{"time": 1, "values": {}},
                                                                  {"time": 0.5, "values": {}}]})))


def test_apply_expression_over_a_range_on_every_face(env, pack):
    Motion, neutral_motion = core(pack, "motion").Motion, core(pack, "motion").neutral_motion

    one = neutral_motion(6, 10.0)
    two = Motion.concat([one, one])
    two.face_id = torch.tensor([0] * 6 + [1] * 6)
    two.frame_index = torch.tensor(list(range(6)) * 2)
    two.anchor = None
    cls = env["LivePortraitApplyExpression"]
    (out,) = run_node(cls, dict(motion=two, controls="smile=1.0, head_yaw=10", frame_start=2, frame_end=5),
                              linked=("motion",)).args
    for f in (0, 1):
        sel = out.face_id == f
        yaw = out.yaw[sel]
        assert torch.all(yaw[:2] == 0) and torch.allclose(yaw[2:5], torch.full((3,), 10.0)) and torch.all(yaw[5:] == 0)
    seq = json.dumps({"keys": [{"time": 0, "values": {"head_pitch": 0}}, {"time": 0.2, "values": {"head_pitch": 10}}]})
    (out2,) = run_node(cls, dict(motion=one, sequence=seq, frame_start=1), linked=("motion",)).args
    assert float(out2.pitch[0]) == 0 and float(out2.pitch[3]) == pytest.approx(10.0)
    with pytest.raises(Exception, match="frame_end"):
        run_node(cls, dict(motion=one, controls="smile=1", frame_start=4, frame_end=2), linked=("motion",))


def test_timeline_scrub_requests_evaluate_the_sequence_in_the_core(env, pack, runs):
    routes = _routes(pack)
    kf = core(pack, "editing.keyframes")
    seq = {"fps": 10, "duration": None, "loop": "hold", "blink": None, "strength": 0.5,
           "keys": [{"time": 0, "values": {"smile": 0}}, {"time": 1.0, "easing": "ease-in", "values": {"smile": 1.0}}]}
    got = routes.sequence_frame(seq, 5)
    ref = kf.sequence_values(kf.sequence_from_dict(seq))["smile"][5]
    assert got == {"controls": {"smile": float(ref)}, "strength": 0.5} and 0 < float(ref) < 0.5  # eased in
    assert routes.sequence_frame(seq, 40)["controls"]["smile"] == 1.0  # past the last key: held
    (key,) = [x["id"] for x in runs["neutral"].ui["lp_preview"]]
    for body, word in ((dict(source=key, sequence=seq, frame=-1), "frame"),
                       (dict(source=key, sequence={**seq, "keys": seq["keys"][::-1]}, frame=0), "key 1"),
                       (dict(source=key, sequence=seq, frame=2, controls={}), "either")):
        status, _, out = routes.preview_response(json.dumps(body).encode())
        assert status == 400 and word in json.loads(out)["error"], out
