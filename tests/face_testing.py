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

