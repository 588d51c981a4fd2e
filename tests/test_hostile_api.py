"""Hostile inputs through the library API (issue 14): str | os.PathLike everywhere, wrong types
and bad values end in one LivePortraitError naming the argument (the CLI's message), nothing
changed in the folder (hashed before and after), no temporary file left."""
from __future__ import annotations

import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO_DIR, compact_file, parity_file
from hostile_testing import assert_untouched, snapshot

from liveportrait_core import video as vio
import video_testing
from liveportrait_core.animate import FaceOptions, RunOptions, animate_files, extract_motion_file
from liveportrait_core.checks import check_finite_keypoints, check_finite_motion
from liveportrait_core.cli import main
from liveportrait_core.errors import InputError, LivePortraitError, MotionFileError, VideoError, WeightsError
from liveportrait_core.templates import load_motion, save_motion
from liveportrait_core.weights import load_models, load_network, read_weights_file

HEAD_TURN = os.path.join(REPO_DIR, "example_workflows", "liveportrait_head_turn.pkl")


@pytest.fixture(scope="module")
def models(weights_st):
    return load_models(pathlib.Path(weights_st))


@pytest.fixture
def work(tmp_path):
    d = np.load(parity_file("e2e_image_to_video.npz") or compact_file("e2e_image_to_video.npz"))
    src = vio.write_image(tmp_path / "face.png", d["source_crop256_u8"])
    drv = video_testing.write_video(str(tmp_path / "drv.mp4"), d["driving_frames_u8"][:2], fps=20)
    return {"dir": tmp_path, "src": pathlib.Path(src), "drv": pathlib.Path(drv)}


def _crops_run(n=1) -> RunOptions:
    return RunOptions(max_frames=n, faces=FaceOptions(crop=False))


# ---------------------------------------------------------------------- 6. paths and types


def test_animate_files_accepts_pathlib_paths(work, models):
    d = work["dir"]
    before = snapshot(d)
    out = animate_files(work["src"], work["drv"], d / "out.mp4", models, _crops_run(1), note=lambda m: None)
    assert out == str(d / "out.mp4")
    frames, fps = video_testing.read_frames(d / "out.mp4")
    assert frames.shape == (1, 512, 512, 3) and fps == 20
    assert_untouched(before, d, allowed={"out.mp4"})


@pytest.mark.parametrize("argument,value,words", [
    ("source", None, "source: expected a file path (str or os.PathLike), got None"),
    ("driving", 42, "driving: expected a file path (str or os.PathLike), got int"),
    ("output", ["o.mp4"], "output: expected a file path (str or os.PathLike), got list"),
    ("output", "", "output: the path is empty"),
    ("models", None, "models: expected the LivePortraitModels returned by load_models"),
    ("run", "fast", "run: expected RunOptions"),
])
def test_animate_files_wrong_types(work, models, argument, value, words):
    d = work["dir"]
    args = {"source": work["src"], "driving": work["drv"], "output": d / "o.mp4", "models": models,
            "run": _crops_run(1)}
    args[argument] = value
    before = snapshot(d)
    with pytest.raises(InputError) as e:
        animate_files(**args)
    assert words in str(e.value)
    assert_untouched(before, d)


def test_api_and_cli_give_the_same_message(work, models, capsys):
    d = work["dir"]
    with pytest.raises(InputError) as e:
        animate_files(work["src"], work["drv"], work["drv"], models, _crops_run(1))
    assert main(["animate", "-s", str(work["src"]), "-d", str(work["drv"]), "-o", str(work["drv"])]) == 1
    assert capsys.readouterr().err.strip() == f"error: {e.value}"
    assert "is the same file as the driving" in str(e.value)
    before = snapshot(d)
    with pytest.raises(InputError, match="same file as the source"):
        animate_files(str(work["src"]), work["drv"], pathlib.Path(d / "." / "face.png"), models, _crops_run(1))
    assert_untouched(before, d)


def test_extract_motion_file_paths_and_refusals(work, models):
    d = work["dir"]
    out = extract_motion_file(work["drv"], d / "m.lpmotion.safetensors", models, _crops_run(2), note=lambda m: None)
    assert len(load_motion(pathlib.Path(out))) == 2
    before = snapshot(d)
    os.symlink(work["drv"], d / "alias.pkl")
    before = snapshot(d)
    with pytest.raises(InputError, match="same file as the driving"):
        extract_motion_file(work["drv"], d / "alias.pkl", models)
    with pytest.raises(InputError, match="driving: expected a file path"):
        extract_motion_file(None, d / "x.pkl", models)
    assert_untouched(before, d)


