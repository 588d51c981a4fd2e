// LivePortrait Expression Editor: live preview on the node while the sliders move.
//
// After one run the node's output names a preview source id ("lp_preview"); from then on every
// slider change posts the control values to /liveportrait/preview (debounced; a newer request
// aborts the older one) and shows the returned PNG in a DOM widget. Nothing is queued: the
// server renders one frame from cached source features. The slider values stay ordinary widget
// values (saved in the workflow), so Run gives the previewed image.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "LivePortraitExpressionEditor";
const DEBOUNCE_MS = 80;
const OPTION_WIDGETS = ["strength"]; // non-slider widgets that change the picture

function sliderNames(nodeData) {
  const opt = nodeData?.input?.optional ?? {};
  return Object.entries(opt)
    .filter(([, spec]) => spec?.[0] === "FLOAT" && spec?.[1]?.display === "slider")
    .map(([name, spec]) => ({ name, neutral: spec[1].default ?? 0 }));
}

// One live preview (request scheduling + DOM) for one node; shared with the keyframes timeline.
export class LivePreview {
  constructor(node, { title = "Live preview", minHeight = 300 } = {}) {
    this.node = node;
    this.source = null;
    this.timer = null;
    this.abort = null;
    this.requests = 0; // sent
    this.shown = 0; // images shown
    this.urls = [];
    const root = document.createElement("div");
    root.className = "lp-preview";
    root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;min-height:0;";
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;gap:6px;align-items:center;font:11px sans-serif;color:#aaa;";
    this.status = document.createElement("span");
    this.status.className = "lp-preview-status";
    this.status.style.cssText = "flex:1;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;";
    this.status.textContent = `${title}: run the workflow once to start it.`;
    bar.append(this.status);
    this.img = document.createElement("img");
    this.img.className = "lp-preview-image";
    this.img.alt = title;
    this.img.style.cssText = "flex:1;min-height:0;width:100%;object-fit:contain;background:#111;border-radius:4px;";
    root.append(bar, this.img);
    this.root = root;
    this.bar = bar;
    this.title = title;
    this.minHeight = minHeight;
  }

  addTo(node, name = "lp_preview") {
    const w = node.addDOMWidget(name, "lp_preview", this.root, {
      serialize: false, // not a value: never in widgets_values (keeps the positional order)
      hideOnZoom: false,
      getMinHeight: () => this.minHeight,
    });
    w.serialize = false;
    this.widget = w;
    return w;
  }

  setSource(id) {
    this.source = id || null;
    this.root.dataset.source = this.source ?? "";
  }

  // body(): the JSON the route gets, without "source"/"client"; called when the request is sent.
  schedule(body, delay = DEBOUNCE_MS) {
    this.pendingBody = body;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.send(), delay);
  }

  async send() {
    if (!this.source) {
      this.status.textContent = `${this.title}: run the workflow once to start it.`;
      return;
    }
    this.abort?.abort(); // a newer request supersedes the one still rendering
    const ctl = new AbortController();
    this.abort = ctl;
    const payload = { ...this.pendingBody(), source: this.source, client: `node-${this.node.id}` };
    this.requests += 1;
    this.root.dataset.requests = String(this.requests);
    const t0 = performance.now();
    let res;
    try {
      res = await api.fetchApi("/liveportrait/preview", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
        signal: ctl.signal,
      });
    } catch (e) {
      if (e?.name !== "AbortError") this.status.textContent = `${this.title}: ${e}`;
      return;
    }
    if (ctl.signal.aborted) return;
    if (res.status === 409) return; // superseded by a newer request
    if (!res.ok) {
      let msg = `HTTP ${res.status}`;
      try { msg = (await res.json()).error ?? msg; } catch {}
      if (res.status === 404) this.setSource(null);
      this.status.textContent = `${this.title}: ${msg}`;
      return;
    }
    const blob = await res.blob();
    if (ctl.signal.aborted) return;
    this.lastBlob = blob; // the PNG as served (tests compare it with a run's image)
    this.show(URL.createObjectURL(blob), true);
    const ms = res.headers.get("X-LivePortrait-Render-Ms");
    this.status.textContent = `${this.title}: ${ms ? `${Math.round(+ms)} ms render, ` : ""}` +
      `${Math.round(performance.now() - t0)} ms total`;
  }

  show(url, own = false) {
    if (own) {
      this.urls.push(url);
      while (this.urls.length > 2) URL.revokeObjectURL(this.urls.shift());
    }
    this.img.src = url;
    this.shown += 1;
    this.root.dataset.shown = String(this.shown);
    this.node.setDirtyCanvas?.(true, true);
  }

  // From a node's "executed" output: its preview source id(s) and the run's image.
  fromOutput(output) {
    const src = output?.lp_preview?.[0];
    if (src?.id) this.setSource(src.id);
    const im = output?.images?.[0];
    if (im) {
      const q = new URLSearchParams({ filename: im.filename, subfolder: im.subfolder ?? "", type: im.type ?? "temp" });
      this.show(api.apiURL(`/view?${q}`));
      this.status.textContent = `${this.title}: ready (${src?.label ?? "face"}); move a slider.`;
    }
  }
}

app.registerExtension({
  name: "liveportrait.expression_editor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const sliders = sliderNames(nodeData);
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      const node = this;
      const preview = new LivePreview(node);
      node.lpPreview = preview;
      const values = () => {
        const controls = {};
        for (const { name } of sliders) {
          const w = node.widgets?.find((x) => x.name === name);
          if (w) controls[name] = Number(w.value);
        }
        const s = node.widgets?.find((x) => x.name === "strength");
        return { controls, strength: s ? Number(s.value) : 1.0 };
      };
      const onChange = () => preview.schedule(values);
      for (const name of [...sliders.map((s) => s.name), ...OPTION_WIDGETS]) {
        const w = node.widgets?.find((x) => x.name === name);
        if (!w) continue;
        const cb = w.callback;
        w.callback = function () {
          const out = cb?.apply(this, arguments);
          onChange();
          return out;
        };
      }
      const reset = document.createElement("button");
      reset.textContent = "Reset";
      reset.className = "lp-preview-reset";
      reset.title = "Every slider back to its neutral value";
      reset.style.cssText = "font:11px sans-serif;padding:1px 8px;cursor:pointer;";
      reset.onclick = (ev) => {
        ev.preventDefault();
        for (const { name, neutral } of sliders) {
          const w = node.widgets?.find((x) => x.name === name);
          if (w && w.value !== neutral) {
            w.value = neutral;
            w.callback?.(w.value); // also reaches onChange (wrapped above)
          }
        }
        node.setDirtyCanvas?.(true, true);
        onChange();
      };
      preview.bar.append(reset);
      preview.addTo(node);
      const size = node.computeSize?.();
      if (size) node.setSize?.([Math.max(node.size?.[0] ?? 0, 340), Math.max(node.size?.[1] ?? 0, size[1])]);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const r = onExecuted?.apply(this, arguments);
      this.lpPreview?.fromOutput(output);
      return r;
    };
  },
});
