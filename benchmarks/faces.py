"""Benchmark of face detection per backend, the 203-point landmark step and `crop_faces`.

Frames: a 1280×720 frame made from a real photo (../shared/data/source/s12.jpg, or the test copy
in tests/fixtures/photos). Backends that need model files run only when they are found:
  --buffalo-l DIR   (det_10g.onnx + 2d106det.onnx)   --landmark FILE (landmark.onnx)
  --yunet FILE_OR_DIR
Without the real files, the insightface and landmark rows use stand-in ONNX graphs of the right
signatures (tests/face_standins.py): they time letterbox/blob/decoding/cropping only, not the
real networks' compute, and are labelled "stand-in".
Crop/paste-back geometry is timed by benchmarks/faces_geometry.py.

Run: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/faces.py [--repeat N]`; prints ms per frame.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from _timing import best_ms as _ms  # noqa: E402
from liveportrait_core.face.detectors import make_detector  # noqa: E402
from liveportrait_core.face.landmarks import LandmarkRunner  # noqa: E402
from liveportrait_core.face.pipeline import crop_faces  # noqa: E402




def _frame() -> np.ndarray:
    for p in (os.path.join(ROOT, "..", "shared", "data", "source", "s12.jpg"),
              os.path.join(ROOT, "tests", "fixtures", "photos", "s12.jpg")):
        if os.path.exists(p):
            img = cv2.imread(p)[:, :, ::-1]
            break
    frame = np.full((720, 1280, 3), 90, np.uint8)
    img = cv2.resize(img, (round(img.shape[1] * 600 / img.shape[0]), 600))
    x = (1280 - img.shape[1]) // 2
    frame[60:660, x:x + img.shape[1]] = img
    return frame


def _standins(tmp: str):
    from face_standins import det10g_standin, landmark203_standin, lmk106_standin

    folder = os.path.join(tmp, "buffalo_l")
    os.makedirs(folder)
    # one face near the frame's face position (det px: frame scaled by 0.4 into 512²)
    det10g_standin(os.path.join(folder, "det_10g.onnx"),
                   [(16, (12 * 32 + 16) * 2, 0.9, np.array([3, 3, 3, 4], np.float32), np.zeros(10))])
    rng = np.random.default_rng(0)
    lmk106_standin(os.path.join(folder, "2d106det.onnx"), rng.uniform(-0.5, 0.5, (106, 2)))
    ang = np.linspace(0, 2 * np.pi, 203, endpoint=False)
    raw = np.stack([0.5 + 0.25 * np.cos(ang), 0.55 + 0.3 * np.sin(ang)], 1)
    lm = landmark203_standin(os.path.join(tmp, "landmark.onnx"), raw.astype(np.float32), probe=False)
    return folder, lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--buffalo-l", default=None)
    ap.add_argument("--landmark", default=None)
    ap.add_argument("--yunet", default=None)
    ap.add_argument("--frames", type=int, default=8, help="video length for the tracking rows")
    a = ap.parse_args()
    frame = _frame()
    tmp = tempfile.mkdtemp(prefix="lp_bench_faces_")
    standin_buffalo, standin_lmk = _standins(tmp)
    rows = []

    detectors = [("offline (dlib HOG, max_side 640)", lambda: make_detector("offline")),
                 ("offline (dlib HOG, max_side 1280)", lambda: make_detector("offline", max_side=1280))]
    if a.yunet:
        detectors.append(("yunet (max_side 960)", lambda: make_detector("yunet", a.yunet)))
    buffalo = a.buffalo_l or standin_buffalo
    tag = "" if a.buffalo_l else " [stand-in graphs: decode only]"
    detectors.append(("insightface det_10g+2d106det" + tag,
                      lambda: make_detector("insightface", buffalo, device="cpu")))
    det0 = None
    for label, make in detectors:
        try:
            det = make()
        except Exception as e:  # a backend whose library/model is missing is reported, not fatal
            rows.append((label, f"unavailable: {e}"[:90]))
            continue
        det0 = det0 or det
        n = len(det.detect(frame))
        rows.append((f"detect 1280x720, {label} ({n} face)", _ms(lambda: det.detect(frame), a.repeat)))

    runner = LandmarkRunner(a.landmark or standin_lmk, device="cpu")
    tag = "" if a.landmark else " [stand-in graph]"
    face = det0.detect(frame)[0]
    lmk = runner.from_face(frame, face, det0.box_to_extent, refine=0)
    rows.append(("landmarks 203: one run (224² crop + model + decode)" + tag,
                 _ms(lambda: runner.run(frame, lmk), a.repeat)))
    rows.append(("landmarks 203: from a box (2 runs)" + tag,
                 _ms(lambda: runner.from_face(frame, face, det0.box_to_extent), a.repeat)))
    video = np.repeat(frame[None], a.frames, 0)
    for every in (1, 0):
        t = _ms(lambda: crop_faces(video, det0, runner, detect_every=every), 1) / a.frames
        rows.append((f"crop_faces video, offline + landmarks, detect_every={every} (per frame)" + tag, t))
    t = _ms(lambda: crop_faces(frame, det0, runner), a.repeat)
    rows.append(("crop_faces 1 image, offline + landmarks" + tag, t))
    w = max(len(r[0]) for r in rows)
    for label, v in rows:
        print(f"{label:<{w}}  " + (f"{v:8.2f} ms" if isinstance(v, float) else v))


if __name__ == "__main__":
    main()