def test_load_models_none_and_bad_names(tmp_path, weights_st):
    with pytest.raises(WeightsError) as e:
        load_models(None)
    assert "weights folder: expected a file path" in str(e.value) and "./None" not in str(e.value)
    assert "give the folder that holds them" in str(e.value)
    with pytest.raises(WeightsError, match="weights folder: expected a file path .* got int"):
        load_models(3)
    with pytest.raises(WeightsError) as e:
        load_network("foo", os.path.join(weights_st, "warping_module.safetensors"))
    msg = str(e.value)
    assert "'foo' is not a LivePortrait network" in msg
    for name in ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
                 "stitching_retargeting"):
        assert name in msg
    net = load_network("motion_extractor", pathlib.Path(weights_st) / "motion_extractor.safetensors")
    assert not net.training
    assert len(read_weights_file(pathlib.Path(weights_st) / "warping_module.safetensors")) > 10
    with pytest.raises(WeightsError, match="is a folder"):
        read_weights_file(tmp_path)
    with pytest.raises(WeightsError, match="device 'gpu0' is not a torch device"):
        load_models(weights_st, device="gpu0")


def test_random_and_pickled_code_pth_messages(tmp_path):
    rnd = tmp_path / "random.pth"
    rnd.write_bytes(np.random.default_rng(1).bytes(10000))

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, evil)
    before = snapshot(tmp_path)
    with pytest.raises(WeightsError) as e:
        read_weights_file(rnd)
    assert "not a PyTorch checkpoint, or it is corrupted" in str(e.value) and "arbitrary code" not in str(e.value)
    with pytest.raises(WeightsError) as e:
        read_weights_file(evil)
    assert "could run arbitrary code" in str(e.value)  # the real code-execution case keeps its warning
    assert_untouched(before, tmp_path)


def test_video_functions_take_paths_and_refuse_types(tmp_path):
    img = np.zeros((5, 7, 3), np.uint8)
    p = vio.write_image(tmp_path / "a.png", img)
    assert vio.read_image(pathlib.Path(p)).shape == (5, 7, 3)  # odd sizes kept
    for bad in (None, 1.5):
        with pytest.raises(InputError, match="image: expected a file path"):
            vio.read_image(bad)
    with pytest.raises(InputError, match="video: expected a file path"):
        vio.probe(None)
    before = snapshot(tmp_path)
    with pytest.raises(VideoError, match="cannot write output '/proc/x.png'"):
        vio.write_image("/proc/x.png", img)
    os.makedirs(tmp_path / "d.png")
    os.makedirs(tmp_path / "v.mp4")
    before = snapshot(tmp_path)
    with pytest.raises(VideoError, match="is an existing folder"):
        vio.write_image(tmp_path / "d.png", img)
    with pytest.raises(VideoError, match="is an existing folder"):
        vio.VideoWriter(tmp_path / "v.mp4", 25)
    assert_untouched(before, tmp_path)


# ---------------------------------------------------------------- 2. finite motion everywhere


def _motion():
    return load_motion(pathlib.Path(HEAD_TURN))


@pytest.mark.parametrize("field,frame,value,word", [
    ("exp", 4, float("nan"), "NaN"), ("R", 0, float("inf"), "an infinite value"), ("t", 11, -1e7, "-1e+07"),
    ("scale", 2, -3.0, "-3"), ("eye_ratio", 7, 50.0, "50"),
])
def test_check_finite_motion_names_field_and_frame(field, frame, value, word):
    m = _motion()
    v = getattr(m, field).clone()
    v[frame].fill_(value)
    setattr(m, field, v)
    with pytest.raises(MotionFileError) as e:
        check_finite_motion(m, "preset 'wave'")  # presets / keyframes use the same helper
    msg = str(e.value)
    assert msg.startswith("preset 'wave': ") and f"field '{field}' of frame {frame} holds {word}" in msg
    assert "extract it again" in msg


