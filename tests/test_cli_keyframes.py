"""CLI with a keyframe sequence as --driving (synthetic weights, tiny runs)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import compact_file, parity_file

from liveportrait_core import video as vio
import video_testing
from liveportrait_core.animate import input_kind
from liveportrait_core.cli import main


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    folder = tmp_path_factory.mktemp("kf_in")
    return vio.write_image(str(folder / "face.png"), d["source_crop256_u8"])


def _write(path, keys, **top):
    path.write_text(json.dumps({"format": "liveportrait-keyframes", "version": 1, "fps": 10, **top, "keys": keys}))
    return str(path)


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_driving_kind_detection(tmp_path):
    p = _write(tmp_path / "a.keyframes.json", [])
    assert input_kind(p, "driving") == "keyframes"


def test_sequence_drives_the_portrait(capsys, face, tmp_path, weights_pth):
    # neutral → head turned → neutral, at 10 fps: 3 frames
    seq = _write(tmp_path / "turn.keyframes.json",
                 [{"time": 0.0, "values": {"head_yaw": 0}}, {"time": 0.1, "values": {"head_yaw": 25, "smile": 1.0}},
                  {"time": 0.2, "values": {"head_yaw": 0, "smile": 0}}])
    out = tmp_path / "turn.mp4"
    code, err = _run(capsys, "animate", "-s", face, "-d", seq, "-o", str(out), "--weights", weights_pth,
                     "--no-crop", "--batch-size", "3")
    assert code == 0, err
    frames, fps = video_testing.read_frames(str(out))
    assert frames.shape == (3, 512, 512, 3) and fps == 10
    f = frames.astype(np.float64)
    # frames 0 and 2 are the same (neutral) face, frame 1 differs clearly
    assert np.abs(f[0] - f[2]).mean() < 1.0
    assert np.abs(f[1] - f[0]).mean() > 3 * max(np.abs(f[0] - f[2]).mean(), 0.3)
    # a one-frame sequence can be written as an image (the 1-item motion composes like that frame
    # of a longer sequence: test_keyframes.test_one_frame_sequence_composes_like_...)
    one = _write(tmp_path / "one.keyframes.json", [{"time": 0.0, "values": {"head_yaw": 25, "smile": 1.0}}])
    png = tmp_path / "one.png"
    code, err = _run(capsys, "animate", "-s", face, "-d", one, "-o", str(png), "--weights", weights_pth, "--no-crop")
    assert code == 0, err
    img = vio.read_image(str(png))
    assert img.shape == (512, 512, 3) and img.std() > 5
    assert not [n for n in os.listdir(tmp_path) if ".part" in n or n.endswith(".tmp")]


def test_bad_sequence_is_one_line_before_loading_weights(capsys, face, tmp_path):
    bad = _write(tmp_path / "bad.keyframes.json",
                 [{"time": 0.5, "values": {"smile": 1}}, {"time": 0.2, "values": {"smile": 0}}])
    out = tmp_path / "o.mp4"
    # the weights folder does not exist: the sequence error must come first
    code, err = _run(capsys, "animate", "-s", face, "-d", bad, "-o", str(out), "--weights", str(tmp_path / "none"))
    line = _error_line(err)
    assert code == 1 and "bad.keyframes.json" in line and "key 1" in line and not out.exists()
    code, err = _run(capsys, "animate", "-s", bad, "-d", face, "-o", str(out), "--weights", str(tmp_path / "none"))
    assert code == 1 and "keyframe sequence" in _error_line(err) and not out.exists()
    code, err = _run(capsys, "extract-motion", "-d", bad, "-o", str(tmp_path / "t.pkl"), "--weights", str(tmp_path / "none"))
    assert code == 1 and not (tmp_path / "t.pkl").exists()
    assert os.listdir(tmp_path) == ["bad.keyframes.json"]
