// LivePortrait Keyframes: a timeline for the node's sequence JSON (the "sequence" widget).
//
// One track per control used; a key is a time + easing + values of some controls, drawn as a
// diamond on each track it names. Click a diamond to select its key (and that track), drag it to
// move the key in time, "Add key" adds the chosen control at the playhead (into the key there, or
// a new one), "Delete" removes the selected control from its key (the key goes when empty), the
// easing menu sets the selected key's easing. Clicking / dragging the ruler moves the playhead;
// the frame under it is rendered through /liveportrait/preview (the server evaluates the sequence,
// nothing is queued). The sequence stays the STRING widget's value, saved in the workflow.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { LivePreview } from "./liveportrait_editor.js";

const NODE = "LivePortraitKeyframes";
const EASINGS = ["step", "linear", "ease-in", "ease-out", "ease-in-out", "smooth"];
const RULER = 18;
const ROW = 18;
const PAD = 10;
const LABEL = 84;

let controlsPromise = null;
function controlTable() {
  controlsPromise ??= api.fetchApi("/liveportrait/controls").then((r) => r.json()).then((d) => d.controls)
    .catch(() => []);
  return controlsPromise;
}

class Timeline {
  constructor(node) {
    this.node = node;
    this.controls = [];
    this.extraTracks = [];
    this.playhead = 0;
    this.sel = null; // {key: index, track: name}
    this.drag = null;
    this.lastText = null;
    this.seq = { keys: [] };
    this.error = "";
    this.preview = new LivePreview(node, { title: "Timeline preview", minHeight: 230 });
    this.build();
    controlTable().then((c) => {
      this.controls = c;
      this.fillControlMenu();
      this.draw();
    });
    this.refreshSources();
  }

  widget(name) {
    return this.node.widgets?.find((w) => w.name === name);
  }

  // ------------------------------------------------------------------ model
  load() {
    const w = this.widget("sequence");
    const text = String(w?.value ?? "");
    if (text === this.lastText) return;
    this.lastText = text;
    try {
      const d = text.trim() ? JSON.parse(text) : { keys: [] };
      if (!d || typeof d !== "object" || !Array.isArray(d.keys ?? [])) throw new Error("no keys list");
      d.keys = (d.keys ?? []).map((k) => ({ ...k, values: { ...(k.values ?? {}) } }));
      const fps = Number(d.fps ?? 25);
      for (const k of d.keys) {
        if (k.time === undefined && k.frame !== undefined) { k.time = k.frame / fps; delete k.frame; }
        k.easing ??= "linear";
      }
      this.seq = d;
      this.error = "";
    } catch (e) {
      this.error = `sequence is not valid JSON: ${e.message ?? e}`;
    }
  }

  save() {
    const w = this.widget("sequence");
    this.seq.keys.sort((a, b) => a.time - b.time);
    const text = JSON.stringify(this.seq, null, 1);
    this.lastText = text;
    if (w) {
      w.value = text;
      w.callback?.(text);
    }
    this.node.setDirtyCanvas?.(true, true);
    this.draw();
  }

  tracks() {
    const names = new Set(this.extraTracks);
    for (const k of this.seq.keys) for (const n of Object.keys(k.values)) names.add(n);
    const order = this.controls.map((c) => c.name);
    return [...names].sort((a, b) => (order.indexOf(a) - order.indexOf(b)) || a.localeCompare(b));
  }

  length() {
    const dur = Number(this.widget("duration")?.value ?? 0);
    const last = this.seq.keys.reduce((m, k) => Math.max(m, Number(k.time) || 0), 0);
    return Math.max(dur > 0 ? dur : 0, last + 0.5, 1);
  }

  fps() { return Number(this.widget("fps")?.value ?? 12) || 12; }

  // The sequence as the node runs it (widgets win over the JSON's own fps / loop / blink …).
  runSequence() {
    const v = (n, d) => this.widget(n)?.value ?? d;
    const dur = Number(v("duration", 0));
    const interval = Number(v("blink_interval", 0));
    return {
      ...this.seq, fps: this.fps(), duration: dur > 0 ? dur : null, loop: v("loop", "hold"),
      blink: interval > 0 ? { interval, duration: Number(v("blink_duration", 0.2)), seed: Number(v("blink_seed", 0)) } : null,
      strength: Number(v("strength", 1)),
    };
  }

