"""Hostile inputs through the command line (issue 14): every case ends with one clear line
naming the input and what to do, the right exit status, no input or other file changed (every
file of the folder hashed before and after) and no temporary file left."""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import REPO_DIR, compact_file, parity_file
from hostile_testing import assert_untouched, face_photo, snapshot, temp_files

from liveportrait_core import video as vio
import video_testing
from liveportrait_core.cli import main

EXAMPLES = os.path.join(REPO_DIR, "example_workflows")
HEAD_TURN = os.path.join(EXAMPLES, "liveportrait_head_turn.pkl")


@pytest.fixture
def work(tmp_path):
    """A folder with a face crop photo, a 2-frame driving video and a source video."""
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    src = vio.write_image(str(tmp_path / "face.png"), d["source_crop256_u8"])
    drv = video_testing.write_video(str(tmp_path / "drv.mp4"), d["driving_frames_u8"][:2], fps=20)
    srcv = video_testing.write_video(str(tmp_path / "srcv.mp4"), d["driving_frames_u8"][:2], fps=20)
    return {"dir": tmp_path, "src": src, "drv": drv, "srcv": srcv}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _refused(capsys, folder, argv, *words, code=1):
    """Run argv, expect exit `code` and one error line holding every word; nothing changed."""
    before = snapshot(folder)
    got, err = _run(capsys, *argv)
    line = _error(err)
    assert got == code, (argv, err)
    for w in words:
        assert w in line, (w, line)
    assert_untouched(before, folder)
    return line


# ------------------------------------------------------------------ 1. data loss: output = input


@pytest.mark.parametrize("which", ["photo", "video-source", "driving", "symlink", "relative", "dotdot"])
def test_animate_refuses_output_equal_to_an_input(capsys, work, monkeypatch, which):
    d = work["dir"]
    src, drv = work["src"], work["drv"]
    if which == "photo":
        out = src
    elif which == "video-source":
        src = out = work["srcv"]
    elif which == "driving":
        out = drv
    elif which == "symlink":
        os.symlink(drv, d / "link.mp4")
        out = str(d / "link.mp4")
    elif which == "relative":
        monkeypatch.chdir(d)
        out = "drv.mp4"
    else:
        os.makedirs(d / "x")
        out = str(d / "x" / ".." / "." / "drv.mp4")
    # --weights does not exist: the refusal comes before any weights are read
    line = _refused(capsys, d, ["animate", "-s", src, "-d", drv, "-o", out, "--weights", d / "none"],
                    "is the same file as the", "Choose another output name")
    assert out in line


def test_extract_motion_refuses_output_equal_to_driving_or_other_data(capsys, work, weights_st):
    d = work["dir"]
    os.symlink(work["drv"], d / "t.pkl")  # t.pkl *is* the driving video
    _refused(capsys, d, ["extract-motion", "-d", work["drv"], "-o", d / "t.pkl", "--weights", d / "none"],
             "same file as the driving", "Choose another")
    # a weights file is never replaced by a motion
    w = d / "weights"
    shutil.copytree(weights_st, w)
    target = w / "warping_module.safetensors"
    _refused(capsys, d, ["extract-motion", "-d", work["drv"], "-o", target, "--weights", w, "--no-crop"],
             str(target), "not a motion file", "Choose another name")


def test_existing_output_is_replaced_only_by_a_complete_file_and_said(capsys, work, weights_pth):
    d = work["dir"]
    out = d / "out.mp4"
    out.write_bytes(b"old animation")
    before = snapshot(d)
    code, err = _run(capsys, "animate", "-s", work["src"], "-d", work["drv"], "-o", out, "--weights", weights_pth,
                     "--no-crop", "--max-frames", "1")
    assert code == 0, err
    assert f"replaced the existing '{out}'" in err
    frames, _ = video_testing.read_frames(str(out))
    assert frames.shape == (1, 512, 512, 3)
    assert_untouched(before, d, allowed={"out.mp4"})


# --------------------------------------------------------------- 2. NaN / inf / absurd motion


def _template_with(value, frame: int, key: str = "exp"):
    with open(HEAD_TURN, "rb") as f:  # our own example template (a trusted file)
        d = pickle.load(f)
    d["motion"][frame][key] = np.full_like(d["motion"][frame][key], value)
    return d


