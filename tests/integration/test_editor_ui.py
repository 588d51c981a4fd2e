"""The expression editor's live preview and the keyframes timeline in the real ComfyUI + Chromium.

What an artist does, with real DOM / canvas events: load the example workflow, Run once, drag a
slider on the node, watch the preview change without anything queued, Run again and get the
preview's picture; on the Keyframes node add a key on the timeline, drag it, scrub the playhead.
Synthetic weights (the `comfy` fixture), so the pictures are not faces; equality is what counts.
"""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.request

import numpy as np
import pytest

import frontend

REPO = os.environ.get("LP_REPO") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "example_workflows")


def _queue_empty(comfy) -> bool:
    q = comfy.get("/queue")
    return not q["queue_running"] and not q["queue_pending"]


def _stats(comfy) -> dict:
    return comfy.get("/liveportrait/sources")


def _png(data: bytes) -> np.ndarray:
    from PIL import Image
    import io

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _node(page, type_: str) -> int:
    return page.evaluate("(t) => app.graph._nodes.find((n) => n.type === t).id", type_)


def _set_widget(page, node_id: int, name: str, value) -> None:
    page.evaluate("([id, name, v]) => { const n = app.graph.getNodeById(id); const w = n.widgets.find((w) => w.name === name);"
                  " w.value = v; w.callback?.(v); }", [node_id, name, value])


def _show_node(page, node_id: int) -> None:
    """Classic canvas at scale 1 with the node's top-left corner near the screen's top-left."""
    page.evaluate("""(id) => { const n = app.graph.getNodeById(id); const ds = app.canvas.ds;
        ds.scale = 1; ds.offset[0] = -n.pos[0] + 60; ds.offset[1] = -n.pos[1] + 60;
        app.canvas.setDirty(true, true); }""", node_id)
    page.wait_for_timeout(300)


def _widget_screen_box(page, node_id: int, name: str) -> dict:
    """Screen rectangle of a canvas-drawn widget (classic renderer)."""
    return page.evaluate("""([id, name]) => {
        const n = app.graph.getNodeById(id); const w = n.widgets.find((w) => w.name === name);
        const ds = app.canvas.ds; const r = app.canvas.canvas.getBoundingClientRect();
        const y = (w.last_y ?? w.y); const h = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
        const toX = (x) => (x + ds.offset[0]) * ds.scale + r.left, toY = (y) => (y + ds.offset[1]) * ds.scale + r.top;
        return {x0: toX(n.pos[0] + 15), x1: toX(n.pos[0] + n.size[0] - 15), y: toY(n.pos[1] + y + h / 2)};
    }""", [node_id, name])


def _run_and_wait(page, comfy, timeout: float = 600.0) -> dict:
    before = frontend.history_ids(comfy)
    frontend.press_run(page)
    pid = frontend.wait_for_new_history(comfy, before, timeout)
    res = comfy.wait(pid, timeout)
    assert res.status == "success", res.error
    return res


def _preview_png(page, node_id: int, attr: str = "lpPreview") -> bytes:
    b64 = page.evaluate("""async ([id, attr]) => { const n = app.graph.getNodeById(id);
        const p = attr === "lpPreview" ? n.lpPreview : n.lpTimeline.preview;
        const blob = p.lastBlob; const buf = new Uint8Array(await blob.arrayBuffer());
        let s = ""; for (const b of buf) s += String.fromCharCode(b); return btoa(s); }""", [node_id, attr])
    return base64.b64decode(b64)


def _editor_setup(page, comfy) -> int:
    frontend.drop_workflow(page, os.path.join(EXAMPLES, "liveportrait_expression_editor.json"))
    frontend.wait_for_graph(page, 7)
    ed = _node(page, "LivePortraitExpressionEditor")
    _set_widget(page, ed, "precision", "exact")  # pixel-identical check: exact precision
    _run_and_wait(page, comfy)
    page.wait_for_function("(id) => !!app.graph.getNodeById(id).lpPreview.source", arg=ed, timeout=60_000)
    return ed


