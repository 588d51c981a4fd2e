"""Benchmark of the face geometry: crop (512² from a 1280×720 frame), 256 network input, and
paste-back of a 512² crop into a 1280×720 frame (reference path, then with the extras).

Run: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/faces_geometry.py [--frames N]`; prints ms.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import best_ms as _ms  # noqa: E402
from liveportrait_core.face import crop as C  # noqa: E402
from liveportrait_core.face import paste as P  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8, help="batch size for the paste-back timings")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), np.uint8)
    # a 203-point-like face around (640, 300), ~180 px wide
    ang = np.linspace(0, 2 * np.pi, 203, endpoint=False)
    lmk = np.stack([640 + 90 * np.cos(ang), 330 + 110 * np.sin(ang)], 1).astype(np.float32)
    lmk[[0, 6, 12, 18]] = [[600, 300], [610, 295], [620, 300], [610, 305]]
    lmk[[24, 30, 36, 42]] = [[660, 300], [670, 295], [680, 300], [670, 305]]
    lmk[[48, 66]] = [[620, 390], [660, 390]]
    r = C.crop_image(frame, lmk)
    crops = rng.integers(0, 256, (a.frames, 512, 512, 3), np.uint8)
    frames = np.repeat(frame[None], a.frames, 0)
    Ms = np.repeat(r.M_c2o[None], a.frames, 0)
    Ms[:, 0, 2] += np.arange(a.frames, dtype=np.float32)  # distinct matrices: a video source
    rows = [
        ("crop_image 512² (rotated) from 1280x720", _ms(lambda: C.crop_image(frame, lmk), a.repeat), 1),
        ("network_input 512²→256² INTER_AREA", _ms(lambda: C.network_input(r.crop), a.repeat), 1),
        ("paste_back 1 frame 1280x720 (reference path)",
         _ms(lambda: P.paste_back(frame, crops[:1], r.M_c2o), a.repeat), 1),
        (f"paste_back {a.frames} frames, image source (shared mask)",
         _ms(lambda: P.paste_back(frame, crops, r.M_c2o), max(a.repeat // 4, 1)), a.frames),
        (f"paste_back {a.frames} frames, video source (mask per frame)",
         _ms(lambda: P.paste_back(frames, crops, Ms), max(a.repeat // 4, 1)), a.frames),
        ("paste_back 1 frame, feather 16",
         _ms(lambda: P.paste_back(frame, crops[:1], r.M_c2o, feather=16), a.repeat), 1),
        ("paste_back 1 frame, color_match",
         _ms(lambda: P.paste_back(frame, crops[:1], r.M_c2o, color_match=True), a.repeat), 1),
        ("paste_back 1 frame, 1024² crop",
         _ms(lambda: P.paste_back(frame, np.repeat(np.repeat(crops[:1], 2, 1), 2, 2), r.M_c2o),
             a.repeat), 1),
    ]
    for name, ms, n in rows:
        print(f"{name:58s} {ms:8.2f} ms total  {ms / n:7.2f} ms/frame")


if __name__ == "__main__":
    main()
