// Upload button for "LivePortrait Load Motion": sends a motion template (.pkl of the reference
// tool, or .lpmotion.safetensors) to ComfyUI's input folder through the standard upload route and
// selects it. The file is only stored; Load Motion reads it safely when the prompt runs.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "LivePortraitLoadMotion";
const ACCEPT = ".pkl,.safetensors";

async function uploadMotion(file) {
  const body = new FormData();
  body.append("image", file, file.name);
  body.append("type", "input");
  body.append("overwrite", "true"); // keep the name: a renamed ".lpmotion (1).safetensors" would not be listed
  const resp = await api.fetchApi("/upload/image", { method: "POST", body });
  if (resp.status !== 200) throw new Error(`upload failed (${resp.status} ${resp.statusText})`);
  const data = await resp.json();
  return data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
}

app.registerExtension({
  name: "LivePortrait.MotionUpload",
  async nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    const combo = node.widgets?.find((w) => w.name === "template");
    if (!combo) return;
    const picker = document.createElement("input");
    picker.type = "file";
    picker.accept = ACCEPT;
    picker.style.display = "none";
    document.body.append(picker);
    picker.addEventListener("change", async () => {
      const file = picker.files?.[0];
      picker.value = "";
      if (!file) return;
      try {
        const name = await uploadMotion(file);
        const values = combo.options.values;
        if (Array.isArray(values) && !values.includes(name)) values.push(name);
        combo.value = name;
        combo.callback?.(name);
        node.setDirtyCanvas?.(true, true);
      } catch (err) {
        console.error("[LivePortrait]", err);
        alert(`LivePortrait Load Motion: ${err.message}`);
      }
    });
    const button = node.addWidget("button", "upload motion file", null, () => picker.click());
    button.serialize = false; // not an input: saved workflows keep their widget values unchanged
    button.options = { ...(button.options || {}), serialize: false };
    const onRemoved = node.onRemoved;
    node.onRemoved = function () {
      picker.remove();
      return onRemoved?.apply(this, arguments);
    };
  },
});
