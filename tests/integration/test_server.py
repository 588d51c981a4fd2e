"""The pack inside a real ComfyUI: clean import, /object_info, every example workflow via POST /prompt."""
from __future__ import annotations

import os
import re

import pytest

import comfy_server as cs
import pack_info

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def video_frames(path: str) -> list:
    import imageio.v2 as iio

    return [f for f in iio.get_reader(path, "ffmpeg")]


def test_pack_imports_without_failure(comfy):
    log = ANSI.sub("", comfy.log_text())
    lines = [ln for ln in log.splitlines() if ln.rstrip().endswith(os.sep + cs.PACK_DIR_NAME)
             or cs.PACK_DIR_NAME + " (IMPORT FAILED)" in ln]
    assert lines, f"no import line for {cs.PACK_DIR_NAME} in {comfy.log_path}"
    assert not any("IMPORT FAILED" in ln for ln in lines), lines
    assert "Traceback" not in log, f"traceback in {comfy.log_path}"
    assert "IMPORT FAILED" not in log


def test_object_info_lists_every_node_documented(object_info):
    ids = pack_info.node_ids()
    ours = {k for k, v in object_info.items() if v["python_module"] == f"custom_nodes.{cs.PACK_DIR_NAME}"}
    assert set(ids) == ours, (set(ids) ^ ours)
    for nid in ids:
        info = object_info[nid]
        assert info["category"].startswith("LivePortrait"), (nid, info["category"])
        assert len(info["description"]) > 40, nid
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert opts.get("tooltip"), f"{nid}.{name} has no tooltip"
        assert all(info["output_tooltips"]), nid


@pytest.mark.parametrize("path", pack_info.example_workflows(), ids=os.path.basename)
def test_example_workflow_runs(comfy, object_info, path):
    """The example as the frontend would send it runs to success and writes its video."""
    wf = cs.load_workflow(path)
    prompt = cs.ui_to_api(wf, object_info)
    before = set(_files(comfy.output_dir))
    res = comfy.run_prompt(prompt)
    print(f"{os.path.basename(path)}: {res.status} in {res.seconds:.0f}s")
    assert res.status == "success", (res.error, comfy.log_path)
    save_ids = [nid for nid, n in prompt.items() if n["class_type"] == "SaveVideo"]
    assert save_ids and all(nid in res.outputs for nid in save_ids), res.outputs
    files = res.output_files(comfy.output_dir)
    assert files and all(f.endswith(".mp4") for f in files), files
    assert set(files) <= set(_files(comfy.output_dir)) and not set(files) & before
    frames = video_frames(files[0])
    assert len(frames) >= 8, len(frames)
    assert frames[0].std() > 5  # not a blank frame


def _files(d: str) -> list[str]:
    return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]
