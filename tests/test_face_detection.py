"""Face detection backends, 203-point landmark runner, tracking and `crop_faces`.

Stand-in ONNX models (tests/face_standins.py) with the real signatures prove the decoding code;
the offline backend runs on real photos (tests/fixtures/photos, made by
tests/fixtures/make_compact_face_detection.py). Landmark-runner parity uses
../shared/fixtures/parity/crop.npz when present, else tests/fixtures/face_det_lmkrun.npz.
"""
from __future__ import annotations

import os

import cv2
import imageio
import numpy as np
import pytest

from conftest import compact_file, parity_file
from face_standins import det10g_standin, landmark203_standin, lmk106_standin, yunet_standin
from liveportrait_core.errors import FaceNotFoundError, InputError, WeightsError
from liveportrait_core.face.crop import crop_image
from liveportrait_core.face.detectors import DetectedFace, FaceDetector, make_detector
from liveportrait_core.face.detectors import insightface as ins
from liveportrait_core.face.detectors.base import nms, order_faces
from liveportrait_core.face.landmarks import LandmarkRunner, pseudo_guide
from liveportrait_core.face.pipeline import crop_faces

PHOTOS = compact_file("photos")


def photo(name):
    return cv2.imread(os.path.join(PHOTOS, name + ".jpg"))[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def lr():
    """Landmark-runner reference arrays (full crop.npz if available)."""
    path = parity_file("crop.npz")
    return dict(np.load(path or compact_file("face_det_lmkrun.npz")))


@pytest.fixture(scope="module")
def runner(tmp_path_factory, lr):
    """A landmark.onnx stand-in whose output #2 is the fixture's raw output."""
    p = landmark203_standin(str(tmp_path_factory.mktemp("lmk") / "landmark.onnx"),
                            lr["lmkrun_raw"], probe=False)
    return LandmarkRunner(p, cpu_threads=1)


@pytest.fixture(scope="module")
def offline():
    return make_detector("offline")


# ------------------------------------------------------------------ det_10g decoding

def _anchor(stride, col, row, a=0, size=512):
    return (row * (size // stride) + col) * 2 + a


def _encode(box_det, stride, col, row):
    """Distances (stride units) that decode to box_det from anchor (col, row)."""
    cx, cy = col * stride, row * stride
    x0, y0, x1, y1 = box_det
    return np.array([cx - x0, cy - y0, x1 - cx, y1 - cy], np.float32) / stride


def test_det10g_decodes_known_boxes(tmp_path):
    H, W = 480, 640  # landscape: new_w 512, new_h 384, det_scale 0.8
    s = 0.8
    box_a = np.array([100, 80, 300, 330], np.float32)  # image px
    box_b = np.array([420, 200, 520, 320], np.float32)
    pts_a = np.array([[150, 180], [250, 180], [200, 230], [160, 280], [240, 280]], np.float32)
    faces = []
    for box, stride, col, row, score in ((box_a, 16, 12, 12, 0.9), (box_b, 32, 15, 8, 0.6)):
        dist = _encode(box * s, stride, col, row)
        offs = ((pts_a * s - [col * stride, row * stride]) / stride).reshape(-1)
        faces.append((stride, _anchor(stride, col, row), score, dist, offs))
    # a lower-scored near duplicate of A (removed by NMS) and a face under the threshold
    faces.append((8, _anchor(8, 25, 25, 1), 0.8, _encode(box_a * s + 2, 8, 25, 25), np.zeros(10)))
    faces.append((8, _anchor(8, 5, 5), 0.1, _encode([10, 10, 50, 50], 8, 5, 5), np.zeros(10)))
    folder = tmp_path / "models" / "insightface" / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    det10g_standin(str(folder / "det_10g.onnx"), faces)
    det = make_detector("insightface", str(tmp_path), landmarks106=False, det_thresh=0.5)
    got = det.detect(np.zeros((H, W, 3), np.uint8))
    assert len(got) == 2
    np.testing.assert_allclose(got[0].box, box_a, atol=1e-3)
    np.testing.assert_allclose(got[1].box, box_b, atol=1e-3)
    assert got[0].score == pytest.approx(0.9) and got[1].score == pytest.approx(0.6)
    np.testing.assert_allclose(got[0].points5, pts_a, atol=1e-3)
    # lower threshold: the 0.1 face appears, boxes unchanged
    det.det_thresh = 0.05
    got = det.detect(np.zeros((H, W, 3), np.uint8))
    assert [round(f.score, 2) for f in got] == [0.9, 0.6, 0.1]
    np.testing.assert_allclose(got[2].box, np.array([10, 10, 50, 50]) / s, atol=1e-3)  # det px / det_scale


def test_det10g_letterbox_portrait_and_anchors():
    img = np.full((600, 300, 3), 200, np.uint8)
    canvas, scale = ins.letterbox(img, 512)
    assert scale == pytest.approx(512 / 600)
    assert (canvas[:, 256:] == 0).all() and (canvas[:512, :256] == 200).all()
    c = ins.anchor_centers(512, 32)
    assert c.shape == (512, 2)
    np.testing.assert_array_equal(c[:4], [[0, 0], [0, 0], [32, 0], [32, 0]])
    np.testing.assert_array_equal(c[32], [0, 32])


def test_nms_plus_one_convention():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [0, 0, 9, 8]], np.float32)
    # IoU(0,1) = 50/150 = 0.333 (kept at 0.4); IoU(0,2) = 90/100 = 0.9 (removed)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.4) == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3) == [0]


def test_insightface_folder_layouts_and_missing(tmp_path):
    for i, sub in enumerate(("models/insightface/models/buffalo_l", "models/insightface/buffalo_l")):
        root = tmp_path / f"root{i}"
        (root / sub).mkdir(parents=True)
        det10g_standin(str(root / sub / "det_10g.onnx"), [])
        assert ins.find_buffalo_l(str(root))[0] == os.path.normpath(str(root / sub))
        assert ins.find_buffalo_l(str(root / sub))[0] == os.path.normpath(str(root / sub))
        with pytest.raises(WeightsError, match="2d106det.onnx"):
            make_detector("insightface", str(root))
    with pytest.raises(WeightsError) as e:
        make_detector("insightface", str(tmp_path / "nothing"))
    msg = str(e.value)
    assert "det_10g.onnx" in msg and "models/insightface/models/buffalo_l" in msg
    assert "non-commercial" in msg


@pytest.mark.parametrize("inside", [False, True])
def test_2d106det_decoding(tmp_path, inside):
    rng = np.random.default_rng(0)
    p_norm = rng.uniform(-0.6, 0.6, (106, 2)).astype(np.float32)
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    det10g_standin(str(folder / "det_10g.onnx"), [])
    lmk106_standin(str(folder / "2d106det.onnx"), p_norm, normalises_inside=inside)
    assert ins.lmk106_normalisation(str(folder / "2d106det.onnx")) == \
        ((0.0, 1.0) if inside else (127.5, 128.0))
    det = make_detector("insightface", str(folder))
    box = np.array([100, 50, 180, 170], np.float32)  # w 80, h 120
    got = det.landmarks106(np.zeros((300, 300, 3), np.uint8), box)
    s = 192 / (120 * 1.5)
    want = ((p_norm + 1) * 96 - 96) / s + [140, 110]
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_insightface_through_crop_faces(tmp_path, runner):
    """det_10g + 2d106det stand-ins → crop_faces: the source crop is the 106-guided crop."""
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    box = np.array([200, 100, 300, 220], np.float32)
    det10g_standin(str(folder / "det_10g.onnx"),
                   [(16, _anchor(16, 16, 10), 0.9, _encode(box * 0.8, 16, 16, 10), np.zeros(10))])
    p_norm = np.random.default_rng(1).uniform(-0.5, 0.5, (106, 2)).astype(np.float32)
    lmk106_standin(str(folder / "2d106det.onnx"), p_norm)
    det = make_detector("insightface", str(folder))
    img = np.random.default_rng(2).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    face = det.detect(img)[0]
    np.testing.assert_allclose(face.box, box, atol=1e-3)
    fc = crop_faces(img, det, runner)
    want = crop_image(img, face.points106, 512, 2.3, 0.0, -0.125)
    np.testing.assert_array_equal(fc.M_c2o[0].numpy(), want.M_c2o)
    np.testing.assert_array_equal(fc.crops[0].numpy(), cv2.resize(want.crop, (256, 256),
                                                                  interpolation=cv2.INTER_AREA))


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
    eye, lip = runner.ratios(lr["lmkrun_lmk203"][None])
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


# ------------------------------------------------------------------ offline backend, real photos

@pytest.mark.parametrize("name,box", [("s0", (245, 76, 336, 167)), ("s6", (236, 236, 391, 392)),
                                      ("s12", (98, 98, 254, 254))])
def test_offline_finds_the_face(offline, name, box):
    img = photo(name)
    faces = offline.detect(img)
    assert len(faces) == 1, [f.box for f in faces]
    b = faces[0].box
    # where the face is (boxes checked by eye on the photos), ±25 % of its size
    tol = 0.25 * (box[2] - box[0])
    np.testing.assert_allclose(b, box, atol=tol)


@pytest.mark.parametrize("angle", [60, -90])
def test_offline_finds_rolled_and_small_faces(offline, angle):
    img = photo("s12")
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot = cv2.warpAffine(img, M, (w, h))
    faces = offline.detect(rot)
    assert len(faces) == 1 and faces[0].points5 is not None
    eye = faces[0].points5[1] - faces[0].points5[0]
    roll = np.degrees(np.arctan2(eye[1], eye[0]))
    assert abs(roll + angle) <= 41  # the crop turns by ±50°; dlib itself covers up to ~40°
    # the face centre (176, 176 upright) rotates with the picture
    np.testing.assert_allclose(faces[0].center, M @ [176, 176, 1], atol=30)
    small = cv2.resize(photo("s0"), None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    assert len(offline.detect(small)) == 1  # ~25 px face: found by the finer fallback scan


def test_offline_finds_group(offline):
    img = photo("group_t1")
    faces = offline.detect(img)
    assert 5 <= len(faces) <= 7
    sizes = np.array([f.box[2] - f.box[0] for f in faces])
    assert sizes.min() > 25 and sizes.max() < 90  # 640-px wide photo, faces ~45-65 px
    lr_ = order_faces(faces, "left-right")
    assert lr_[0].box[0] < 60 and lr_[-1].box[0] > 520


def test_image_inputs(offline):
    img = photo("s12")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    ref = offline.detect(img)[0].box
    for x in (grey, grey[:, :, None], rgba, img.astype(np.float32) / 255):
        got = offline.detect(x)
        assert len(got) == 1 and np.abs(got[0].box - ref).max() <= 8
    assert offline.detect(np.zeros((8, 8, 3), np.uint8)) == []
    for bad in (np.zeros((1, 1, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(InputError, match="portrait.*empty or too small"):
            offline.detect(bad, name="portrait")
    with pytest.raises(InputError, match="shape"):
        offline.detect(np.zeros((5, 5, 2), np.uint8))
    for bad in (np.zeros((1, 1, 3), np.uint8), np.zeros((0, 0, 3), np.uint8)):
        with pytest.raises(InputError, match="my_photo.*empty or too small"):
            crop_faces(bad, offline, None, name="my_photo")
    with pytest.raises(FaceNotFoundError, match="my_photo: no face found in the image"):
        crop_faces(np.full((64, 64, 3), 128, np.uint8), offline, None, name="my_photo")


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


# ------------------------------------------------------------------ YuNet, Haar, factory

def test_yunet_missing_and_offline(tmp_path, monkeypatch):
    from liveportrait_core.face.detectors import yunet

    with pytest.raises(WeightsError, match=f"{yunet.YUNET_FILE}.*{tmp_path}"):
        make_detector("yunet", str(tmp_path), download=False)

    def offline_download(*a, **k):
        raise OSError("network is unreachable")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline_download)
    with pytest.raises(WeightsError) as e:
        make_detector("yunet", str(tmp_path))
    assert yunet.YUNET_FILE in str(e.value) and str(tmp_path) in str(e.value)
    assert "network is unreachable" in str(e.value)


def test_yunet_wrapper_scales_back(tmp_path, monkeypatch):
    from liveportrait_core.face.detectors import yunet

    model = tmp_path / yunet.YUNET_FILE
    model.write_bytes(b"x")
    seen = {}

    class FakeYN:
        def setInputSize(self, wh):
            seen["size"] = wh

        def detect(self, bgr):
            seen["pixel"] = bgr[0, 0].tolist()
            row = [10, 20, 30, 40] + list(range(10)) + [0.9]
            return 1, np.array([row], np.float32)

    monkeypatch.setattr(cv2.FaceDetectorYN, "create", staticmethod(lambda *a: FakeYN()))
    det = make_detector("yunet", str(tmp_path), max_side=500)
    img = np.zeros((400, 1000, 3), np.uint8)
    img[:] = (1, 2, 3)
    f = det.detect(img)[0]
    assert seen["size"] == (500, 200) and seen["pixel"] == [3, 2, 1]  # BGR in
    np.testing.assert_allclose(f.box, [20, 40, 80, 120])
    np.testing.assert_allclose(f.points5, np.arange(10).reshape(5, 2) * 2)
    assert f.score == pytest.approx(0.9)


def test_yunet_standin_through_opencv(tmp_path):
    """A YuNet-signature graph run by the real cv2.FaceDetectorYN: boxes, points and score come
    back in the caller's pixels (image 640², detection at 320²)."""
    from liveportrait_core.face.detectors import yunet

    yunet_standin(str(tmp_path / yunet.YUNET_FILE), 320,
                  [(16, 10, 6, 0.81, [0.5, 0.25, np.log(5.0), np.log(6.0)], np.arange(10) * 0.1)])
    det = make_detector("yunet", str(tmp_path), max_side=320, download=False)
    faces = det.detect(np.zeros((640, 640, 3), np.uint8))
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9, abs=1e-5)
    # centre ((10 + 0.5)·16, (6 + 0.25)·16) = (168, 100), size 80×96 at 320² → ×2
    np.testing.assert_allclose(faces[0].box, np.array([128, 52, 208, 148]) * 2, atol=1e-3)
    want = (np.arange(10).reshape(5, 2) * 0.1 + [10, 6]) * 16 * 2
    np.testing.assert_allclose(faces[0].points5, want, atol=1e-3)


def test_haar_wrapper_and_factory(tmp_path, monkeypatch):
    from liveportrait_core.face.detectors import opencv

    class FakeCascade:
        def __init__(self, path):
            self.path = path

        def empty(self):
            return False

        def detectMultiScale2(self, grey, **kw):
            return np.array([[10, 10, 20, 20], [50, 50, 40, 40]]), np.array([3, 7])

    xml = tmp_path / "cascade.xml"
    xml.write_text("<x/>")
    monkeypatch.setattr(cv2, "CascadeClassifier", FakeCascade, raising=False)
    det = opencv.HaarDetector(cascade=str(xml), max_side=400)
    faces = det.detect(np.zeros((200, 800, 3), np.uint8))
    assert [f.score for f in faces] == [7, 3]
    np.testing.assert_allclose(faces[0].box, [100, 100, 180, 180])
    with pytest.raises(InputError, match="not one of"):
        make_detector("magic")
    assert make_detector("offline").name == "offline"
