"""Build the editing example workflows in the real ComfyUI frontend and save them (UI format).

    python scripts/make_editing_workflows.py http://127.0.0.1:8188 [--thumbnails]

Needs a running ComfyUI with this pack installed (any weights) and playwright + Chromium
(/usr/bin/chromium or $CHROMIUM). Each graph is built with the LiteGraph API the frontend uses
(LiteGraph.createNode, widget values by name, node.connect), laid out in columns from the nodes'
computed sizes (no overlaps), and exported with app.graph.serialize() — exactly what Save writes.
--thumbnails also writes example_workflows/<name>.jpg (a title strip drawn from the example photo).
"""
from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "example_workflows")

MODELS = {"key": "models", "type": "LoadLivePortraitModels"}
DETECTOR = {"key": "det", "type": "LivePortraitLoadFaceDetector",
            "widgets": {"backend": "offline", "threshold": -1.0, "max_side": 640}}
PHOTO = {"key": "photo", "type": "LoadImage", "widgets": {"image": "liveportrait_source.jpg"}}
CROP = {"key": "crop", "type": "LivePortraitCropFace", "widgets": {"purpose": "source"}}
SRC_MOTION = {"key": "srcm", "type": "LivePortraitExtractMotion"}
RETARGET = {"key": "retarget", "type": "LivePortraitRetarget"}
ANIMATE = {"key": "animate", "type": "LivePortraitAnimate", "widgets": {"batch_size": 4, "precision": "fast"}}
PASTE = {"key": "paste", "type": "LivePortraitPasteBack"}

KEYFRAMES_SEQUENCE = {
    "format": "liveportrait-keyframes", "version": 1, "fps": 8.0, "duration": None, "loop": "hold",
    "blink": None, "strength": 1.0,
    "keys": [
        {"time": 0.0, "easing": "linear", "values": {"head_yaw": 0.0, "smile": 0.0, "eyebrow": 0.0}},
        {"time": 0.8, "easing": "ease-in-out", "values": {"smile": 0.9, "eyebrow": 12.0}},
        {"time": 1.6, "easing": "smooth", "values": {"head_yaw": 15.0}},
        {"time": 2.4, "easing": "ease-in-out", "values": {"head_yaw": 0.0, "smile": 0.3, "eyebrow": 0.0}},
    ]}
AUDIO_SEQUENCE = {
    "format": "liveportrait-keyframes", "version": 1, "fps": 8.0, "duration": None, "loop": "hold",
    "blink": None, "strength": 1.0,
    "keys": [
        {"time": 0.0, "easing": "linear", "values": {"head_pitch": 0.0}},
        {"time": 2.5, "easing": "smooth", "values": {"head_pitch": -5.0}},
    ]}


def video_tail(fps: float, prefix: str, audio: bool) -> tuple[list, list]:
    nodes = [{"key": "video", "type": "CreateVideo", "widgets": {"fps": fps}},
             {"key": "save", "type": "SaveVideo", "widgets": {"filename_prefix": prefix}}]
    links = [("paste", 0, "video", "images"), ("video", 0, "save", "video")]
    if audio:
        links.append(("audio", 0, "video", "audio"))
    return nodes, links