def test_slider_drag_updates_the_preview_without_queueing_and_run_matches_it(page, comfy, artifacts):
    ed = _editor_setup(page, comfy)
    assert page.locator(".lp-preview-image").count() >= 1 and page.locator(".lp-preview-reset").count() >= 1
    shown0 = int(page.evaluate("(id) => app.graph.getNodeById(id).lpPreview.shown", ed))
    stats0 = _stats(comfy)
    _show_node(page, ed)
    box = _widget_screen_box(page, ed, "smile")
    smile0 = page.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'smile').value", ed)
    # drag the smile slider from its left third to its right end, in steps, like a hand would
    x, y = box["x0"] + 0.4 * (box["x1"] - box["x0"]), box["y"]
    page.mouse.move(x, y)
    page.mouse.down()
    t0 = time.monotonic()
    for i in range(1, 16):
        page.mouse.move(x + i * (box["x1"] - x) / 15, y)
        page.wait_for_timeout(30)
        assert _queue_empty(comfy)
    page.mouse.up()
    smile = page.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'smile').value", ed)
    page.screenshot(path=os.path.join(artifacts, "after_drag.png"))
    assert smile != smile0, "the drag did not move the slider"
    page.wait_for_function("([id, n]) => app.graph.getNodeById(id).lpPreview.shown > n", arg=[ed, shown0],
                           timeout=120_000)
    seconds = time.monotonic() - t0
    stats = _stats(comfy)
    renders = stats["renders"] - stats0["renders"]
    print(f"[editor] drag → new preview in {seconds:.1f} s, {renders} render(s), "
          f"{stats['superseded'] - stats0['superseded']} superseded")
    # debounced + superseded: a 15-step drag costs a few renders, not one per step; nothing queued
    assert 1 <= renders <= 4 and _queue_empty(comfy)
    page.wait_for_timeout(500)
    preview = _png(_preview_png(page, ed))
    # Run with the dragged value: the node's picture is the preview's, pixel for pixel
    res = _run_and_wait(page, comfy)
    img = res.outputs[str(ed)]["images"][0]
    q = f"filename={img['filename']}&subfolder={img['subfolder']}&type={img['type']}"
    with urllib.request.urlopen(f"{comfy.url}/view?{q}") as r:
        run = _png(r.read())
    assert run.shape == (512, 512, 3) and np.array_equal(run, preview)
    # Reset: every slider back to neutral, and the preview follows
    shown = int(page.evaluate("(id) => app.graph.getNodeById(id).lpPreview.shown", ed))
    page.locator(".lp-preview-reset").first.click()
    page.wait_for_function("([id, n]) => app.graph.getNodeById(id).lpPreview.shown > n", arg=[ed, shown],
                           timeout=120_000)
    assert page.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'smile').value", ed) == 0
    assert _queue_empty(comfy) and not [e for e in page.lp_errors if "liveportrait" in e.lower()]


