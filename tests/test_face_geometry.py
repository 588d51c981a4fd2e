"""Face crop / paste-back geometry: parity with the reference fixtures and behaviour of the extras.

Parity data: ../shared/fixtures/parity/{crop,e2e_image_to_video}.npz when present, else the compact
copies tests/fixtures/face_{crop,e2e}.npz (made by tests/fixtures/make_compact_face.py; big images
are stored as the slices listed in their `views_json`, and the photo is stored once).
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import compact_file, parity_file
from face_testing import crop_driving_video, crop_video

from liveportrait_core.errors import InputError, LivePortraitError
from liveportrait_core.face import crop as C
from liveportrait_core.face import paste as P
from liveportrait_core.images import to_rgb_u8


class Fixture:
    """Arrays of a parity file; `view(name)` = the slice of the full array that is available."""

    def __init__(self, full: str, compact: str, aliases=None):
        path = parity_file(full)
        self.full = path is not None
        self.d = np.load(path or compact_file(compact))
        self.views = {} if self.full else json.loads(str(self.d["views_json"]))
        self.aliases = aliases or {}

    def __getitem__(self, name):
        if name not in self.d.files and name in self.aliases:
            other, key = self.aliases[name]
            return other[key]
        return self.d[name]

    def view(self, name):
        if name not in self.d.files and not self.full and name in self.aliases:
            other, key = self.aliases[name]
            return other.view(key)
        spec = self.views.get(name)
        return Ellipsis if spec is None else tuple(slice(*s) for s in spec)


@pytest.fixture(scope="module")
def fc():
    return Fixture("crop.npz", "face_crop.npz")


@pytest.fixture(scope="module")
def fe(fc):
    mm = Fixture("motion_math.npz", "face_e2e.npz")
    return Fixture("e2e_image_to_video.npz", "face_e2e.npz",
                   {"source_image_u8": (fc, "image_u8"), "source_crop256_u8": (fc, "crop106_img256_u8"),
                    "drv_video_cropped_lmk_crop512": (mm, "drv_video_cropped_lmk_crop512")})


def assert_img(ours, ref, min_exact=0.999):
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() >= min_exact, (diff == 0).mean()


def assert_mat(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-3)
    assert ours.dtype == np.float32


# ------------------------------------------------------------------ crop parity


def test_rect_and_matrices_106(fc):
    lmk = fc["lmk106"]
    r = C.parse_rect_from_landmark(lmk, 2.3, 0.0, -0.125)
    np.testing.assert_allclose(r.center, fc["rect106_center"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(r.side, fc["rect106_size"][0], rtol=1e-6)
    assert abs(r.angle - float(fc["rect106_angle"])) < 1e-9
    res = C.crop_image(fc["image_u8"], lmk)
    assert_mat(res.M_o2c, fc["crop106_M_o2c"])
    assert_mat(res.M_c2o, fc["crop106_M_c2o"])
    np.testing.assert_allclose(res.landmarks, fc["crop106_pt_crop"], atol=1e-3)
    np.testing.assert_allclose(res.M_c2o @ res.M_o2c, np.eye(3), atol=1e-5)
    # vx_ratio: 0 is the reference result; it is honoured (like the reference's low-level helper)
    assert_mat(C.crop_image(fc["image_u8"], lmk, vx_ratio=0.0).M_o2c, fc["crop106_vx02_M_o2c"])
    vx = C.crop_image(fc["image_u8"], lmk, vx_ratio=0.2).M_o2c
    assert_mat(vx[:2], fc["est106_vx02_M_INV"])
    assert abs(vx[0, 2] - fc["crop106_M_o2c"][0, 2]) > 50
    norot = C.crop_image(fc["image_u8"], lmk, scale=2.0, vy_ratio=0.05, rotate=False)
    assert_mat(norot.M_o2c, fc["crop106_norot_s2_vy005_M_o2c"])


def test_crop_images_and_network_input(fc):
    res = C.crop_image(fc["image_u8"], fc["lmk106"], 512, *C.SOURCE)
    assert res.crop.shape == (512, 512, 3) and res.crop.dtype == np.uint8
    assert_img(res.crop[fc.view("crop106_img_u8")], fc["crop106_img_u8"])
    net = C.network_input(res.crop)
    assert net.shape == (256, 256, 3)
    assert_img(net[fc.view("crop106_img256_u8")], fc["crop106_img256_u8"])


def test_landmark_runner_and_203_crops(fc):
    img = fc["image_u8"]
    run = C.crop_image(img, fc["lmk106"], 224, *C.LANDMARK_RUNNER)
    assert_mat(run.M_o2c, fc["lmkrun_M_o2c"])
    assert_img(run.crop[fc.view("lmkrun_input_u8")], fc["lmkrun_input_u8"])
    track = C.crop_image(img, fc["lmkrun_lmk203"], 224, *C.LANDMARK_RUNNER)
    assert_mat(track.M_o2c, fc["lmkrun_track_M_o2c"])
    src203 = C.crop_image(img, fc["lmkrun_lmk203"])
    assert_mat(src203.M_o2c, fc["crop203_M_o2c"])
    np.testing.assert_allclose(src203.landmarks, fc["crop203_pt_crop"], atol=1e-3)


@pytest.mark.parametrize("k", [5, 9, 68, 101, 120])
def test_guide_sets(fc, k):
    pts = fc[f"guide{k}_pts"]
    np.testing.assert_allclose(C.guide_points(pts), fc[f"guide{k}_pt2"], atol=1e-4)
    r = C.parse_rect_from_landmark(pts)
    np.testing.assert_allclose(r.center, fc[f"guide{k}_rect_center"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(r.side, fc[f"guide{k}_rect_size"][0], rtol=1e-6)
    assert abs(r.angle - float(fc[f"guide{k}_rect_angle"])) < 1e-9
    res = C.crop_image(fc["image_u8"], pts)
    assert_mat(res.M_o2c, fc[f"guide{k}_M_o2c"])
    assert_mat(res.M_c2o, fc[f"guide{k}_M_c2o"])


def test_guide_points_203_and_bad_counts(fc):
    lmk = fc["lmkrun_lmk203"]
    e = (lmk[[0, 6, 12, 18]].mean(0) + lmk[[24, 30, 36, 42]].mean(0)) / 2
    np.testing.assert_allclose(C.guide_points(lmk), [e, (lmk[48] + lmk[66]) / 2], atol=1e-4)
    for k in (4, 7, 100):
        with pytest.raises(InputError, match="not a supported landmark layout"):
            C.crop_image(fc["image_u8"], np.zeros((k, 2), np.float32) + np.arange(k)[:, None])


def test_resize_to_limit(fc):
    for hw, out in zip(fc["resize_in_hw"], fc["resize_out_hw"]):
        got = C.resize_to_limit(np.zeros((hw[0], hw[1], 3), np.uint8))
        assert got.shape[:2] == tuple(out)
    img = fc["image_u8"]
    for i in (0, 1):
        y0, y1, x0, x1 = fc[f"resize_img{i}_box"]
        md, dv = fc[f"resize_img{i}_params"]
        got = C.resize_to_limit(img[y0:y1, x0:x1], int(md), int(dv))
        assert_img(got[fc.view(f"resize_img{i}_out_u8")], fc[f"resize_img{i}_out_u8"])
    big = cv2.resize(img, tuple(int(v) for v in fc["resize_img2_in_wh"]))
    got = C.resize_to_limit(big)
    assert got.shape[:2] == tuple(fc["resize_img2_out_hw"])
    assert_img(got[::4, ::4][fc.view("resize_img2_out_sub4_u8")], fc["resize_img2_out_sub4_u8"])


def test_driving_boxes_and_crop(fc):
    lmk = fc["drvcrop_lmk203"]
    boxes = C.driving_boxes(lmk)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, fc["drvcrop_bboxes"].astype(np.float32))
    g = C.global_box(boxes)
    np.testing.assert_array_equal(g, fc["drvcrop_global_bbox"].astype(np.float32))
    # the float32 mean matters: a float64 mean is a different box
    assert not np.array_equal(boxes.astype(np.float64).mean(0).astype(np.float32), g)
    frame0 = fc["drvcrop_frames_u8"][0] if fc.full else fc["image_u8"]
    frames = np.stack([frame0] * 3)
    crops, M, lmk_crop = crop_driving_video(frames, lmk)
    assert crops.shape == (3, 512, 512, 3) and M.shape == (3, 3)
    assert_img(crops[0][fc.view("drvcrop_frame0_crop_u8")], fc["drvcrop_frame0_crop_u8"])
    np.testing.assert_allclose(lmk_crop, fc["drvcrop_lmk_crop"], atol=1e-3)
    shifted = C.driving_boxes(lmk, vx_ratio=0.2)  # honoured here too (the reference drops it)
    np.testing.assert_allclose(shifted[:, 0] - boxes[:, 0], 0.2 * (boxes[:, 2] - boxes[:, 0]),
                               rtol=0.05)


# ------------------------------------------------------------------ paste parity


def test_mask_template_exact(fc):
    np.testing.assert_array_equal(P.mask_template(), fc["mask_template_u8"])


def assert_mask_u8(mask, ref):
    """The paste mask as 8-bit levels equals the reference's. OpenCV builds differ in the last bit
    of warpAffine's fixed-point interpolation: allow 1 level on at most 1 pixel in 10 000."""
    got = np.rint(mask * 255).astype(np.int16)
    diff = np.abs(got - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-4, (int(diff.max()), float((diff > 0).mean()))


def test_paste_back_parity(fc):
    img = fc["image_u8"]
    crop = 255 - C.crop_image(img, fc["lmk106"]).crop  # = paste_crop_u8 (the crop is exact)
    out, masks = P.paste_back(img, crop, fc["crop106_M_c2o"])
    assert out.shape == (1,) + img.shape and masks.shape == (1, 512, 512)
    assert_mask_u8(masks[0], fc["paste_mask_ori_u8"])
    assert_img(out[0][fc.view("paste_out_u8")], fc["paste_out_u8"])
    outside = masks[0] == 0
    np.testing.assert_array_equal(out[0][outside], img[outside])
    assert (out[0] != img).any(axis=-1).mean() > 0.1  # it did paste something


def test_e2e_crop_and_pasteback(fe):
    img = fe["source_image_u8"]
    res = C.crop_image(img, fe["source_lmk106"])
    assert_mat(res.M_o2c, fe["source_M_o2c"])
    assert_mat(res.M_c2o, fe["source_M_c2o"])
    assert_img(C.network_input(res.crop)[fe.view("source_crop256_u8")], fe["source_crop256_u8"])
    crop = np.zeros((1, 512, 512, 3), np.uint8)
    crop[fe.view("base_I_p_u8")] = fe["base_I_p_u8"][:1]
    out, masks = P.paste_back(img, crop, fe["source_M_c2o"])
    assert_mask_u8(masks[0], fe["mask_ori_u8"])
    assert_img(out[0][fe.view("base_pasteback0_u8")], fe["base_pasteback0_u8"])


def test_e2e_driving_autocrop(fe):
    """motion_math.npz's drv_video_cropped case: the e2e driving frames auto-cropped."""
    lmk = fe["driving_lmk203"]
    frames = fe["driving_frames_u8"] if fe.full else np.zeros((3, 256, 256, 3), np.uint8)
    crops, M, lmk_crop = crop_driving_video(frames, lmk)
    np.testing.assert_allclose(lmk_crop, fe["drv_video_cropped_lmk_crop512"], atol=1e-3)
    mm = parity_file("motion_math.npz")
    if fe.full and mm:  # the 512² crops themselves ([::4, ::4]) need the full driving frames
        assert_img(crops[:, ::4, ::4], np.load(mm)["drv_video_cropped_crop512_sub4_u8"])


# ------------------------------------------------------------------ behaviour beyond the reference


def _face_video(n=4, seed=0):
    """n jittered copies of a 160×200 gradient picture with 5-point landmarks, similar frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:160, 0:200]
    base = np.stack([x * 1.2, y * 1.5, (x + y) * 0.6], -1).clip(0, 255).astype(np.uint8)
    frames = np.stack([np.roll(base, (i, 2 * i), (0, 1)) for i in range(n)])
    pts5 = np.array([[85, 70], [115, 70], [100, 85], [88, 100], [112, 100]], np.float32)
    lmk = pts5[None] + rng.normal(0, 1.5, (n, 5, 2)).astype(np.float32)
    return frames, lmk


def test_paste_batch_equals_per_frame():
    frames, lmk = _face_video(3)
    vid = crop_video(frames, lmk, dsize=128)  # small crops: crop_size=128 below
    crops = 255 - vid.crop
    out, masks = P.paste_back(frames, crops, vid.M_c2o, crop_size=128)
    assert out.shape == frames.shape and masks.shape == frames.shape[:3]
    for i in range(3):
        o1, m1 = P.paste_back(frames[i], crops[i], vid.M_c2o[i], crop_size=128)
        np.testing.assert_array_equal(out[i], o1[0])
        np.testing.assert_array_equal(masks[i], m1[0])
    assert not np.array_equal(masks[0], masks[1])  # each frame its own matrix
    assert (out != frames).any(axis=(1, 2, 3)).all()
    # one source frame broadcast to N crops (image source, N animated frames)
    same, _ = P.paste_back(frames[0], crops, vid.M_c2o[0], crop_size=128)
    o2, _ = P.paste_back(frames[0], crops[2:3], vid.M_c2o[0], crop_size=128)
    np.testing.assert_array_equal(same[2], o2[0])
    assert not np.array_equal(same[0], same[2])


def test_upscaled_crop_pastes_like_512(fc):
    img = fc["image_u8"]
    res = C.crop_image(img, fc["lmk106"])
    ref, _ = P.paste_back(img, res.crop[None], res.M_c2o)
    big = cv2.resize(res.crop, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    up, _ = P.paste_back(img, big[None], res.M_c2o)
    diff = np.abs(up[0].astype(np.int16) - ref[0])
    print("upscaled paste vs 512: mean", diff.mean(), "max", diff.max())
    assert diff.mean() < 0.3 and np.percentile(diff, 99.9) <= 12, (diff.mean(), diff.max())
    # the naive S→512 mapping (no half-pixel centre correction) is measurably worse
    naive = (res.M_c2o @ np.diag([0.5, 0.5, 1])).astype(np.float32)
    nv, _ = P.paste_back(img, big[None], naive, crop_size=1024)
    ndiff = np.abs(nv[0].astype(np.int16) - ref[0])
    print("naive mapping: mean", ndiff.mean())
    assert ndiff.mean() > diff.mean() * 1.5


def test_crop_video_smoothing():
    frames, lmk = _face_video(12, seed=1)
    ref = crop_video(frames, lmk, dsize=128, smoothing=0.0)
    for i in (0, 5, 11):  # strength 0 = per-frame reference crops
        one = C.crop_image(frames[i], lmk[i], dsize=128)
        np.testing.assert_array_equal(ref.M_o2c[i], one.M_o2c)
        np.testing.assert_array_equal(ref.crop[i], one.crop)
        np.testing.assert_array_equal(ref.landmarks[i], one.landmarks)
    sm = crop_video(frames, lmk, dsize=128, smoothing=2.0)
    jitter = lambda M: np.abs(np.diff(M[:, :2, 2], axis=0)).mean()  # noqa: E731
    assert jitter(sm.M_o2c) < 0.5 * jitter(ref.M_o2c)
    np.testing.assert_allclose(sm.M_c2o @ sm.M_o2c, np.broadcast_to(np.eye(3), (12, 3, 3)),
                               atol=1e-4)
    # a steady pan is kept (zero-phase, point-reflected ends: no lag, no pull at the ends)
    c = np.stack([np.arange(20.0) * 3, np.full(20, 50.0)], 1).astype(np.float32)
    cs, ss, angs = C.smooth_rects(c, np.full(20, 100, np.float32), np.zeros(20), 3.0)
    np.testing.assert_allclose(cs, c, atol=1e-3)
    np.testing.assert_allclose(ss, 100, rtol=1e-6)
    with pytest.raises(InputError):
        C.smooth_rects(c, np.full(20, 100, np.float32), np.zeros(20), -1)


def test_user_mask_feather_image_mask(fc):
    img = fc["image_u8"]
    res = C.crop_image(img, fc["lmk106"])
    crop = (255 - res.crop)[None]
    ref, ref_m = P.paste_back(img, crop, res.M_c2o)
    none, none_m = P.paste_back(img, crop, res.M_c2o, mask=np.zeros((64, 64), np.float32))
    np.testing.assert_array_equal(none[0], img)
    assert none_m.max() == 0
    ones, _ = P.paste_back(img, crop, res.M_c2o, mask=np.full((512, 512), 255, np.uint8))
    assert np.abs(ones[0].astype(np.int16) - ref[0]).max() <= 1
    fe_, fe_m = P.paste_back(img, crop, res.M_c2o, feather=24)
    assert (fe_m <= ref_m + 1 / 255 + 1e-6).all() and (fe_m < ref_m - 0.2).any()
    assert fe_m.max() > 0.99  # the middle of the face is still fully pasted
    left = np.ones(img.shape[:2], np.float32)
    left[:, :225] = 0
    half, half_m = P.paste_back(img, crop, res.M_c2o, image_mask=left)
    np.testing.assert_array_equal(half[0][:, :225], img[:, :225])
    np.testing.assert_array_equal(half[0][:, 230:], ref[0][:, 230:])
    with pytest.raises(InputError):
        P.paste_back(img, crop, res.M_c2o, feather=-1)


def test_color_match(fc):
    img = fc["image_u8"]
    res = C.crop_image(img, fc["lmk106"])
    cast = np.clip(res.crop.astype(np.int16) + [60, -20, -20], 0, 255).astype(np.uint8)[None]
    plain, m = P.paste_back(img, cast, res.M_c2o)
    matched, _ = P.paste_back(img, cast, res.M_c2o, color_match=True)
    inside = m[0] > 0.9
    err = lambda o: np.abs(o[0][inside].astype(np.float32).mean(0) - img[inside].mean(0)).max()  # noqa
    assert err(plain) > 25 and err(matched) < 5, (err(plain), err(matched))
    off, _ = P.paste_back(img, cast, res.M_c2o, color_match=False)
    np.testing.assert_array_equal(off, plain)


def test_full_frame_crop_round_trip():
    frames, _ = _face_video(1)
    frame = cv2.resize(frames[0], (320, 180))
    res = C.full_frame_crop(frame)
    assert res.crop.shape == (512, 512, 3)
    back = C.warp(res.crop, res.M_c2o, (320, 180))
    inner = np.s_[4:-4, 4:-4]
    assert np.abs(back[inner].astype(np.int16) - frame[inner]).max() <= 2
    out, m = P.paste_back(frame, res.crop[None], res.M_c2o)
    assert m[0][20:-20, 20:-20].min() > 0.99
    assert C.full_frame_network_input(frame).shape == (256, 256, 3)


def test_input_boundary():
    for bad in (np.zeros((0, 0, 3), np.uint8), np.zeros((1, 1, 3), np.uint8),
                np.zeros((8, 8, 2), np.uint8), np.zeros((2, 3, 4, 5, 6))):
        with pytest.raises(InputError) as ei:
            to_rgb_u8(bad)
        assert isinstance(ei.value, LivePortraitError) and "image" in str(ei.value)
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    g3 = to_rgb_u8(grey)
    assert g3.shape == (8, 8, 3) and (g3 == grey[..., None]).all()
    rgba = np.dstack([np.full((8, 8, 3), 7, np.uint8), np.zeros((8, 8), np.uint8)])
    assert (to_rgb_u8(rgba) == 7).all() and to_rgb_u8(rgba).shape == (8, 8, 3)
    f = np.full((1, 4, 4, 3), 0.5, np.float32)  # ComfyUI IMAGE batch of one
    assert (to_rgb_u8(f) == 128).all()
    import torch

    assert (to_rgb_u8(torch.ones(4, 4, 3)) == 255).all()
    with pytest.raises(InputError, match="landmarks"):
        C.crop_image(np.zeros((32, 32, 3), np.uint8), np.full((5, 2), np.nan, np.float32))
    with pytest.raises(InputError, match="span no area"):
        C.crop_image(np.zeros((32, 32, 3), np.uint8), np.full((5, 2), 3.0, np.float32))
    with pytest.raises(InputError, match="crops"):
        P.paste_back(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((3, 16, 16, 3), np.uint8),
                     np.eye(3, dtype=np.float32))


def test_several_faces_into_one_frame():
    frames, lmk = _face_video(2)
    a = crop_video(frames, lmk, dsize=128)
    b = crop_video(frames, lmk + [[40, 30]], dsize=128)  # a second "face", shifted
    crops = np.concatenate([255 - a.crop, b.crop // 2])  # items: (f0,A) (f1,A) (f0,B) (f1,B)
    M = np.concatenate([a.M_c2o, b.M_c2o])
    out, masks = P.paste_back(frames, crops, M, crop_size=128, into=[0, 1, 0, 1])
    assert out.shape == frames.shape and masks.shape == frames.shape[:3]
    for f in range(2):
        first, m1 = P.paste_back(frames[f], crops[f], M[f], crop_size=128)
        both, m2 = P.paste_back(first, crops[2 + f], M[2 + f], crop_size=128)
        np.testing.assert_array_equal(out[f], both[0])
        np.testing.assert_allclose(masks[f], 1 - (1 - m1[0]) * (1 - m2[0]), atol=1e-6)
    # an image source broadcast into 3 output frames, two faces each
    out3, _ = P.paste_back(frames[0], np.concatenate([crops] * 2)[:6], np.concatenate([M] * 2)[:6],
                           crop_size=128, into=[0, 1, 2, 0, 1, 2])
    assert out3.shape == (3,) + frames.shape[1:]
    with pytest.raises(InputError, match="into"):
        P.paste_back(frames, crops, M, crop_size=128, into=[0, 1, 2, 3])