def specs() -> dict:
    base_links = [("models", 0, "crop", "models"), ("det", 0, "crop", "detector"), ("photo", 0, "crop", "image")]
    editor = {
        "nodes": [MODELS, DETECTOR, PHOTO, CROP,
                  {"key": "editor", "type": "LivePortraitExpressionEditor",
                   "widgets": {"precision": "fast", "smile": 0.8, "eyebrow": 10.0, "head_yaw": 8.0, "gaze_x": 10.0}},
                  PASTE,
                  {"key": "save", "type": "SaveImage", "widgets": {"filename_prefix": "LivePortrait/edited"}}],
        "links": base_links + [("models", 0, "editor", "models"), ("crop", 0, "editor", "source_faces"),
                               ("photo", 0, "paste", "source_image"), ("editor", 1, "paste", "crops"),
                               ("crop", 0, "paste", "source_faces"), ("paste", 0, "save", "images")],
        "columns": [["models", "det", "photo"], ["crop"], ["editor"], ["paste", "save"]],
    }
    animate_links = [("models", 0, "srcm", "models"), ("crop", 0, "srcm", "faces"),
                     ("models", 0, "retarget", "models"), ("srcm", 0, "retarget", "source_motion"),
                     ("kf", 0, "retarget", "driving_motion"), ("models", 0, "animate", "models"),
                     ("crop", 0, "animate", "source_faces"), ("retarget", 0, "animate", "keypoints"),
                     ("photo", 0, "paste", "source_image"), ("animate", 0, "paste", "crops"),
                     ("crop", 0, "paste", "source_faces"),
                     ("models", 0, "kf", "preview_models"), ("crop", 0, "kf", "preview_faces")]
    tail, tail_links = video_tail(8.0, "LivePortrait/keyframes", audio=False)
    keyframes = {
        "nodes": [MODELS, DETECTOR, PHOTO, CROP, SRC_MOTION,
                  {"key": "kf", "type": "LivePortraitKeyframes",
                   "widgets": {"sequence": json.dumps(KEYFRAMES_SEQUENCE, indent=1), "fps": 8.0,
                               "blink_interval": 1.0, "blink_duration": 0.2, "blink_seed": 3}},
                  RETARGET, ANIMATE, PASTE, *tail],
        "links": base_links + animate_links + tail_links,
        "columns": [["models", "det", "photo"], ["crop", "srcm"], ["kf"], ["retarget"], ["animate", "paste"],
                    ["video", "save"]],
    }
    tail, tail_links = video_tail(8.0, "LivePortrait/audio_reactive", audio=True)
    audio = {
        "nodes": [MODELS, DETECTOR, PHOTO,
                  {"key": "audio", "type": "LoadAudio", "widgets": {"audio": "liveportrait_audio_reactive.wav"}},
                  CROP, SRC_MOTION,
                  {"key": "kf", "type": "LivePortraitKeyframes",
                   "widgets": {"sequence": json.dumps(AUDIO_SEQUENCE, indent=1), "fps": 8.0, "duration": 2.5,
                               "blink_interval": 1.5, "blink_duration": 0.2, "blink_seed": 1,
                               "audio_controls": "lips_open=120, eyebrow=8", "attack_ms": 10.0,
                               "release_ms": 80.0, "threshold": 0.02, "gain": 4.0}},
                  RETARGET, ANIMATE, PASTE, *tail],
        "links": base_links + animate_links + tail_links + [("audio", 0, "kf", "audio")],
        "columns": [["models", "det", "photo", "audio"], ["crop", "srcm"], ["kf"], ["retarget"],
                    ["animate", "paste"], ["video", "save"]],
    }
    return {"liveportrait_expression_editor": editor, "liveportrait_keyframes": keyframes,
            "liveportrait_audio_reactive": audio}


BUILD_JS = """
async (spec) => {
  const g = app.graph;
  g.clear();
  const made = {};
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error("unknown node type " + n.type);
    g.add(node);
    for (const [k, v] of Object.entries(n.widgets || {})) {
      const w = node.widgets?.find((w) => w.name === k);
      if (!w) throw new Error(n.type + " has no widget " + k);
      w.value = v;
      w.callback?.(v);
    }
    made[n.key] = node;
  }
  for (const [a, slot, b, name] of spec.links) {
    const src = made[a], dst = made[b];
    const ti = dst.findInputSlot(name);
    if (ti < 0) throw new Error(dst.type + " has no input " + name);
    if (!src.connect(slot, dst, ti)) throw new Error("cannot connect " + a + " -> " + b + "." + name);
  }
  const th = LiteGraph.NODE_TITLE_HEIGHT || 30;
  let x = 40;
  for (const col of spec.columns) {
    let y = 40 + th, width = 0;
    for (const key of col) {
      const node = made[key];
      const sz = node.computeSize();
      node.size = [Math.max(node.size[0], sz[0], 320), Math.max(node.size[1], sz[1])];
      node.pos = [x, y];
      y += node.size[1] + th + 40;
      width = Math.max(width, node.size[0]);
    }
    x += width + 60;
  }
  g.setDirtyCanvas(true, true);
  await new Promise((r) => setTimeout(r, 300));
  return JSON.parse(JSON.stringify(g.serialize()));
}
"""


