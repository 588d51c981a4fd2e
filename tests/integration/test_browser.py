"""Each example workflow in the real frontend: dropped on the canvas like a file, Run, outputs shown."""
from __future__ import annotations

import os

import pytest

import comfy_server as cs
import frontend
import pack_info


@pytest.mark.parametrize("path", pack_info.example_workflows(), ids=os.path.basename)
def test_example_dropped_on_canvas_runs_in_the_browser(comfy, object_info, page, artifacts, path):
    wf = cs.load_workflow(path)
    frontend.drop_workflow(page, path)
    frontend.wait_for_graph(page, len(wf["nodes"]))
    assert frontend.ui_problems(page) == []  # no missing-node dialog, no error toast
    # what the frontend would send is what ui_to_api builds (the API tests rely on it)
    assert frontend.graph_to_prompt(page)["output"] == cs.ui_to_api(wf, object_info)

    before = frontend.history_ids(comfy)
    frontend.press_run(page)
    pid = frontend.wait_for_new_history(comfy, before)
    res = comfy.wait(pid)
    assert res.status == "success", (res.error, comfy.log_path)
    save_ids = [n["id"] for n in wf["nodes"] if n["type"] == "SaveVideo"]
    page.wait_for_function("(ids) => ids.every(id => { const o = (app.nodeOutputs || {})[String(id)]; "
                           "return o && Object.keys(o).length > 0; })", arg=save_ids, timeout=120_000)
    page.wait_for_timeout(1500)  # let previews render and nodes resize
    shot = os.path.join(artifacts, os.path.basename(path).replace(".json", ".png"))
    page.screenshot(path=shot)
    print(f"screenshot: {shot}")
    assert frontend.ui_problems(page) == []
    assert [e for e in page.lp_errors if e.startswith("pageerror")] == []
    assert frontend.overlaps(frontend.node_boxes(page)) == []