@pytest.mark.parametrize("value,word", [(np.nan, "NaN"), (np.inf, "infinite"), (1e9, "1e+09")])
def test_damaged_pkl_template_is_refused_naming_file_field_frame(capsys, work, value, word):
    d = work["dir"]
    bad = d / "bad.pkl"
    bad.write_bytes(pickle.dumps(_template_with(value, 3)))
    line = _refused(capsys, d, ["animate", "-s", work["src"], "-d", bad, "-o", d / "o.mp4", "--weights", d / "none"],
                    str(bad), "field 'exp'", "frame 3", word, "extract it again")
    assert not (d / "o.mp4").exists() and line


def test_damaged_lpmotion_file_is_refused(capsys, work):
    import torch
    from safetensors.torch import load, save

    from liveportrait_core.templates import load_motion, save_motion

    d = work["dir"]
    good = save_motion(load_motion(HEAD_TURN), str(d / "good.lpmotion.safetensors"))
    with open(good, "rb") as f:
        data = f.read()
    import json
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    tensors = load(data)
    tensors["t"] = tensors["t"].clone()
    tensors["t"][5, 1] = float("inf")
    bad = d / "bad.lpmotion.safetensors"
    bad.write_bytes(save(tensors, metadata=meta))
    _refused(capsys, d, ["animate", "-s", work["src"], "-d", bad, "-o", d / "o.mp4", "--weights", d / "none"],
             str(bad), "field 't'", "frame 5", "infinite")
    assert torch.isfinite(load_motion(good).t).all()


# ------------------------------------------------------- 3. unwritable outputs, found up front


def test_output_is_an_existing_folder(capsys, work):
    d = work["dir"]
    os.makedirs(d / "result.mp4")
    _refused(capsys, d, ["animate", "-s", work["src"], "-d", work["drv"], "-o", d / "result.mp4",
                         "--weights", d / "none"], "is an existing folder", "give a file name")
    os.makedirs(d / "t.pkl")
    _refused(capsys, d, ["extract-motion", "-d", work["drv"], "-o", d / "t.pkl", "--weights", d / "none"],
             "is an existing folder")


@pytest.mark.parametrize("command", ["animate", "extract-motion"])
def test_output_in_an_unwritable_place(capsys, work, command):
    d = work["dir"]
    if command == "animate":
        argv = ["animate", "-s", work["src"], "-d", work["drv"], "-o", "/proc/x.mp4"]
    else:
        argv = ["extract-motion", "-d", work["drv"], "-o", "/proc/x.pkl"]
    line = _refused(capsys, d, argv + ["--weights", d / "none"], "cannot write", "/proc", "Choose a folder")
    assert "weights" not in line  # found before the weights