  // ------------------------------------------------------------------ geometry
  get width() { return Math.max(200, this.canvas.clientWidth || 300); }
  timeToX(t) { return LABEL + PAD + (t / this.length()) * (this.width - LABEL - 2 * PAD); }
  xToTime(x) { return Math.max(0, ((x - LABEL - PAD) / (this.width - LABEL - 2 * PAD)) * this.length()); }
  rowY(i) { return RULER + i * ROW + ROW / 2; }
  snap(t) { const f = this.fps(); return Math.round(t * f) / f; }

  hit(x, y) {
    const tracks = this.tracks();
    const row = Math.floor((y - RULER) / ROW);
    if (y < RULER || row < 0 || row >= tracks.length) return null;
    const name = tracks[row];
    let best = null;
    this.seq.keys.forEach((k, i) => {
      if (!(name in k.values)) return;
      const d = Math.abs(this.timeToX(k.time) - x);
      if (d <= 7 && (!best || d < best.d)) best = { key: i, track: name, d };
    });
    return best ? { key: best.key, track: best.track } : { key: null, track: name };
  }

  // ------------------------------------------------------------------ DOM
  build() {
    const root = document.createElement("div");
    root.className = "lp-timeline";
    root.style.cssText = "display:flex;flex-direction:column;gap:3px;width:100%;height:100%;font:11px sans-serif;color:#ccc;";
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;align-items:center;";
    const mk = (tag, cls, text) => {
      const e = document.createElement(tag);
      e.className = cls;
      if (text) e.textContent = text;
      e.style.cssText = "font:11px sans-serif;";
      return e;
    };
    this.controlMenu = mk("select", "lp-tl-control");
    this.valueInput = mk("input", "lp-tl-value");
    this.valueInput.type = "number";
    this.valueInput.step = "any";
    this.valueInput.style.width = "64px";
    this.valueInput.title = "Value of the selected control at the selected key (or for Add key)";
    this.addBtn = mk("button", "lp-tl-add", "Add key");
    this.delBtn = mk("button", "lp-tl-delete", "Delete");
    this.easingMenu = mk("select", "lp-tl-easing");
    for (const e of EASINGS) this.easingMenu.append(new Option(e, e));
    this.easingMenu.title = "Easing into the selected key";
    this.sourceMenu = mk("select", "lp-tl-source");
    this.sourceMenu.title = "Face shown while scrubbing (registered by a run with preview_faces, or an Expression Editor)";
    this.timeLabel = mk("span", "lp-tl-time", "0.00 s");
    bar.append(this.controlMenu, this.valueInput, this.addBtn, this.delBtn, this.easingMenu, this.sourceMenu, this.timeLabel);
    this.canvas = document.createElement("canvas");
    this.canvas.className = "lp-tl-canvas";
    this.canvas.style.cssText = "width:100%;height:120px;background:#1b1b1b;border-radius:4px;cursor:pointer;touch-action:none;";
    this.msg = mk("div", "lp-tl-msg");
    this.msg.style.color = "#e88";
    root.append(bar, this.canvas, this.msg, this.preview.root);
    this.preview.root.style.minHeight = "160px";
    this.root = root;

    this.addBtn.onclick = (e) => { e.preventDefault(); this.addKey(); };
    this.delBtn.onclick = (e) => { e.preventDefault(); this.deleteSelected(); };
    this.easingMenu.onchange = () => {
      if (this.sel?.key == null) return;
      this.seq.keys[this.sel.key].easing = this.easingMenu.value;
      this.save();
      this.scrub(this.playhead);
    };
    this.valueInput.onchange = () => {
      if (this.sel?.key == null || !this.sel.track) return;
      const v = Number(this.valueInput.value);
      if (!Number.isFinite(v)) return;
      this.seq.keys[this.sel.key].values[this.sel.track] = this.clampValue(this.sel.track, v);
      this.save();
      this.scrub(this.playhead);
    };
    this.controlMenu.onchange = () => {
      const c = this.control(this.controlMenu.value);
      if (c) this.valueInput.value = String(c.neutral);
    };
    this.sourceMenu.onfocus = () => this.refreshSources();
    this.sourceMenu.onchange = () => { this.preview.setSource(this.sourceMenu.value); this.scrub(this.playhead); };
    this.canvas.addEventListener("pointerdown", (e) => this.onDown(e));
    this.canvas.addEventListener("pointermove", (e) => this.onMove(e));
    this.canvas.addEventListener("pointerup", (e) => this.onUp(e));
    this.canvas.addEventListener("pointercancel", (e) => this.onUp(e));
    this.canvas.addEventListener("dblclick", (e) => {
      const p = this.pos(e);
      if (p.y >= RULER) { this.playhead = this.snap(this.xToTime(p.x)); this.addKey(); }
    });
    // redraw when the JSON text changes by hand (the textarea) or the node is resized
    this.poll = setInterval(() => {
      if (!this.root.isConnected) return;
      const w = this.widget("sequence");
      if (String(w?.value ?? "") !== this.lastText || this.canvas.width !== Math.round(this.width)) this.draw();
    }, 400);
  }

