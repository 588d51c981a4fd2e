"""203-point landmark runner, tracking, face selection and `crop_faces`.

Landmark-runner parity uses ../shared/fixtures/parity/crop.npz when present, else
tests/fixtures/face_det_lmkrun.npz.
"""
from __future__ import annotations

import os

import cv2
import imageio
import numpy as np
import pytest

from conftest import compact_file, parity_file
from face_standins import landmark203_standin
from liveportrait_core.errors import FaceNotFoundError, WeightsError
from liveportrait_core.face.crop import crop_image
from liveportrait_core.face.detectors import DetectedFace, FaceDetector
from liveportrait_core.face.landmarks import LandmarkRunner, pseudo_guide
from liveportrait_core.face.pipeline import crop_faces
from liveportrait_core.face.tracking import FaceTracker, track_faces
from liveportrait_core.motion import eye_lip_ratios
from face_testing import PHOTOS, lr, offline, photo, runner  # noqa: F401  (fixtures)


# ------------------------------------------------------------------ 203-point runner

def test_landmark_runner_matches_reference(lr, runner):
    img, lmk106 = lr["image_u8"], lr["lmk106"]
    c = runner.crop(img, lmk106)
    np.testing.assert_allclose(c.M_o2c, lr["lmkrun_M_o2c"], rtol=1e-5, atol=1e-5)
    assert (c.crop == lr["lmkrun_input_u8"]).mean() >= 0.999
    np.testing.assert_allclose(runner.run(img, lmk106), lr["lmkrun_lmk203"], atol=1e-3)
    # tracking: guided by the 203 points decoded above, same image
    c2 = runner.crop(img, lr["lmkrun_lmk203"])
    np.testing.assert_allclose(c2.M_o2c, lr["lmkrun_track_M_o2c"], rtol=1e-5, atol=1e-5)
    pts = lr["lmkrun_track_raw"].reshape(-1, 2) * 224
    np.testing.assert_allclose(pts @ c2.M_c2o[:2, :2].T + c2.M_c2o[:2, 2],
                               lr["lmkrun_track_lmk203"], atol=1e-3)
    eye, lip = (r.numpy() for r in eye_lip_ratios(lr["lmkrun_lmk203"][None]))
    np.testing.assert_allclose(eye, lr["eye_ratio"], rtol=1e-5)
    np.testing.assert_allclose(lip, lr["lip_ratio"], rtol=1e-5)


class Given106(FaceDetector):
    """Stands for insightface: one face with the fixture's 106 points."""

    name = "given106"

    def __init__(self, lmk106):
        self.lmk106 = lmk106

    def _detect(self, img):
        box = np.concatenate([self.lmk106.min(0), self.lmk106.max(0)])
        return [DetectedFace(box, 0.9, None, self.lmk106)]


