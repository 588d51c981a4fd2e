"""Face detection backends: det_10g / 2d106det decoding on stand-in ONNX models with the real
signatures (tests/face_standins.py), the offline backend on real photos (tests/fixtures/photos),
YuNet and Haar wrappers and the backend factory."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from face_standins import det10g_standin, lmk106_standin, yunet_standin
from liveportrait_core.errors import FaceNotFoundError, InputError, WeightsError
from liveportrait_core.face.crop import crop_image
from liveportrait_core.face.detectors import make_detector
from liveportrait_core.face.detectors import insightface as ins
from liveportrait_core.face.detectors.base import nms, order_faces
from liveportrait_core.face.pipeline import crop_faces
from face_testing import PHOTOS, lr, offline, photo, runner  # noqa: F401  (fixtures)


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


# ------------------------------------------------------------------ MediaPipe landmarker faces


def _mesh(cx: float, cy: float, r: float = 20.0, normalised_by=None) -> dict:
    """A 478-point stand-in face mesh around (cx, cy): points on a circle, the eye / nose /
    mouth indices the adapter reads placed where a face has them."""
    ang = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).astype(np.float32)
    for i, (dx, dy) in {33: (-12, -6), 133: (-4, -6), 362: (4, -6), 263: (12, -6), 1: (0, 2),
                        61: (-8, 10), 291: (8, 10)}.items():
        pts[i] = (cx + dx, cy + dy)
    if normalised_by is not None:
        pts = pts / np.array(normalised_by[::-1], np.float32)
    return {"landmarks_xy": pts.tolist(), "score": 0.9}


def test_mediapipe_faces_are_matched_by_frame_index_not_pixels():
    from liveportrait_core.face.detectors.mediapipe import MediaPipeFaces
    from liveportrait_core.face.tracking import track_faces

    frames = np.zeros((3, 120, 160, 3), np.uint8)  # identical pixels: only the index tells them apart
    per_frame = [[_mesh(50, 60)], [_mesh(80, 60, normalised_by=(120, 160))], [_mesh(110, 60)]]
    det = MediaPipeFaces(per_frame, 3, (120, 160))
    boxes = [det.detect_frame(i, frames[i])[0].box for i in range(3)]
    np.testing.assert_allclose([(b[0] + b[2]) / 2 for b in boxes], [50, 80, 110], atol=0.1)  # normalised scaled
    f = det.detect_frame(0)[0]
    np.testing.assert_allclose(f.points5, [[42, 54], [58, 54], [50, 62], [42, 70], [58, 70]], atol=1e-4)
    track = track_faces(list(frames), det, None)[0]
    centres = track.landmarks.mean(axis=1)[:, 0]
    assert centres[0] < centres[1] < centres[2] and track.found.all()  # each frame its own face
    with pytest.raises(InputError, match="3 frames but image has 2"):
        MediaPipeFaces(per_frame, 2, (120, 160))
    with pytest.raises(InputError, match="frame index"):
        det.detect(frames[0])
    assert MediaPipeFaces(per_frame[:1], 1, (120, 160)).detect(frames[0])[0].score == pytest.approx(0.9)