  control(name) { return this.controls.find((c) => c.name === name); }
  clampValue(name, v) {
    const c = this.control(name);
    return c ? Math.min(c.max, Math.max(c.min, v)) : v;
  }

  fillControlMenu() {
    this.controlMenu.textContent = "";
    for (const c of this.controls) this.controlMenu.append(new Option(c.label, c.name));
    const first = this.controls[0];
    if (first) this.valueInput.value = String(first.neutral);
  }

  async refreshSources() {
    try {
      const d = await (await api.fetchApi("/liveportrait/sources")).json();
      const cur = this.preview.source;
      this.sourceMenu.textContent = "";
      for (const s of d.sources ?? []) this.sourceMenu.append(new Option(`${s.label} ${s.id.slice(0, 6)}`, s.id));
      const ids = (d.sources ?? []).map((s) => s.id);
      const pick = ids.includes(cur) ? cur : ids[ids.length - 1];
      if (pick) { this.sourceMenu.value = pick; this.preview.setSource(pick); }
    } catch {}
  }

  // ------------------------------------------------------------------ edits
  addKey() {
    this.load();
    const name = this.controlMenu.value;
    if (!name) return;
    const t = this.snap(this.playhead);
    const v = this.clampValue(name, Number(this.valueInput.value) || 0);
    const eps = 0.5 / this.fps();
    let i = this.seq.keys.findIndex((k) => Math.abs(k.time - t) < eps);
    if (i < 0) {
      this.seq.keys.push({ time: t, easing: "linear", values: {} });
      this.seq.keys.sort((a, b) => a.time - b.time);
      i = this.seq.keys.findIndex((k) => k.time === t);
    }
    this.seq.keys[i].values[name] = v;
    this.sel = { key: i, track: name };
    this.save();
    this.scrub(this.playhead);
  }

  deleteSelected() {
    if (this.sel?.key == null) return;
    const k = this.seq.keys[this.sel.key];
    delete k.values[this.sel.track];
    if (!Object.keys(k.values).length) this.seq.keys.splice(this.sel.key, 1);
    this.sel = null;
    this.save();
    this.scrub(this.playhead);
  }

