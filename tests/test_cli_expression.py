"""`animate --expression PRESET.json`: an expression preset on top of the driving motion, through
the CLI with synthetic weights; bad presets end with one line naming the file and the key."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import compact_file, parity_file

from liveportrait_core import video as vio
import video_testing
from liveportrait_core.cli import main
from liveportrait_core.editing import CONTROLS, save_preset


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    folder = tmp_path_factory.mktemp("cli_expr")
    src = vio.write_image(str(folder / "face.png"), d["source_crop256_u8"])
    drv = vio.write_image(str(folder / "drv.png"), d["driving_frames_u8"][0])
    video = video_testing.write_video(str(folder / "drv.mp4"), d["driving_frames_u8"][:2], fps=20)
    smile = save_preset({"smile": 1.2, "eyebrow": 25.0, "head_yaw": 15.0}, str(folder / "smile.json"))
    neutral = save_preset({k: c.neutral for k, c in CONTROLS.items()}, str(folder / "neutral.json"))
    return {"src": src, "drv": drv, "video": video, "smile": smile, "neutral": neutral, "dir": folder}


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_expression_preset_changes_the_picture_and_neutral_changes_nothing(capsys, inputs, tmp_path, weights_pth):
    common = ["-s", inputs["src"], "-d", inputs["drv"], "--weights", weights_pth, "--no-crop", "--precision", "fast"]
    frames = {}
    for name, extra in (("plain", []), ("neutral", ["--expression", inputs["neutral"]]),
                        ("smile", ["--expression", inputs["smile"]]),
                        ("off", ["--expression", inputs["smile"], "--expression-strength", "0"])):
        out = str(tmp_path / f"{name}.png")
        code, err = run(capsys, "animate", "-o", out, *common, *extra)
        assert code == 0, err
        frames[name] = vio.read_image(out).astype(np.int16)
    assert frames["plain"].shape == (512, 512, 3) and frames["plain"].std() > 5
    assert np.array_equal(frames["neutral"], frames["plain"])
    assert np.array_equal(frames["off"], frames["plain"])
    changed = np.abs(frames["smile"] - frames["plain"]).max(axis=2) > 8
    assert changed.mean() > 0.01, changed.mean()  # the edit moved a visible part of the face


def test_bad_presets_and_options_are_one_line_errors(capsys, inputs, tmp_path, weights_pth):
    out = tmp_path / "o.png"
    common = ["animate", "-s", inputs["src"], "-d", inputs["drv"], "-o", str(out), "--weights", weights_pth,
              "--no-crop"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "liveportrait-expression", "version": 1, "controls": {"smile": 3}}))
    code, err = run(capsys, *common, "--expression", str(bad))
    line = error_line(err)
    assert code == 1 and str(bad) in line and "'smile'" in line and "1.3" in line
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"format": "liveportrait-expression", "version": 1, "controls": {"grimace": 1}}))
    code, err = run(capsys, *common, "--expression", str(unknown))
    assert code == 1 and "'grimace'" in error_line(err)
    code, err = run(capsys, *common, "--expression", str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json" in error_line(err)
    code, err = run(capsys, *common, "--expression", inputs["smile"], "--expression-strength", "-1")
    assert code == 2 and "expression-strength" in error_line(err)
    code, err = run(capsys, *common, "--anchor-frame", "-2")
    assert code == 2 and "anchor-frame" in error_line(err)
    video_out = tmp_path / "o.mp4"
    code, err = run(capsys, "animate", "-s", inputs["src"], "-d", inputs["video"], "-o", str(video_out),
                    "--weights", weights_pth, "--no-crop", "--expression", inputs["smile"], "--anchor-frame", "5")
    assert code == 1 and "anchor_frame" in error_line(err)
    assert not out.exists() and not video_out.exists()
    assert not [n for n in os.listdir(tmp_path) if ".part" in n or n.endswith(".tmp")]
