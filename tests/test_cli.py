"""Command line: help, clean one-line errors without partial output, a tiny real run."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_DIR, compact_file, parity_file

from video_testing import read_frames, write_video
from liveportrait_core import video as vio
from liveportrait_core.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    folder = tmp_path_factory.mktemp("cli_in")
    src = vio.write_image(str(folder / "face.png"), d["source_crop256_u8"])
    drv = write_video(str(folder / "drv.mp4"), d["driving_frames_u8"][:2], fps=20)
    return {"src": src, "drv": drv, "dir": folder}


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_help_explains_every_option():
    r = subprocess.run([sys.executable, "-m", "liveportrait_core", "animate", "--help"], cwd=REPO_DIR,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for opt in ("--source", "--driving", "--output", "--weights", "--device", "--precision", "--no-crop",
                "--batch-size", "--absolute", "--no-stitching", "--eye-retargeting", "--lip-retargeting",
                "--normalize-lip", "--source-video-eye-retargeting", "--driving-option", "--driving-multiplier",
                "--animation-region", "--smooth-variance", "--length-policy", "--no-paste-back", "--no-audio"):
        assert opt in r.stdout, opt
    assert "flag_relative_motion" in r.stdout  # names the reference's flag
    r = subprocess.run([sys.executable, "-m", "liveportrait_core", "extract-motion", "--help"], cwd=REPO_DIR,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--driving" in r.stdout and ".pkl" in r.stdout


def test_bad_arguments_exit_2(capsys, tmp_path):
    out = tmp_path / "o.mp4"
    code, err = _run(capsys, "animate", "--source", "x.png", "--driving", "y.mp4")
    assert code == 2 and "--output" in _one_line_error(err)
    code, err = _run(capsys, "animate", "-s", "a", "-d", "b", "-o", str(out), "--precision", "half")
    assert code == 2 and "precision" in _one_line_error(err)
    code, err = _run(capsys, "animate", "-s", "a", "-d", "b", "-o", str(out), "--batch-size", "0")
    assert code == 2 and "batch-size" in _one_line_error(err)
    assert not out.exists()


def test_missing_and_wrong_inputs(capsys, inputs, tmp_path, weights_pth):
    out = tmp_path / "o.mp4"
    cases = [
        (["-s", str(tmp_path / "missing.png"), "-d", inputs["drv"]], "source not found"),
        (["-s", inputs["src"], "-d", str(tmp_path / "missing.mp4")], "driving not found"),
        (["-s", inputs["drv"] + ".txt", "-d", inputs["drv"]], "not found"),
    ]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"this is not a pickle")
    cases.append((["-s", inputs["src"], "-d", str(bad)], "bad.pkl"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"n_frames": 1, "motion": [Evil()]}))
    cases.append((["-s", inputs["src"], "-d", str(evil)], "evil.pkl"))
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"hello": [1, 2, 3]}))
    cases.append((["-s", inputs["src"], "-d", str(wrong)], "wrong.pkl"))
    cases.append((["-s", str(wrong), "-d", inputs["drv"]], "motion template"))
    notvideo = tmp_path / "fake.mp4"
    notvideo.write_bytes(b"\x00" * 1000)
    cases.append((["-s", inputs["src"], "-d", str(notvideo), "--no-crop", "--weights", weights_pth], "fake.mp4"))
    cases.append((["-s", inputs["src"], "-d", inputs["drv"], "--weights", str(tmp_path)], str(tmp_path)))
    for argv, words in cases:
        code, err = _run(capsys, "animate", "-o", str(out), *argv)
        assert code == 1, (argv, err)
        assert words in _one_line_error(err), (words, err)
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if ".part" in n]
    assert not (tmp_path / "pwned").exists()
    code, err = _run(capsys, "animate", "-s", inputs["src"], "-d", inputs["drv"], "-o", str(tmp_path / "o.gif"))
    assert code == 1 and ".mp4" in _one_line_error(err)
    code, err = _run(capsys, "animate", "-s", inputs["src"], "-d", inputs["drv"], "-o", str(tmp_path / "no" / "o.mp4"))
    assert code == 1 and "does not exist" in _one_line_error(err)


def test_tiny_real_run_and_extract_motion(capsys, inputs, tmp_path, weights_pth):
    from liveportrait_core.templates import load_motion

    out = tmp_path / "anim.mp4"
    code, err = _run(capsys, "animate", "-s", inputs["src"], "-d", inputs["drv"], "-o", str(out),
                     "--weights", weights_pth, "--no-crop", "--batch-size", "2")
    assert code == 0, err
    frames, fps = read_frames(str(out))
    assert frames.shape == (2, 512, 512, 3) and fps == 20
    assert frames.std() > 5  # a picture, not a blank frame
    assert not [n for n in os.listdir(tmp_path) if ".part" in n]
    # an image output for 2 frames is refused before rendering, nothing written
    code, err = _run(capsys, "animate", "-s", inputs["src"], "-d", inputs["drv"], "-o", str(tmp_path / "a.png"),
                     "--weights", weights_pth, "--no-crop")
    assert code == 1 and "2 frames" in _one_line_error(err) and not (tmp_path / "a.png").exists()
    for name in ("t.pkl", "t.lpmotion.safetensors"):
        code, err = _run(capsys, "extract-motion", "-d", inputs["drv"], "-o", str(tmp_path / name),
                         "--weights", weights_pth, "--no-crop")
        assert code == 0, err
        m = load_motion(str(tmp_path / name))
        assert len(m) == 2
    code, err = _run(capsys, "extract-motion", "-d", inputs["drv"], "-o", str(tmp_path / "t.txt"),
                     "--weights", weights_pth, "--no-crop")
    assert code == 1 and ".pkl" in _one_line_error(err) and not (tmp_path / "t.txt").exists()


def test_default_run_crops_the_face_and_pastes_back(capsys, inputs, tmp_path, weights_pth):
    """Default mode: detect + crop the source face, animate, paste back into the photo."""
    photo = os.path.join(REPO_DIR, "tests", "fixtures", "photos", "s0.jpg")
    out = tmp_path / "pasted.png"
    code, err = _run(capsys, "animate", "-s", photo, "-d", inputs["drv"], "-o", str(out), "--weights", weights_pth,
                     "--max-frames", "1", "--precision", "fast")
    assert code == 0, err
    assert "landmark.onnx not found" in err  # synthetic weights have no landmark model: said so
    src, got = vio.read_image(photo), vio.read_image(str(out))
    h, w = got.shape[:2]
    assert (h, w) == src.shape[:2]  # an image output keeps every row and column (odd sizes too)
    changed = np.abs(got.astype(np.int16) - src[:h, :w].astype(np.int16)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    # only a face-sized region changed, the rest of the photo is untouched
    assert 0.02 < changed.mean() < 0.6, changed.mean()
    assert (ys.max() - ys.min()) < 0.9 * h and (xs.max() - xs.min()) < 0.9 * w


def test_download_weights_command(capsys, monkeypatch, tmp_path, weights_st):
    """download-weights fetches every missing file of the flat layout; offline → one clear line."""
    import huggingface_hub

    from liveportrait_core.weights import load_models

    folder = str(tmp_path / "models" / "liveportrait")
    fetched = []

    def offline(repo_id, filename, **kwargs):
        raise OSError("Cannot reach https://huggingface.co: offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    code, err = _run(capsys, "download-weights", "--weights", folder)
    # one message (it lists the files, one per line), no traceback
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "Kijai/LivePortrait_safetensors" in err.splitlines()[0]
    assert f"{folder}/spade_generator.safetensors" in err  # the exact file and where it goes

    def fake(repo_id, filename, *, local_dir=None, **kwargs):
        fetched.append((repo_id, filename))
        dst = os.path.join(local_dir, filename)
        src = os.path.join(weights_st, filename)
        if os.path.exists(src):
            os.symlink(src, dst)
        else:  # landmark.onnx is not part of the synthetic set
            open(dst, "wb").close()
        return dst

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert _run(capsys, "download-weights", "--weights", folder)[0] == 0
    assert [f for _, f in fetched][:5] == [f"{n}.safetensors" for n in (
        "appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
        "stitching_retargeting_module")]
    assert {r for r, _ in fetched} == {"Kijai/LivePortrait_safetensors"}
    assert load_models(folder).stitching_retargeting is not None
    fetched.clear()
    assert _run(capsys, "download-weights", "--weights", folder)[0] == 0 and fetched == []
