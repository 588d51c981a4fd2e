"""Every example workflow: valid UI format for our nodes and ComfyUI core nodes, and runnable.

Static checks mirror what the frontend and the server's validation need (node types exist, links
type-check on both ends, widget values fit the widgets in order, input files ship with the pack);
then each workflow is converted to an API prompt and executed through the stand-in with synthetic
weights (videos capped to 1 frame by the stand-in LoadVideo, the template cut to 1 frame).
"""
from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

from comfy_stub import harness

harness.install()
import core_nodes  # noqa: E402  (stand-ins for LoadImage, LoadVideo, … with their 0.33 schemas)
import folder_paths  # noqa: E402

from nodes_testing import EXAMPLES, activate, pack, tree  # noqa: E402,F401  (shared fixtures)

WORKFLOWS = sorted(p for p in glob.glob(os.path.join(EXAMPLES, "*.json"))
                   if not p.endswith(".keyframes.json"))  # keyframe sequences are inputs, not workflows
# Verbatim copies of earlier versions' examples: saved workflows must keep loading and running.
SAVED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "saved_workflows", "v*", "*.json")))
FILE_WIDGETS = {"LoadImage": "image", "LoadVideo": "file", "LivePortraitLoadMotion": "template", "LoadAudio": "audio"}
REQUIRED = {"liveportrait_image_to_video", "liveportrait_image_to_video_template",
            "liveportrait_video_to_video", "liveportrait_upscale_before_paste",
            "liveportrait_expression_editor", "liveportrait_keyframes", "liveportrait_audio_reactive"}


@pytest.fixture
def env(tree, pack):
    """Registry of our nodes + core stand-ins, input folder holding the shipped example inputs
    (as the outside check copies them)."""
    activate(tree, pack)
    for f in os.listdir(EXAMPLES):
        if os.path.isfile(os.path.join(EXAMPLES, f)) and (not f.endswith((".json", ".jpg")) or f == "liveportrait_source.jpg"):
            shutil.copy(os.path.join(EXAMPLES, f), folder_paths.get_input_directory())
    registry = {**pack[1], **core_nodes.registry()}
    return registry, harness.object_info(registry)


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def test_the_four_examples_ship_with_thumbnails_and_small_inputs():
    # ComfyUI's template browser offers every top-level .json of example_workflows/ as a workflow, so
    # other inputs (keyframe sequences) live in subfolders
    names = {os.path.splitext(os.path.basename(p))[0] for p in WORKFLOWS}
    assert REQUIRED <= names
    for n in names:
        assert os.path.isfile(os.path.join(EXAMPLES, n + ".jpg")), n
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(EXAMPLES, "*")))
    assert total < 1024 * 1024, total


@pytest.mark.parametrize("path", WORKFLOWS + SAVED,
                         ids=lambda p: os.path.relpath(p, os.path.dirname(os.path.dirname(p))))