def _long_driving(folder, n=40):
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    frames = np.stack([d["driving_frames_u8"][i % len(d["driving_frames_u8"])] for i in range(n)])
    return video_testing.write_video(str(folder / "long.mp4"), frames, fps=25)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_render_leaves_no_temp_file(work, weights_pth, sig, code):
    d = work["dir"]
    drv = _long_driving(d)
    out = d / "out.mp4"
    out.write_bytes(b"previous result")
    before = snapshot(d)
    proc = subprocess.Popen([sys.executable, "-m", "liveportrait_core", "animate", "-s", work["src"], "-d", drv,
                             "-o", str(out), "--weights", weights_pth, "--no-crop", "--batch-size", "1"],
                            cwd=REPO_DIR, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline, seen = time.time() + 300, []
        # the video writer's .part file (the same one for a second: not the writability probe's,
        # which lives for microseconds): frames are being rendered
        while len(seen) < 6 or len(set(seen[-6:])) != 1 or not seen[-1]:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the render never started"
            time.sleep(0.2)
            seen.append(tuple(temp_files(d)))
        proc.send_signal(sig)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "no output written" in err and "Traceback" not in err
    assert_untouched(before, d)  # the previous out.mp4 is intact, no .part file


# ------------------------------------------------------------------------------ 4. messages


def test_random_bytes_pth_is_called_corrupted_not_unsafe(capsys, work, weights_pth):
    d = work["dir"]
    w = d / "w"
    shutil.copytree(weights_pth, w)
    bad = w / "liveportrait" / "base_models" / "warping_module.pth"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    line = _refused(capsys, d, ["animate", "-s", work["src"], "-d", work["drv"], "-o", d / "o.mp4", "--weights", w,
                                "--no-crop"], str(bad), "not a PyTorch checkpoint", "download it again")
    assert "arbitrary code" not in line and "execution" not in line


def test_text_file_named_jpg_is_not_an_image(capsys, work):
    d = work["dir"]
    txt = d / "notes.jpg"
    txt.write_text("this is a shopping list, not a photo\n")
    line = _refused(capsys, d, ["animate", "-s", txt, "-d", work["drv"], "-o", d / "o.mp4", "--weights", d / "none",
                                "--no-crop"], str(txt), "not an image")
    assert "plugin" not in line and "pip" not in line


def test_missing_weights_name_the_download_command(capsys, work):
    d = work["dir"]
    empty = d / "models" / "liveportrait"
    os.makedirs(empty)
    line = _refused(capsys, d, ["animate", "-s", work["src"], "-d", work["drv"], "-o", d / "o.mp4", "--weights", empty],
                    str(empty), f"python -m liveportrait_core download-weights --weights {empty}")
    assert "download_models" not in line


_FAKE_OFFLINE = """
import logging, sys
import huggingface_hub
http_log = logging.getLogger("huggingface_hub.utils._http")
def offline(repo_id, filename, **kw):
    for i in range(1, 6):  # what huggingface_hub logs while it retries an unreachable host
        http_log.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD https://huggingface.co/x")
        http_log.warning("Retrying in %ds [Retry %d/5].", i, i)
    raise OSError("Cannot reach https://huggingface.co: offline")
huggingface_hub.hf_hub_download = offline
from liveportrait_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _offline_cli(*argv):
    return subprocess.run([sys.executable, "-c", _FAKE_OFFLINE, *map(str, argv)], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_offline_download_weights_prints_one_progress_line_and_one_message(work):
    d = work["dir"]
    before = snapshot(d)
    r = _offline_cli("download-weights", "--weights", d / "w")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "Retry" not in r.stderr and "Errno" not in r.stderr
    assert lines[0].startswith("note: ") and "downloading 6 file(s)" in lines[0]
    assert lines[1].startswith("error: Could not download") and "Download these files by hand" in lines[1]
    assert all(ln.startswith("  https://huggingface.co/") for ln in lines[2:]) and len(lines) == 8
    after = snapshot(d)
    assert {k for k in after if k not in before} <= {"w", "w/.cache"} | {k for k in after if k.startswith("w/.cache/")}


def test_offline_yunet_detector_prints_one_progress_line_and_one_message(work, weights_st):
    d = work["dir"]
    det = d / "det"
    os.makedirs(det)
    before = snapshot(d)
    r = _offline_cli("animate", "-s", work["src"], "-d", work["drv"], "-o", d / "o.mp4", "--weights", weights_st,
                     "--detector", "yunet", "--detector-dir", det)
    assert r.returncode == 1, r.stderr
    assert "Retry" not in r.stderr and "Errno" not in r.stderr and "Traceback" not in r.stderr
    yunet = [ln for ln in r.stderr.strip().splitlines() if "YuNet" in ln]
    assert len(yunet) == 2, r.stderr
    assert yunet[0].startswith("note: YuNet face detector: fetching face_detection_yunet_2023mar.onnx")
    assert yunet[1].startswith("error: YuNet face detector:") and "by hand" in yunet[1] and str(det) in yunet[1]
    assert_untouched(before, d)


# ------------------------------------------------------------------------- 5. silent surprises


def test_driving_frames_without_a_face_are_counted_and_named(capsys, work, weights_st):
    d = work["dir"]
    face = cv2.resize(face_photo(), (256, 300))
    blank = np.full_like(face, 128)
    frames = np.stack([face, face, blank, blank, face, blank])  # no face in frames 2-3 and 5
    drv = video_testing.write_video(str(d / "mixed.mp4"), frames, fps=25)
    before = snapshot(d)
    code, err = _run(capsys, "extract-motion", "-d", drv, "-o", d / "m.pkl", "--weights", weights_st)
    assert code == 0, err
    assert "driving: no face found in 3 of 6 frame(s) (frames 2-3, 5" in err
    assert_untouched(before, d, allowed={"m.pkl"})


def test_big_source_is_downscaled_with_a_note_and_the_limit_is_an_option(capsys, work, weights_st):
    d = work["dir"]
    big = vio.write_image(str(d / "big.jpg"), cv2.resize(face_photo(), (6800, 8000)))
    before = snapshot(d)
    code, err = _run(capsys, "animate", "-s", big, "-d", work["drv"], "-o", d / "o.png", "--weights", weights_st,
                     "--max-frames", "1", "--precision", "fast")
    assert code == 0, err
    assert "is 6800x8000; it is animated at 1088x1280" in err and "--max-source-side" in err
    assert vio.read_image(str(d / "o.png")).shape == (1280, 1088, 3)
    code, err = _run(capsys, "animate", "-s", big, "-d", work["drv"], "-o", d / "o2.png", "--weights", weights_st,
                     "--max-frames", "1", "--precision", "fast", "--max-source-side", "640")
    assert code == 0, err
    assert vio.read_image(str(d / "o2.png")).shape == (640, 544, 3)
    assert_untouched(before, d, allowed={"o.png", "o2.png"})


def test_odd_height_source_keeps_its_last_row(capsys, work, weights_st):
    d = work["dir"]
    photo = face_photo()[:639]  # 545 x 639: odd width and height
    src = vio.write_image(str(d / "odd.png"), photo)
    code, err = _run(capsys, "animate", "-s", src, "-d", work["drv"], "-o", d / "o.png", "--weights", weights_st,
                     "--max-frames", "1", "--precision", "fast")
    assert code == 0, err
    got = vio.read_image(str(d / "o.png"))
    assert got.shape == (639, 545, 3)
    assert np.array_equal(got[-1, :40], photo[-1, :40])  # last row kept (far from the face: unchanged)
    code, err = _run(capsys, "animate", "-s", src, "-d", work["drv"], "-o", d / "o.mp4", "--weights", weights_st,
                     "--max-frames", "1", "--precision", "fast")
    assert code == 0, err
    assert "H.264 video needs even sizes, so the video is 546x640" in err
    frames, _ = video_testing.read_frames(str(d / "o.mp4"))
    assert frames.shape[1:3] == (640, 546)


def test_progress_bars_know_their_total(capsys, work, weights_st, monkeypatch):
    from liveportrait_core import cli

    seen = []

    def factory(total, desc):
        seen.append((desc, total))
        return lambda done, t=None: None

    monkeypatch.setattr(cli, "_tqdm_progress", factory)
    d = work["dir"]
    drv = _long_driving(d, 5)
    srcv = video_testing.write_video(str(d / "sv.mp4"), np.stack([cv2.resize(face_photo(), (256, 300))] * 3), fps=25)
    code, err = _run(capsys, "extract-motion", "-d", drv, "-o", d / "m.pkl", "--weights", weights_st, "--no-crop")
    assert code == 0, err
    assert ("driving motion", 5) in seen
    seen.clear()
    code, err = _run(capsys, "animate", "-s", srcv, "-d", drv, "-o", d / "o.mp4", "--weights", weights_st,
                     "--max-frames", "1", "--precision", "fast")
    assert code == 0, err
    assert ("tracking source faces", 1) in seen and ("driving motion", 1) in seen, seen


# ------------------------------------------------------------------------------ 7. README command


def test_readme_command_runs_on_the_shipped_examples(tmp_path, weights_st):
    """`python -m liveportrait_core animate --weights W --source example_workflows/liveportrait_source.jpg
    --driving example_workflows/liveportrait_driving.mp4 --output out.mp4` from a fresh clone (synthetic
    weights stand in for the real ones; --max-frames keeps the test short)."""
    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "liveportrait_core", "animate", "--weights", weights_st,
                        "--source", "example_workflows/liveportrait_source.jpg",
                        "--driving", "example_workflows/liveportrait_driving.mp4", "--output", str(out),
                        "--max-frames", "2"], cwd=REPO_DIR, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    frames, fps = video_testing.read_frames(str(out))
    src = vio.read_image(os.path.join(EXAMPLES, "liveportrait_source.jpg"))
    assert frames.shape == (2,) + src.shape and fps == 12
    assert r.stdout.strip() == str(out)
