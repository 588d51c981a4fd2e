"""Shared helpers and fixtures of the face-detection tests (imported by test modules)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from conftest import compact_file, parity_file
from face_standins import landmark203_standin
from liveportrait_core.face.detectors import make_detector
from liveportrait_core.face.landmarks import LandmarkRunner

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



# ------------------------------------------------------- crops of whole videos, from given landmarks


def crop_driving_video(frames, landmarks, dsize=512):
    """The driving-video auto-crop of frames [N,H,W,3] with landmarks [N,K,2] (image px), composed
    like the pipeline does: (crops [N,dsize,dsize,3] uint8, M_o2c [3,3], landmarks in crop px)."""
    from liveportrait_core.face import crop as C

    M = C.driving_matrix(landmarks, dsize)
    crops = np.stack([C.warp(f, M, (dsize, dsize)) for f in frames])
    return crops, M, C.transform_points(np.asarray(landmarks, np.float32), M)


def crop_video(frames, landmarks, dsize=512, smoothing=0.0):
    """Per-frame source crops of frames [N,H,W,3] with landmarks [N,K,2], composed like the
    pipeline does: a CropResult whose fields carry a leading N."""
    from liveportrait_core.face import crop as C

    mats = C.video_matrices(landmarks, dsize, smoothing=smoothing)
    res = [C.crop_from_matrix(f, M, dsize, p) for f, M, p in zip(frames, mats, np.asarray(landmarks, np.float32))]
    return C.CropResult(crop=np.stack([r.crop for r in res]), M_o2c=np.stack([r.M_o2c for r in res]),
                        M_c2o=np.stack([r.M_c2o for r in res]), landmarks=np.stack([r.landmarks for r in res]))
