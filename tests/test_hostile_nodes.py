"""Hostile inputs through the motion nodes (issue 14), via the ComfyUI stand-in: Load Motion reads
and Save Motion writes through the core's templates.load_motion / save_motion, so damaged files
and damaged motion end in one clear ValueError, nothing in the ComfyUI folders changes (hashed
before and after) and no temporary file is left."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
from conftest import REPO_DIR
from hostile_testing import assert_untouched, snapshot, temp_files
from nodes_testing import env, pack, run, tree  # noqa: F401  (fixtures)

import folder_paths
from comfy_stub import harness

HEAD_TURN = os.path.join(REPO_DIR, "example_workflows", "liveportrait_head_turn.pkl")


def _put_input(name: str, data: bytes) -> str:
    path = os.path.join(folder_paths.get_input_directory(), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _damaged(value, frame: int, key: str) -> bytes:
    with open(HEAD_TURN, "rb") as f:  # our own example template (a trusted file)
        d = pickle.load(f)
    d["motion"][frame][key] = np.full_like(d["motion"][frame][key], value)
    return pickle.dumps(d)


@pytest.mark.parametrize("value,key,frame,word", [(np.nan, "exp", 2, "NaN"), (np.inf, "t", 9, "an infinite value"),
                                                  (-4e6, "scale", 0, "-4e+06")])
def test_load_motion_refuses_damaged_template(env, value, key, frame, word):
    name = f"damaged_{key}.pkl"
    path = _put_input(name, _damaged(value, frame, key))
    base = folder_paths.base_path
    before = snapshot(base)
    with pytest.raises(ValueError) as e:
        run(env, "LivePortraitLoadMotion", template=name)
    msg = str(e.value)
    assert path in msg and f"field '{key}' of frame {frame} holds {word}" in msg and "extract it again" in msg
    assert_untouched(before, base)


def test_load_motion_refuses_garbage(env):
    name = "garbage.pkl"
    path = _put_input(name, np.random.default_rng(2).bytes(3000))
    before = snapshot(folder_paths.base_path)
    with pytest.raises(ValueError) as e:
        run(env, "LivePortraitLoadMotion", template=name)
    assert path in str(e.value) and "not a readable motion template" in str(e.value)
    assert_untouched(before, folder_paths.base_path)


def _motion(env):
    shutil.copy(HEAD_TURN, os.path.join(folder_paths.get_input_directory(), "head_turn.pkl"))
    (m,) = run(env, "LivePortraitLoadMotion", template="head_turn.pkl")
    return m


def test_save_motion_refuses_damaged_motion(env):
    m = _motion(env)
    m.exp = m.exp.clone()
    m.exp[5, 0, 0] = float("nan")
    before = snapshot(folder_paths.base_path)
    with pytest.raises(ValueError) as e:
        harness.run_node(env["LivePortraitSaveMotion"], {"motion": m, "filename_prefix": "LivePortrait/bad",
                                                         "format": "pkl"}, linked=("motion",))
    assert "field 'exp' of frame 5 holds NaN" in str(e.value)
    # the node makes its output sub-folder before saving (ComfyUI's save-path helper): allowed, if empty
    sub_folder = os.path.join("output", "LivePortrait")
    assert not os.listdir(os.path.join(folder_paths.base_path, sub_folder))
    assert_untouched(before, folder_paths.base_path, allowed={sub_folder})


@pytest.mark.parametrize("fmt,ext", [("lpmotion", ".lpmotion.safetensors"), ("pkl", ".pkl")])
def test_save_motion_writes_complete_files_only_and_never_overwrites(env, fmt, ext):
    m = _motion(env)
    base = folder_paths.base_path
    before = snapshot(base)
    written = []
    for _ in range(2):
        out = harness.run_node(env["LivePortraitSaveMotion"], {"motion": m, "filename_prefix": f"hostile/{fmt}",
                                                               "format": fmt}, linked=("motion",))
        assert "saved 12 frames" in out.ui.as_dict()["text"][0]
        folder = os.path.join(folder_paths.get_output_directory(), "hostile")
        written = sorted(f for f in os.listdir(folder) if f.endswith(ext) and f.startswith(fmt))
    assert len(written) == 2  # the counter gives a new name each time: the first file is kept
    from liveportrait_core.templates import load_motion

    for name in written:
        assert len(load_motion(os.path.join(folder, name))) == 12
    assert not temp_files(base)
    assert_untouched(before, base, allowed={os.path.join("output", "hostile", n) for n in written}
                     | {os.path.join("output", "hostile")})