def test_reference_source_paths(runner):
    """Image source: crop guided by the 106 points, 203 points for the ratios (crop.npz);
    video source: crops guided by the tracked 203 points (crop203_M_o2c)."""
    full = parity_file("crop.npz")
    d = np.load(full or compact_file("face_crop.npz"))
    img, lmk106 = d["image_u8"], d["lmk106"]
    fc = crop_faces(img, Given106(lmk106), runner)
    np.testing.assert_allclose(fc.M_c2o[0].numpy(), d["crop106_M_c2o"], rtol=1e-5, atol=1e-4)
    ours = fc.crops[0].numpy() if full else fc.crops[0].numpy()[::2, ::2]
    assert (ours == d["crop106_img256_u8"]).mean() >= 0.999
    lmk203 = runner.run(img, lmk106)
    want = lmk203 @ d["crop106_M_o2c"][:2, :2].T + d["crop106_M_o2c"][:2, 2]
    np.testing.assert_allclose(fc.landmarks[0].numpy(), want, atol=1e-3)
    fv = crop_faces(np.stack([img, img]), Given106(lmk106), runner, detect_every=0)
    M_o2c0 = np.linalg.inv(fv.M_c2o[0].numpy().astype(np.float64))
    np.testing.assert_allclose(M_o2c0, d["crop203_M_o2c"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fv.landmarks[0].numpy(), d["crop203_pt_crop"], atol=1e-2)


class Replay:
    """A landmark runner that replays given per-frame 203 points (frame 0, 1, 2, …)."""

    def __init__(self, lmks):
        self.lmks, self.calls = lmks, 0

    def from_face(self, image, face, box_to_extent=None, refine=1):
        self.calls = 1
        return self.lmks[0]

    def run(self, image, guide):
        self.calls += 1
        return self.lmks[self.calls - 1]


def test_reference_driving_auto_crop():
    """purpose='driving': one global unrotated box (crop.npz drvcrop_*), 256 by bilinear."""
    full = parity_file("crop.npz")
    d = np.load(full or compact_file("face_crop.npz"))
    frames = d["drvcrop_frames_u8"] if full else np.stack([d["image_u8"]] * 3)
    lmk = d["drvcrop_lmk203"]
    fc = crop_faces(frames, Given106(d["lmk106"]), Replay(lmk), purpose="driving", detect_every=0)
    assert len(fc) == 3
    M_o2c = np.linalg.inv(fc.M_c2o[0].numpy().astype(np.float64))
    x0, y0, x1, y1 = d["drvcrop_global_bbox"]
    np.testing.assert_allclose(M_o2c[0, 0], 512 / (x1 - x0), rtol=1e-5)
    np.testing.assert_allclose(M_o2c[:2, 2], [256 - M_o2c[0, 0] * (x0 + x1) / 2,
                                              256 - M_o2c[0, 0] * (y0 + y1) / 2], atol=1e-3)
    np.testing.assert_allclose(fc.landmarks.numpy(), d["drvcrop_lmk_crop"], atol=1e-3)
    if full:
        want = cv2.resize(d["drvcrop_frame0_crop_u8"], (256, 256))
        assert (fc.crops[0].numpy() == want).mean() >= 0.999


def test_landmark_runner_feeds_rgb_over_255(tmp_path, lr):
    p = landmark203_standin(str(tmp_path / "landmark.onnx"), lr["lmkrun_raw"], probe=True)
    r = LandmarkRunner(p, cpu_threads=1)
    crop = np.zeros((224, 224, 3), np.uint8)
    crop[..., 0], crop[..., 2] = 51, 204
    raw = r.raw(crop)
    assert raw.shape == (406,)
    np.testing.assert_allclose(raw[:2], [0.2, 0.8], atol=5e-5)  # channel 0 = R, /255, NCHW
    np.testing.assert_array_equal(raw[2:], lr["lmkrun_raw"][0, 2:])


def test_landmark_model_lookup_and_missing(tmp_path, lr):
    (tmp_path / "liveportrait").mkdir()
    landmark203_standin(str(tmp_path / "liveportrait" / "landmark.onnx"), lr["lmkrun_raw"])
    assert LandmarkRunner(str(tmp_path)).path.endswith(os.path.join("liveportrait", "landmark.onnx"))
    with pytest.raises(WeightsError, match="landmark.onnx.*nowhere"):
        LandmarkRunner(str(tmp_path / "nowhere"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot load"):
        LandmarkRunner(str(bad))


def test_pseudo_guide_orients_and_sizes_crop():
    face = DetectedFace(np.array([100, 100, 200, 200], np.float32), 1.0)
    g = pseudo_guide(face, (0.0, 0.0, 0.0, 0.0))
    assert g.shape == (68, 2)
    assert g.min(0) == pytest.approx([100, 100]) and g.max(0) == pytest.approx([200, 200])
    # 5 points rolled by 30°: the crop rotates with them
    ang = np.deg2rad(30)
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    p5 = (np.array([[-20, -10], [20, -10], [0, 5], [-15, 25], [15, 25]]) @ R.T + 150).astype(np.float32)
    face.points5 = p5
    r = crop_image(np.zeros((300, 300, 3), np.uint8), pseudo_guide(face), 224, 1.5, 0, 0)
    assert np.degrees(np.arctan2(r.M_c2o[1, 0], r.M_c2o[0, 0])) == pytest.approx(30, abs=0.01)


# ------------------------------------------------------------------ selection and ordering

class Fixed(FaceDetector):
    """Returns the same boxes (shifted by `shift` px per call) on every frame that isn't black."""

    name = "fixed"
    box_to_extent = (0.0, 0.0, 0.0, 0.0)

    def __init__(self, boxes):
        self.boxes = [np.asarray(b, np.float32) for b in boxes]

    def _detect(self, img):
        if img.max() == 0:
            return []
        shift = float(img[0, 0, 0])  # tests encode a per-frame shift in pixel (0,0)
        return [DetectedFace(b + [shift, 0, shift, 0], 1.0) for b in self.boxes]


BOXES = [[10, 60, 50, 100], [100, 20, 180, 100], [200, 150, 230, 180]]  # medium, large, small


def _centre(fc, i):
    return (fc.M_c2o[i].numpy() @ [256, 256, 1])[:2]


@pytest.mark.parametrize("order,first", [("large-small", 1), ("small-large", 2), ("left-right", 0),
                                         ("right-left", 2), ("top-bottom", 1), ("bottom-top", 2)])
def test_order_and_index(order, first):
    img = np.full((240, 320, 3), 9, np.uint8)
    img[0, 0] = 0
    fc = crop_faces(img, Fixed(BOXES), None, face_index=0, order=order)
    b = np.array(BOXES[first], np.float32)
    assert len(fc) == 1 and fc.landmarks is None
    np.testing.assert_allclose(_centre(fc, 0), [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2 - 0.125 * 2.3 * (b[2] - b[0])],
                               atol=1.0)
    with pytest.raises(FaceNotFoundError, match="face index 3 requested but 3 faces were found"):
        crop_faces(img, Fixed(BOXES), None, face_index=3, order=order)


def test_all_faces_video_ids_stable():
    """3 faces, 4 frames moving right by 0/5/10/15 px, frame 2 black: ids follow their face."""
    frames = np.full((4, 240, 320, 3), 9, np.uint8)
    for i, sh in enumerate((0, 5, 10, 15)):
        frames[i, 0, 0] = sh
    frames[2] = 0
    fc = crop_faces(frames, Fixed(BOXES), None, face_index="all", order="left-right")
    assert len(fc) == 12 and fc.missing_frames == (2,)
    assert fc.frame_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert fc.face_id.tolist() == [0, 1, 2] * 4
    c = np.array([_centre(fc, i) for i in range(12)]).reshape(4, 3, 2)
    np.testing.assert_allclose(c[1] - c[0], [[5, 0]] * 3, atol=0.01)
    np.testing.assert_allclose(c[2], c[1], atol=1e-4)  # blank frame keeps the last crop
    np.testing.assert_allclose(c[3] - c[0], [[15, 0]] * 3, atol=0.01)


def test_face_found_again_after_moving_while_missing():
    frames = np.full((4, 240, 320, 3), 9, np.uint8)
    frames[:, 0, 0] = np.array([0, 0, 100, 100])[:, None]
    frames[1] = 0
    fc = crop_faces(frames, Fixed(BOXES[:1]), None)
    assert fc.missing_frames == (1,)
    c = np.array([_centre(fc, i) for i in range(4)])
    np.testing.assert_allclose(c[1], c[0], atol=1e-4)
    np.testing.assert_allclose(c[2:] - c[0], [[100, 0], [100, 0]], atol=0.01)


def test_video_first_frames_without_face_and_driving_box():
    frames = np.full((4, 240, 320, 3), 9, np.uint8)
    frames[:2] = 0
    frames[:, 0, 0] = 0
    fc = crop_faces(frames, Fixed(BOXES), None, purpose="driving")
    assert fc.missing_frames == (0, 1) and len(fc) == 4
    M = fc.M_c2o.numpy()
    assert np.abs(M - M[0]).max() == 0 and M[0, 0, 1] == 0  # one unrotated global box
    np.testing.assert_allclose(M[0, 0, 0] * 512, 2.2 * 80, rtol=1e-5)
    np.testing.assert_allclose(_centre(fc, 0), [140, 60 - 0.1 * 2.2 * 80], atol=0.5)


# ------------------------------------------------------------------ real video with landmarks

def test_video_tracking_with_blank_frame(offline, runner):
    frames = np.stack(imageio.mimread(os.path.join(PHOTOS, "s18_6f.mp4")))[:5]
    frames[2] = 0
    fc = crop_faces(frames, offline, runner, purpose="source", name="s18")
    assert len(fc) == 5 and fc.missing_frames == (2,)
    assert fc.crops.shape == (5, 256, 256, 3) and fc.landmarks.shape == (5, 203, 2)
    M = fc.M_c2o.numpy()
    np.testing.assert_array_equal(M[2], M[1])
    c = [(m @ [256, 256, 1])[:2] for m in M]
    assert 240 < c[0][0] < 360 and 40 < c[0][1] < 160  # the face (box ~255..345, 46..137)
    assert max(np.abs(ci - c[0]).max() for ci in c) < 20
    # smoothing keeps shapes, 0 = per-frame crops
    fs = crop_faces(frames, offline, runner, smooth=2.0)
    assert fs.M_c2o.shape == (5, 3, 3)


def test_single_image_with_landmarks_and_none_mode(offline, runner):
    img = photo("s12")
    fc = crop_faces(img, offline, runner)
    assert len(fc) == 1 and fc.landmarks.shape == (1, 203, 2) and fc.image_size == img.shape[:2]
    # `none` mode: the frame itself is the crop
    crop = cv2.resize(img[60:300, 40:320], (256, 256), interpolation=cv2.INTER_AREA)
    fn = crop_faces(crop, offline, runner, mode="none")
    np.testing.assert_array_equal(fn.crops[0].numpy(), crop)
    np.testing.assert_allclose(fn.M_c2o[0].numpy()[0, 0], 0.5, rtol=1e-6)
    assert fn.landmarks.shape == (1, 203, 2)
    # no detectable face: the face is assumed framed like a source crop; landmarks still come
    grey = np.full((3, 128, 128, 3), 120, np.uint8)
    fg = crop_faces(grey, offline, runner, mode="none")
    assert len(fg) == 3 and fg.landmarks.shape == (3, 203, 2)
    assert np.isfinite(fg.landmarks.numpy()).all()
    assert crop_faces(grey, None, None, mode="none").landmarks is None


# ------------------------------------------------------------------ incremental tracking

def _same_tracks(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.face_id == w.face_id
        np.testing.assert_array_equal(g.landmarks, w.landmarks)
        np.testing.assert_array_equal(g.found, w.found)
        assert (g.guide106 is None) == (w.guide106 is None)


def _fed(frames, splits, *args, **kw):
    """FaceTracker fed `frames` in chunks of the given lengths (an empty chunk included)."""
    tracker = FaceTracker(*args, **kw)
    start = 0
    for n in splits:
        tracker.feed(frames[start:start + n])
        start += n
    assert start == len(frames)
    return tracker.finish()


def test_incremental_tracker_equals_track_faces():
    """Chunk after chunk gives what the whole list gives: faceless first frames, a blank frame
    mid-video, 3 faces moving, and a chunk boundary right at the first face."""
    frames = np.full((7, 240, 320, 3), 9, np.uint8)
    frames[:, 0, 0] = np.array([0, 0, 0, 5, 10, 15, 20])[:, None]
    frames[:2] = 0
    frames[4] = 0
    want = track_faces(list(frames), Fixed(BOXES), None, "all", "left-right", 1, "v")
    assert [t.missing_frames for t in want] == [[0, 1, 4]] * 3
    for splits in ([2, 0, 3, 2], [1] * 7, [3, 3, 1]):
        _same_tracks(_fed(list(frames), splits, Fixed(BOXES), None, "all", "left-right", 1, "v"), want)
    with pytest.raises(FaceNotFoundError, match="any of its 3 frames"):
        _fed(list(np.zeros((3, 32, 32, 3), np.uint8)), [2, 1], Fixed(BOXES), None, name="v")


def test_incremental_tracker_with_landmarks(offline, runner):
    frames = np.stack(imageio.mimread(os.path.join(PHOTOS, "s18_6f.mp4")))[:5]
    frames[2] = 0
    want = track_faces(list(frames), offline, runner)
    assert want[0].missing_frames == [2]
    seen = []
    got = _fed(list(frames), [2, 3], offline, runner, progress=lambda d, t: seen.append((d, t)))
    _same_tracks(got, want)
    assert seen == [(i, None) for i in range(1, 6)]  # per frame; total unknown while streaming