def test_workflow_is_valid(path, env):
    registry, info = env
    wf = load(path)
    assert wf.get("version") == 0.4 and isinstance(wf["links"], list)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    links = {l[0]: l for l in wf["links"]}
    assert len(links) == len(wf["links"]) and wf["last_link_id"] >= max(links)
    ours = 0
    for node in wf["nodes"]:
        t = node["type"]
        assert t in info or t in harness.FRONTEND_ONLY, f"unknown node type {t}"
        if t in harness.FRONTEND_ONLY:
            continue
        ni = info[t]
        ours += ni["python_module"].startswith("custom_nodes.")
        # outputs as /object_info says
        assert [o["type"] for o in node["outputs"]] == ni["output"], t
        for slot, o in enumerate(node["outputs"]):
            for lid in o.get("links") or []:
                assert links[lid][1] == node["id"] and links[lid][2] == slot
        # inputs: known names with their types; sockets that are required are linked
        specs = {**ni["input"].get("required", {}), **ni["input"].get("optional", {})}
        widget_names = [w[0] for w in harness.widget_names(ni)]
        for slot, inp in enumerate(node["inputs"]):
            assert inp["name"] in specs, (t, inp["name"])
            st = specs[inp["name"]][0]
            assert inp["type"] == ("COMBO" if isinstance(st, list) else st), (t, inp["name"])
            assert ("widget" in inp) == (inp["name"] in widget_names), (t, inp["name"])
            if inp.get("link") is not None:
                assert links[inp["link"]][3] == node["id"] and links[inp["link"]][4] == slot
        linked = {i["name"] for i in node["inputs"] if i.get("link") is not None}
        for name in ni["input"].get("required", {}):
            if name not in widget_names:
                assert name in linked, f"{t}: required input {name} is not connected"
        # widget values fit the widgets in order (ComfyUI's own checks)
        api = harness.ui_to_api({"nodes": [node], "links": wf["links"]}, info)[str(node["id"])]
        values = {k: v for k, v in api["inputs"].items() if not isinstance(v, list)}
        skip = harness._validate_skip(registry[t])
        for name, wt, opts in harness.widget_names(ni):
            if name in values:
                harness.check_widget_value(t, name, wt, opts, values[name], skip)
        n_values = len(widget_names) + sum(1 for _, wt, o in harness.widget_names(ni)
                                           if wt == "COMBO" and (o.get("image_upload") or o.get("video_upload")
                                                                 or o.get("audio_upload")))
        assert len(node.get("widgets_values") or []) <= n_values, t
        if t in FILE_WIDGETS:
            assert os.path.isfile(os.path.join(EXAMPLES, values[FILE_WIDGETS[t]])), values
    assert ours >= 5
    for lid, (_, a, a_slot, b, b_slot, typ) in links.items():
        src, dst = nodes[a], nodes[b]
        assert src["outputs"][a_slot]["type"] == typ and lid in (src["outputs"][a_slot]["links"] or [])
        assert dst["inputs"][b_slot]["link"] == lid
        dst_type = dst["inputs"][b_slot]["type"]
        assert typ == dst_type or "*" in (typ, dst_type), (lid, typ, dst_type)


def test_workflows_run_end_to_end(env):
    """Every example and every saved earlier example, converted to an API prompt, executes (1 frame per video, 1-frame template)."""
    import core_nodes as cn
    import imageio.v2 as iio

    registry, info = env
    from liveportrait_core.templates import load_motion, save_motion  # noqa: F401

    tpl = os.path.join(folder_paths.get_input_directory(), "liveportrait_head_turn.pkl")
    save_motion(load_motion(tpl).select([0]), tpl)
    cn.MAX_FRAMES = 1
    try:
        assert SAVED
        for path in WORKFLOWS + SAVED:
            prompt = harness.ui_to_api(load(path), info)
            n_frames = 1
            for node in prompt.values():  # keyframed motion: 1 fps keeps it to a few frames here
                if node["class_type"] == "LivePortraitKeyframes":
                    node["inputs"]["fps"] = 1.0
                    # until the last key (2.4 s): floor(2.4)+1 = 3 frames at 1 fps; the audio's 2.5 s as the
                    # duration: round(2.5) = 2 frames (keyframes.frame_count)
                    n_frames = 2 if node["inputs"].get("audio") is not None else 3
            results = harness.execute_prompt(prompt, registry)
            src_h = 320 if "video_to_video" in path else 512
            images = [r.ui.as_dict()["images"][0] for nid, r in results.items()
                      if prompt[nid]["class_type"] == "SaveImage"]
            if images:  # a still (the expression editor)
                assert len(images) == 1 and "LivePortraitExpressionEditor" in {n["class_type"] for n in prompt.values()}
                continue
            saved = [r.ui.as_dict()["images"][0] for nid, r in results.items()
                     if prompt[nid]["class_type"] == "SaveVideo"]
            assert len(saved) == 1, path
            f = os.path.join(folder_paths.get_output_directory(), saved[0]["subfolder"], saved[0]["filename"])
            frames = [x for x in iio.get_reader(f, "ffmpeg")]
            assert len(frames) == n_frames and frames[0].shape[:2] == (src_h, src_h), (path, frames[0].shape)
    finally:
        cn.MAX_FRAMES = None