def test_routes_answer_bad_requests_with_4xx_and_keep_serving(page, comfy):
    ed = _editor_setup(page, comfy)
    src = page.evaluate("(id) => app.graph.getNodeById(id).lpPreview.source", ed)

    def post(body: bytes, ctype: str = "application/json"):
        req = urllib.request.Request(f"{comfy.url}/liveportrait/preview", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read()

    cases = [(b"{nope", 400), (b"[]", 400), (json.dumps({"source": "f" * 24}).encode(), 404),
             (json.dumps({"source": "/etc/passwd"}).encode(), 404),
             (json.dumps({"source": src, "controls": {"smile": 99}}).encode(), 400),
             (json.dumps({"source": src, "controls": {"bogus": 1}}).encode(), 400),
             (b'{"source": "' + b"x" * 100_000 + b'"}', 413)]
    for body, code in cases:
        status, ctype, out = post(body)
        assert status == code and ctype.startswith("application/json") and json.loads(out)["error"], (body[:40], status)
    assert post(b"source=1", "application/x-www-form-urlencoded")[0] == 415
    status, ctype, out = post(json.dumps({"source": src, "controls": {"wink": 10}}).encode())
    assert status == 200 and ctype == "image/png" and _png(out).shape == (512, 512, 3)
    # POST /free (ComfyUI's "unload models") empties the cache: the id is no longer served
    comfy.free()
    assert post(json.dumps({"source": src}).encode())[0] == 404
    assert _queue_empty(comfy)


def test_timeline_adds_and_moves_a_key_and_scrubbing_previews_without_queueing(page, comfy, artifacts):
    _editor_setup(page, comfy)  # registers a face the timeline can show
    frontend.drop_workflow(page, os.path.join(EXAMPLES, "liveportrait_keyframes.json"))
    frontend.wait_for_graph(page, 11)
    kf = _node(page, "LivePortraitKeyframes")
    _show_node(page, kf)
    page.evaluate("(id) => app.graph.getNodeById(id).lpTimeline.refreshSources()", kf)
    page.wait_for_function("(id) => !!app.graph.getNodeById(id).lpTimeline.preview.source", arg=kf, timeout=30_000)
    root = page.locator(".lp-timeline").first
    canvas = root.locator("canvas.lp-tl-canvas")
    n_keys = len(json.loads(page.evaluate("(id) => app.graph.getNodeById(id).widgets[0].value", kf))["keys"])

    def xy(t: float, track: str | None = None) -> tuple[float, float]:
        return tuple(page.evaluate("""([id, t, track]) => { const tl = app.graph.getNodeById(id).lpTimeline;
            const r = tl.canvas.getBoundingClientRect(); const s = r.width / tl.width;
            const row = track ? tl.tracks().indexOf(track) : -1;
            return [r.left + tl.timeToX(t) * s, r.top + (row < 0 ? 9 : tl.rowY(row))]; }""", [kf, t, track]))

    # playhead to 1.0 s on the ruler, pick "wink" = 20, Add key
    x, y = xy(1.0)
    page.mouse.click(x, y)
    root.locator("select.lp-tl-control").select_option("wink")
    root.locator("input.lp-tl-value").fill("20")
    root.locator("button.lp-tl-add").click()
    seq = json.loads(page.evaluate("(id) => app.graph.getNodeById(id).widgets[0].value", kf))
    wink = [k for k in seq["keys"] if "wink" in k["values"]]
    assert len(wink) == 1 and wink[0]["time"] == 1.0 and wink[0]["values"]["wink"] == 20.0
    assert len(seq["keys"]) == n_keys + 1  # no key at 1.0 s before: a new one
    # drag the wink diamond from 1.0 s to 1.25 s (keys cannot pass their neighbours at 0.8 / 1.6 s)
    x0, y0 = xy(1.0, "wink")
    x1, _ = xy(1.25, "wink")
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 9):
        page.mouse.move(x0 + i * (x1 - x0) / 8, y0)
        page.wait_for_timeout(20)
    page.mouse.up()
    seq = json.loads(page.evaluate("(id) => app.graph.getNodeById(id).widgets[0].value", kf))
    times = [k["time"] for k in seq["keys"] if "wink" in k["values"]]
    assert times == [1.25] and [k["time"] for k in seq["keys"]] == sorted(k["time"] for k in seq["keys"])
    # easing of the selected key
    root.locator("select.lp-tl-easing").select_option("ease-out")
    seq = json.loads(page.evaluate("(id) => app.graph.getNodeById(id).widgets[0].value", kf))
    assert [k["easing"] for k in seq["keys"] if "wink" in k["values"]] == ["ease-out"]
    # scrub the ruler: the frame under the playhead is rendered, nothing is queued
    shown = int(page.evaluate("(id) => app.graph.getNodeById(id).lpTimeline.preview.shown", kf))
    stats0 = _stats(comfy)
    xa, ya = xy(0.2)
    xb, _ = xy(1.9)
    page.mouse.move(xa, ya)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(xa + i * (xb - xa) / 10, ya)
        page.wait_for_timeout(30)
        assert _queue_empty(comfy)
    page.mouse.up()
    page.wait_for_function("([id, n]) => app.graph.getNodeById(id).lpTimeline.preview.shown > n", arg=[kf, shown],
                           timeout=120_000)
    page.screenshot(path=os.path.join(artifacts, "timeline.png"))
    assert _stats(comfy)["renders"] > stats0["renders"] and _queue_empty(comfy)
    assert float(root.get_attribute("data-playhead")) == pytest.approx(1.875, abs=0.2)
    # the sequence is the STRING widget's value: it is what the saved workflow holds
    wf = page.evaluate("() => app.graph.serialize()")
    node = next(n for n in wf["nodes"] if n["type"] == "LivePortraitKeyframes")
    assert json.loads(node["widgets_values"][0]) == seq


@pytest.mark.parametrize("name", ["liveportrait_expression_editor", "liveportrait_keyframes",
                                  "liveportrait_audio_reactive"])
def test_editing_example_workflow_runs(name, comfy, object_info):
    import comfy_server as cs

    prompt = cs.ui_to_api(cs.load_workflow(os.path.join(EXAMPLES, name + ".json")), object_info)
    t0 = time.monotonic()
    res = comfy.run_prompt(prompt, timeout=900)
    assert res.status == "success", res.error
    files = res.output_files(comfy.output_dir)
    print(f"[examples] {name}: {time.monotonic() - t0:.0f} s, {files}")
    assert files and all(os.path.getsize(f) > 1000 for f in files)
    if name != "liveportrait_expression_editor":
        import imageio.v2 as iio

        frames = iio.get_reader(files[0], "ffmpeg").count_frames()
        assert frames == 20, frames  # 2.4 s until the last key / 2.5 s, at 8 fps