def test_save_motion_refuses_damaged_motion_and_other_files(tmp_path):
    m = _motion()
    m.exp = m.exp.clone()
    m.exp[3, 5, 1] = float("nan")
    weights = tmp_path / "warping_module.safetensors"
    weights.write_bytes(b"not a motion")
    os.makedirs(tmp_path / "dir.pkl")
    video = tmp_path / "drv.mp4"
    video.write_bytes(b"video")
    os.symlink(video, tmp_path / "alias.pkl")
    before = snapshot(tmp_path)
    with pytest.raises(MotionFileError, match="field 'exp' of frame 3 holds NaN"):
        save_motion(m, tmp_path / "m.pkl")
    good = _motion()
    with pytest.raises(MotionFileError, match="exists and is not a motion file"):
        save_motion(good, weights)
    with pytest.raises(MotionFileError, match="is an existing folder"):
        save_motion(good, tmp_path / "dir.pkl")
    with pytest.raises(MotionFileError, match="same file as the driving"):
        save_motion(good, tmp_path / "alias.pkl", keep={"driving": video})
    with pytest.raises(MotionFileError, match="cannot write motion file '/proc/m.pkl'"):
        save_motion(good, "/proc/m.pkl")
    with pytest.raises(MotionFileError, match="motion file to write: expected a file path"):
        save_motion(good, None)
    assert_untouched(before, tmp_path)
    # a motion file is replaced by a complete one
    out = save_motion(good, tmp_path / "ok.lpmotion.safetensors")
    again = save_motion(_motion(), pathlib.Path(out))
    assert again == out and len(load_motion(out)) == 12
    assert_untouched(before, tmp_path, allowed={"ok.lpmotion.safetensors"})


def test_load_motion_of_damaged_and_odd_files(tmp_path):
    with open(HEAD_TURN, "rb") as f:
        d = pickle.load(f)
    d["motion"][6]["R"] = np.full((1, 3, 3), np.nan, np.float32)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(d))
    before = snapshot(tmp_path)
    with pytest.raises(MotionFileError) as e:
        load_motion(bad)
    assert str(bad) in str(e.value) and "frame 6" in str(e.value) and "NaN" in str(e.value)
    with pytest.raises(MotionFileError, match="is a folder"):
        load_motion(tmp_path)
    with pytest.raises(MotionFileError, match="motion file: expected a file path"):
        load_motion(None)
    assert_untouched(before, tmp_path)


def test_renderer_refuses_non_finite_keypoints_before_any_frame(models):
    from liveportrait_core.compose import KeypointPlan
    from liveportrait_core.render import Animator

    x = torch.zeros(3, 21, 3)
    bad = x.clone()
    bad[2, 4, 0] = float("nan")
    plan = KeypointPlan(x_s=x, x_d=bad, source_index=torch.zeros(3, dtype=torch.int64))
    crops = torch.zeros(1, 256, 256, 3, dtype=torch.uint8)
    calls = []
    it = Animator(models, "exact", 1).iter_render(plan, crops, progress=lambda *a: calls.append(a))
    with pytest.raises(InputError) as e:
        next(it)
    assert "driving keypoints x_d of frame 2 hold NaN" in str(e.value) and "nothing was rendered" in str(e.value)
    assert calls == []  # not even the progress start
    with pytest.raises(InputError, match="source keypoints x_s of frame 0 hold an infinite value"):
        check_finite_keypoints(torch.full((1, 21, 3), float("inf")), x[:1])


# ------------------------------------------------------------------- 4. insightface folder


@pytest.mark.parametrize("layout", ["models/insightface/models/buffalo_l", "models/insightface/buffalo_l",
                                    "models/insightface"])
def test_detector_dir_accepts_the_readme_folder(tmp_path, layout):
    from liveportrait_core.face.detectors.insightface import DET_FILE, find_buffalo_l

    folder = tmp_path / layout
    os.makedirs(folder)
    (folder / DET_FILE).write_bytes(b"onnx")
    for given in (tmp_path / "models" / "insightface", str(tmp_path / "models" / "insightface")):
        got, _ = find_buffalo_l(given)
        assert os.path.samefile(got, folder)


def test_every_error_is_a_liveportrait_error():
    # the library's user errors subclass ValueError too (ComfyUI shows ValueErrors as messages)
    for cls in (InputError, MotionFileError, VideoError, WeightsError):
        assert issubclass(cls, LivePortraitError) and issubclass(cls, ValueError)