  // ------------------------------------------------------------------ pointer
  pos(e) {
    const r = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * this.width, y: e.clientY - r.top };
  }

  onDown(e) {
    e.preventDefault();
    e.stopPropagation();
    this.load();
    const p = this.pos(e);
    this.canvas.setPointerCapture?.(e.pointerId);
    const h = p.y >= RULER ? this.hit(p.x, p.y) : null;
    if (h && h.key != null) {
      this.sel = h;
      const k = this.seq.keys[h.key];
      this.easingMenu.value = k.easing ?? "linear";
      this.valueInput.value = String(k.values[h.track]);
      this.controlMenu.value = h.track;
      this.drag = { kind: "key", key: h.key, moved: false };
    } else {
      if (h && h.track) this.controlMenu.value = h.track;
      this.drag = { kind: "playhead" };
      this.setPlayhead(this.xToTime(p.x));
    }
    this.draw();
  }

  onMove(e) {
    if (!this.drag) return;
    e.preventDefault();
    const p = this.pos(e);
    if (this.drag.kind === "playhead") return this.setPlayhead(this.xToTime(p.x));
    const keys = this.seq.keys;
    const i = this.drag.key;
    const step = 1 / this.fps();
    const lo = i > 0 ? keys[i - 1].time + step : 0;
    const hi = i < keys.length - 1 ? keys[i + 1].time - step : Infinity;
    const t = Math.min(hi, Math.max(lo, this.snap(this.xToTime(p.x))));
    if (t !== keys[i].time) {
      keys[i].time = Math.round(t * 1e6) / 1e6;
      this.drag.moved = true;
      this.draw();
    }
  }

  onUp(e) {
    const d = this.drag;
    this.drag = null;
    if (d?.kind === "key" && d.moved) {
      this.save();
      this.setPlayhead(this.seq.keys[d.key].time);
    }
  }

  setPlayhead(t) {
    this.playhead = Math.max(0, Math.min(this.length(), this.snap(t)));
    this.timeLabel.textContent = `${this.playhead.toFixed(2)} s · frame ${Math.round(this.playhead * this.fps())}`;
    this.root.dataset.playhead = String(this.playhead);
    this.draw();
    this.scrub(this.playhead);
  }

  scrub(t) {
    this.preview.schedule(() => ({ sequence: this.runSequence(), frame: Math.round(t * this.fps()) }));
  }

  // ------------------------------------------------------------------ drawing
  draw() {
    this.load();
    const tracks = this.tracks();
    const w = Math.round(this.width);
    const h = RULER + Math.max(tracks.length, 1) * ROW + 6;
    const c = this.canvas;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; c.style.height = `${h}px`; }
    this.msg.textContent = this.error;
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.font = "10px sans-serif";
    // ruler
    const L = this.length();
    g.fillStyle = "#262626";
    g.fillRect(0, 0, w, RULER);
    g.fillStyle = "#999";
    const stepS = L > 20 ? 5 : L > 6 ? 1 : 0.5;
    for (let s = 0; s <= L + 1e-9; s += stepS) {
      const x = this.timeToX(s);
      g.fillRect(x, RULER - 6, 1, 6);
      g.fillText(`${+s.toFixed(1)}s`, x + 2, 10);
    }
    // tracks
    tracks.forEach((name, i) => {
      const y = this.rowY(i);
      g.fillStyle = i % 2 ? "#1f1f1f" : "#232323";
      g.fillRect(0, RULER + i * ROW, w, ROW);
      g.fillStyle = "#bbb";
      g.fillText(this.control(name)?.label ?? name, 4, y + 3, LABEL - 6);
      this.seq.keys.forEach((k, ki) => {
        if (!(name in k.values)) return;
        const x = this.timeToX(k.time);
        const selKey = this.sel?.key === ki;
        const selDot = selKey && this.sel.track === name;
        g.fillStyle = selDot ? "#ffcc33" : selKey ? "#d9a441" : "#7fb2ff";
        g.beginPath();
        g.moveTo(x, y - 6); g.lineTo(x + 6, y); g.lineTo(x, y + 6); g.lineTo(x - 6, y); g.closePath();
        g.fill();
      });
    });
    if (!tracks.length) { g.fillStyle = "#888"; g.fillText("no keys: pick a control and press Add key", LABEL + PAD, RULER + 12); }
    // playhead
    const px = this.timeToX(this.playhead);
    g.fillStyle = "#ff5555";
    g.fillRect(px - 0.5, 0, 1.5, h);
    this.root.dataset.keys = String(this.seq.keys.length);
  }
}

app.registerExtension({
  name: "liveportrait.keyframes_timeline",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const tl = new Timeline(this);
      this.lpTimeline = tl;
      const w = this.addDOMWidget("lp_timeline", "lp_timeline", tl.root, {
        serialize: false, // the sequence lives in the "sequence" STRING widget
        hideOnZoom: false,
        getMinHeight: () => 420,
      });
      w.serialize = false;
      for (const name of ["fps", "duration", "loop", "blink_interval", "blink_duration", "blink_seed", "strength"]) {
        const wi = tl.widget(name);
        if (!wi) continue;
        const cb = wi.callback;
        wi.callback = function () { const o = cb?.apply(this, arguments); tl.draw(); tl.scrub(tl.playhead); return o; };
      }
      const onRemoved = this.onRemoved;
      this.onRemoved = function () { clearInterval(tl.poll); return onRemoved?.apply(this, arguments); };
      this.setSize?.([Math.max(this.size?.[0] ?? 0, 480), Math.max(this.size?.[1] ?? 0, 760)]);
      requestAnimationFrame(() => tl.draw());
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      const src = output?.lp_preview?.[0];
      if (src?.id && this.lpTimeline) {
        this.lpTimeline.preview.setSource(src.id);
        this.lpTimeline.refreshSources().then(() => this.lpTimeline.scrub(this.lpTimeline.playhead));
      }
      return r;
    };
  },
});