def normalize(wf: dict) -> dict:
    """Values that depend on the frontend / ComfyUI version the graph was built with, written as the
    pack's other examples have them: SaveVideo as mp4 / h264 (newer ComfyUI shows these as dynamic
    combos with sub-widgets: only format + codec are kept), LoadAudio's file name only (its upload
    and player widgets hold no value)."""
    for n in wf["nodes"]:
        if n["type"] == "SaveVideo":
            n["widgets_values"] = [n["widgets_values"][0], "mp4", "h264"]
            n["inputs"] = [i for i in n["inputs"] if i["name"] in ("video", "filename_prefix", "format", "codec")]
            for i in n["inputs"]:
                if i["name"] in ("format", "codec"):
                    i["type"] = "COMBO"
        if n["type"] == "LoadAudio":
            n["widgets_values"] = n["widgets_values"][:1]
        if n["type"] in ("SaveImage", "SaveVideo") and not any(o.get("links") for o in n["outputs"]):
            n["outputs"] = []  # newer ComfyUI gives save nodes a pass-through output; 0.33 has none
        # frontend-only widget sockets (upload buttons, the audio player) are no inputs of the node
        n["inputs"] = [i for i in n["inputs"] if i["type"] not in ("IMAGEUPLOAD", "AUDIOUPLOAD", "AUDIO_UI")]
    return wf


def build(url: str) -> dict:
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = b.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => window.app && app.graph && window.LiteGraph && "
                               "Object.keys(LiteGraph.registered_node_types).length > 50", timeout=120_000)
        page.wait_for_timeout(1000)
        for name, spec in specs().items():
            wf = page.evaluate(BUILD_JS, spec)
            wf.pop("id", None)
            out[name] = normalize(wf)
        b.close()
    return out


def thumbnail(name: str, title: str) -> None:
    """A 800×260 strip: the example photo, its face area three times, and the title."""
    import cv2
    import numpy as np

    photo = cv2.imread(os.path.join(EXAMPLES, "liveportrait_source.jpg"))
    h = 230
    strip = np.full((260, 800, 3), 24, np.uint8)
    left = cv2.resize(photo, (h * photo.shape[1] // photo.shape[0], h))
    strip[:h, :left.shape[1]] = left
    face = photo[40:300, 130:390]
    x = left.shape[1] + 10
    for i, tint in enumerate(((0, 0, 0), (0, 20, 40), (40, 20, 0))):
        f = cv2.resize(face, (h, h)).astype(np.int16) + np.array(tint, np.int16)
        if x + h > 800:
            break
        strip[:h, x:x + h] = np.clip(f, 0, 255).astype(np.uint8)
        x += h + 8
    cv2.putText(strip, title, (8, 252), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(EXAMPLES, name + ".jpg"), strip, [cv2.IMWRITE_JPEG_QUALITY, 80])


TITLES = {"liveportrait_expression_editor": "LivePortrait: expression editor (live preview, no queue)",
          "liveportrait_keyframes": "LivePortrait: keyframes (blink, smile, head turn) -> video",
          "liveportrait_audio_reactive": "LivePortrait: audio-reactive lips -> video with the audio"}


def main(argv: list[str]) -> None:
    url = argv[0] if argv else "http://127.0.0.1:8188"
    for name, wf in build(url).items():
        path = os.path.join(EXAMPLES, name + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(wf, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
        print("wrote", path, len(wf["nodes"]), "nodes")
        if "--thumbnails" in argv:
            thumbnail(name, TITLES[name])


if __name__ == "__main__":
    main(sys.argv[1:])
