"""Driving ComfyUI's real web frontend with playwright (sync API): load, drop a workflow, Run.

All reads go through `window.app` (the frontend's ComfyApp) and LiteGraph's node objects; all
user actions are real DOM events (a drop with a DataTransfer holding a File, a click on the
Run button), so what is tested is what an artist does.

- `seed_user_settings(user_dir)`   settings a fresh user gets past first-run dialogs with;
- `open_app(page, url)`            load the app and wait until the graph canvas is ready;
- `drop_workflow(page, path)`      drop a .json file on the graph canvas like a file from disk;
- `graph_to_prompt(page)`          the API prompt the frontend would send (app.graphToPrompt);
- `node_boxes(page)`               [{id, type, title, x, y, w, h}] with title bar included;
- `overlaps(boxes)`                pairs of node boxes that intersect;
- `press_run(page)`                click the queue (Run) button; returns nothing;
- `ui_problems(page)`              visible error dialogs / toasts / missing-node reports;
- `wait_for_new_history(...)`      the id of the prompt the click queued, from /history.
"""
from __future__ import annotations

import json
import os
import time

# The first visit opens the template browser and may show other one-time panels; an artist
# closes them once and the choice is stored in the user's settings.
FIRST_RUN_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.InstalledVersion": "999.0.0",
    "Comfy.Release.Version": "999.0.0",
    "Comfy.Release.Status": "skipped",
    "Comfy.Release.Timestamp": 4102444800000,
}


def seed_user_settings(user_dir: str) -> str:
    """Write user/default/comfy.settings.json (merging with what is there); returns its path."""
    d = os.path.join(user_dir, "default")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "comfy.settings.json")
    cur = {}
    if os.path.isfile(path):
        with open(path) as f:
            cur = json.load(f)
    cur.update(FIRST_RUN_SETTINGS)
    with open(path, "w") as f:
        json.dump(cur, f, indent=2)
    return path


def open_app(page, url: str, timeout_ms: int = 120_000) -> None:
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas && "
                           "document.querySelector('canvas.graph-canvas, canvas#graph-canvas')",
                           timeout=timeout_ms)
    # node definitions are registered once the extensions have loaded
    page.wait_for_function("() => window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 50",
                           timeout=timeout_ms)
    page.wait_for_timeout(500)


def canvas_selector() -> str:
    return "canvas.graph-canvas, canvas#graph-canvas"


def drop_workflow(page, path: str) -> None:
    """Dispatch dragenter/dragover/drop with a DataTransfer holding the file on the graph canvas."""
    with open(path) as f:
        text = f.read()
    name = os.path.basename(path)
    page.evaluate(
        """([text, name, sel]) => {
            const canvas = document.querySelector(sel);
            const r = canvas.getBoundingClientRect();
            const opts = (dt) => ({bubbles: true, cancelable: true, dataTransfer: dt,
                                   clientX: r.left + r.width / 2, clientY: r.top + r.height / 2});
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, {type: 'application/json'}));
            canvas.dispatchEvent(new DragEvent('dragenter', opts(dt)));
            canvas.dispatchEvent(new DragEvent('dragover', opts(dt)));
            canvas.dispatchEvent(new DragEvent('drop', opts(dt)));
        }""",
        [text, name, canvas_selector()],
    )


def wait_for_graph(page, n_nodes: int, timeout_ms: int = 60_000) -> None:
    page.wait_for_function("(n) => window.app.graph && app.graph._nodes.length === n", arg=n_nodes,
                           timeout=timeout_ms)
    page.wait_for_timeout(500)


def graph_to_prompt(page) -> dict:
    """app.graphToPrompt() → {'output': API prompt, 'workflow': UI workflow}."""
    return page.evaluate("async () => { const p = await app.graphToPrompt(); "
                         "return JSON.parse(JSON.stringify({output: p.output, workflow: p.workflow})); }")


def node_boxes(page) -> list[dict]:
    """Every node's box in graph units, the title bar (LiteGraph.NODE_TITLE_HEIGHT) included."""
    return page.evaluate(
        """() => {
            const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
            return app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,
                x: n.pos[0], y: n.pos[1] - th, w: n.size[0], h: n.size[1] + th,
                collapsed: !!(n.flags && n.flags.collapsed)}));
        }""")


def overlaps(boxes: list[dict]) -> list[tuple]:
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]:
                out.append((f"{a['id']}:{a['type']}", f"{b['id']}:{b['type']}"))
    return out


def press_run(page) -> None:
    """Click the Run (queue) button of the top bar."""
    btn = page.locator("[data-testid='queue-button']")
    if btn.count() == 0:
        btn = page.get_by_role("button", name="Queue Prompt")
    btn.first.click()


def ui_problems(page) -> list[str]:
    """Texts of visible error dialogs, error toasts and missing-node / missing-model reports."""
    return page.evaluate(
        """() => {
            const out = [];
            const vis = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
            for (const el of document.querySelectorAll(
                    '.p-toast-message-error, .p-toast-message-warn, [role=alert], .comfy-modal, ' +
                    '.p-dialog, [role=dialog]')) {
                if (!vis(el)) continue;
                const t = (el.innerText || '').trim();
                if (t) out.push(t.slice(0, 500));
            }
            return out;
        }""")


def history_ids(server) -> set:
    return set(server.get("/history?max_items=1000") or {})


def wait_for_new_history(server, before: set, timeout: float = 900.0) -> str:
    """The id of the first prompt that appears in /history and was not in `before`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        new = history_ids(server) - before
        if new:
            return sorted(new)[0]
        q = server.queue_state()
        for item in q.get("queue_running", []) + q.get("queue_pending", []):
            if item[1] not in before:
                return item[1]
        time.sleep(0.5)
    raise TimeoutError("no prompt was queued after pressing Run")


def node_has_output_preview(page, node_id: int) -> bool:
    """Whether the frontend holds an output for the node (app.nodeOutputs) — what its preview shows."""
    return page.evaluate(
        """(id) => {
            const outs = app.nodeOutputs || {};
            const o = outs[String(id)] || outs[id];
            return !!(o && Object.values(o).some(v => Array.isArray(v) ? v.length > 0 : !!v));
        }""", node_id)
