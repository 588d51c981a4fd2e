"""A real ComfyUI server with this pack installed, for integration tests (no ComfyUI import here).

Building blocks, each usable on its own (conftest.py wires them into session fixtures):

- `locate_comfyui()`            → `Install(dir, python)` from COMFYUI_DIR + COMFYUI_PYTHON, else one
                                   built by ../shared/tools/comfyui_env.sh, else None (+ the reason);
- `install_pack(install)`        → the ComfyUI-Manager way: `pip install -r requirements.txt`, then
                                   `install.py`, in ComfyUI's Python; skipped when a marker keyed by
                                   the hash of requirements.txt + install.py says it was done;
- `prepare_base(base, models)`   → a throw-away base directory (custom_nodes/ with the pack linked in,
                                   input/ with the example inputs, output/, temp/, user/) and an
                                   extra_model_paths.yaml pointing `liveportrait:` at `models`;
- `ComfyServer`                  → starts `main.py --cpu` on a free loopback port in its own process
                                   group, waits until it serves, talks HTTP (`get`, `post`,
                                   `object_info`, `queue`, `wait`, `run_prompt`, `interrupt`, `free`),
                                   and `stop()` kills the whole group;
- `ui_to_api(workflow, info)`   → a UI-format workflow as the API prompt the frontend's
                                   graphToPrompt builds (see its docstring);
- `RunResult`                    → what `run_prompt` returns (status, outputs, execution error).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Optional

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES_DIR = os.path.join(REPO_DIR, "example_workflows")
PACK_DIR_NAME = "ComfyUI-LivePortrait"
# ../shared beside the clone (or $LP_SHARED_DIR, as tests/conftest.py) holds the ComfyUI builder.
SHARED_DIR = os.environ.get("LP_SHARED_DIR", os.path.join(os.path.dirname(REPO_DIR), "shared"))
ENV_SCRIPT = os.path.join(SHARED_DIR, "tools", "comfyui_env.sh")
DEFAULT_CACHE = "/tmp/lp-comfyui"
ENABLE_HINT = ("integration tests need a ComfyUI: set COMFYUI_DIR and COMFYUI_PYTHON (a ComfyUI checkout "
               "and the Python of its venv), or put the shared/ folder beside the repository (or set LP_SHARED_DIR)")


@dataclasses.dataclass(frozen=True)
class Install:
    dir: str     # the ComfyUI checkout (main.py)
    python: str  # the Python of its environment


def locate_comfyui() -> tuple[Optional[Install], str]:
    """The ComfyUI to test against, or (None, why not).

    COMFYUI_DIR + COMFYUI_PYTHON win; otherwise ../shared/tools/comfyui_env.sh builds (or, when
    already built, re-checks) one in $LP_COMFYUI_CACHE (default /tmp/lp-comfyui).
    """
    d, py = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if d and py:
        if not os.path.isfile(os.path.join(d, "main.py")) or not os.access(py, os.X_OK):
            raise RuntimeError(f"COMFYUI_DIR={d} has no main.py or COMFYUI_PYTHON={py} is not executable")
        return Install(os.path.abspath(d), py), ""
    if not os.path.isfile(ENV_SCRIPT):
        return None, ENABLE_HINT
    cache = os.environ.get("LP_COMFYUI_CACHE", DEFAULT_CACHE)
    with _lock(os.path.join(os.path.dirname(cache.rstrip("/")) or "/", "." + os.path.basename(cache) + ".lock")):
        out = subprocess.run(["bash", ENV_SCRIPT, cache], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{ENV_SCRIPT} {cache} failed:\n{out.stdout}\n{out.stderr}")
    vals = dict(line.split("=", 1) for line in out.stdout.splitlines() if line.startswith("COMFYUI_"))
    return Install(vals["COMFYUI_DIR"], vals["COMFYUI_PYTHON"]), ""


class _lock:
    """An exclusive flock on `path` (several test sessions may share one ComfyUI venv)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _venv_dir(python: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(python)))


def install_pack(install: Install) -> str:
    """Install the pack's requirements into ComfyUI's environment as ComfyUI-Manager does.

    `python -m pip install -r requirements.txt`, then `python install.py`, both in ComfyUI's
    Python. Idempotent and quick on re-runs: a marker file in the venv, named by the hash of
    requirements.txt + install.py, skips the work once done. Raises if pip changed torch (the
    venv's torch belongs to ComfyUI). Returns the install log (empty when skipped).
    """
    h = hashlib.sha256()
    for f in ("requirements.txt", "install.py"):
        with open(os.path.join(REPO_DIR, f), "rb") as fh:
            h.update(fh.read())
    venv = _venv_dir(install.python)
    marker = os.path.join(venv, f".liveportrait-requirements-{h.hexdigest()[:16]}")
    if os.path.exists(marker):
        return ""
    torch_before = _torch_version(install.python)
    with _lock(os.path.join(venv, ".liveportrait-install.lock")):
        if os.path.exists(marker):
            return ""
        log = []
        for cmd in ([install.python, "-m", "pip", "install", "-q", "-r", "requirements.txt"],
                    [install.python, "install.py"]):
            out = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True)
            log.append(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}")
            if out.returncode != 0:
                raise RuntimeError("installing the pack the ComfyUI-Manager way failed:\n" + "\n".join(log))
        torch_after = _torch_version(install.python)
        if torch_after != torch_before:
            raise RuntimeError(f"installing the pack changed ComfyUI's torch {torch_before} -> {torch_after}")
        with open(marker, "w") as f:
            f.write("\n".join(log))
    return "\n".join(log)


def _torch_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def comfyui_version(install: Install) -> dict:
    """{'comfyui': version, 'commit': …, 'frontend': comfyui_frontend_package version}."""
    out = {"comfyui": "?", "commit": "?", "frontend": "?"}
    try:
        ns: dict = {}
        with open(os.path.join(install.dir, "comfyui_version.py")) as f:
            exec(f.read(), ns)
        out["comfyui"] = ns.get("__version__", "?")
    except OSError:
        pass
    for name in (".comfy_commit",):
        p = os.path.join(install.dir, name)
        if os.path.isfile(p):
            out["commit"] = open(p).read().strip()
    r = subprocess.run([install.python, "-c", "import importlib.metadata as m; "
                        "print(m.version('comfyui-frontend-package'))"], capture_output=True, text=True)
    out["frontend"] = r.stdout.strip() or "?"
    return out


def example_input_files() -> list[str]:
    """The files the example workflows load (images, videos, motion templates), as shipped."""
    return sorted(f for f in os.listdir(EXAMPLES_DIR)
                  if f.endswith((".mp4", ".pkl")) or f == "liveportrait_source.jpg")


def prepare_base(base: str, liveportrait_models: str, insightface_models: Optional[str] = None) -> str:
    """Lay out a throw-away ComfyUI base directory; returns the extra_model_paths.yaml path.

    base/custom_nodes/ComfyUI-LivePortrait → the repository (a symlink, as a git clone would be);
    base/input holds the example inputs; output/, temp/, user/ start empty; the yaml maps
    `liveportrait:` to `liveportrait_models` (and `insightface:` when given).
    """
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    link = os.path.join(base, "custom_nodes", PACK_DIR_NAME)
    if not os.path.lexists(link):
        os.symlink(REPO_DIR, link)
    for f in example_input_files():
        shutil.copy(os.path.join(EXAMPLES_DIR, f), os.path.join(base, "input", f))
    yaml_path = os.path.join(base, "extra_model_paths.yaml")
    lines = ["liveportrait_tests:", f"  liveportrait: {liveportrait_models}"]
    if insightface_models:
        lines.append(f"  insightface: {insightface_models}")
    with open(yaml_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return yaml_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class RunResult:
    """One prompt's end: status 'success' | 'error' | 'interrupted' | 'timeout'."""
    prompt_id: str
    status: str
    outputs: dict                      # node id → ui dict (e.g. {'images': [...]} / {'video': ...})
    messages: list                     # /history status messages [[event, data], ...]
    error: Optional[dict] = None       # the execution_error data: node_id, node_type, exception_message, …
    seconds: float = 0.0

    def output_files(self, output_dir: str) -> list[str]:
        """Absolute paths of every file the prompt's output nodes report (type 'output')."""
        files = []
        for ui in self.outputs.values():
            for items in ui.values():
                if not isinstance(items, list):
                    continue
                for it in items:
                    if isinstance(it, dict) and "filename" in it and it.get("type", "output") == "output":
                        files.append(os.path.join(output_dir, it.get("subfolder", ""), it["filename"]))
        return files


class HTTPError(Exception):
    def __init__(self, code: int, body: str):
        super().__init__(f"HTTP {code}: {body[:2000]}")
        self.code, self.body = code, body


class ComfyServer:
    """ComfyUI's main.py in its own process group on a free loopback port.

    args beyond the fixed ones: --cpu, --disable-api-nodes, an in-memory database, no browser,
    every folder inside `base`. `log_path` collects stdout+stderr.
    """

    def __init__(self, install: Install, base: str, extra_model_paths: str, extra_args: tuple = ()):
        self.install, self.base = install, base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(base, "comfyui.log")
        self.output_dir = os.path.join(base, "output")
        self.input_dir = os.path.join(base, "input")
        self.temp_dir = os.path.join(base, "temp")
        self.cmd = [install.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--cpu",
                    "--disable-api-nodes", "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
                    "--base-directory", base, "--input-directory", self.input_dir,
                    "--output-directory", self.output_dir, "--temp-directory", self.temp_dir,
                    "--user-directory", os.path.join(base, "user"),
                    "--extra-model-paths-config", extra_model_paths, *extra_args]
        self.proc: Optional[subprocess.Popen] = None
        self.client_id = uuid.uuid4().hex
        self._object_info: Optional[dict] = None

    # -------------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 300.0) -> "ComfyServer":
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "2")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)  # the pytest process' paths (tests/, the stub) must not leak in
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=self.install.dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} at start-up; log: {self.log_path}\n"
                                   + self.log_tail())
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (OSError, HTTPError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not serve within {timeout:.0f}s; log: {self.log_path}\n" + self.log_tail())

    def stop(self) -> None:
        """Kill the server's whole process group (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self._log.close()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def rss_bytes(self) -> int:
        """Resident memory of the server process (VmRSS of /proc/<pid>/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    # ------------------------------------------------------------------------------------- HTTP
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise HTTPError(e.code, e.read().decode("utf-8", "replace")) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def get(self, path: str, timeout: float = 60.0):
        return self._request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float = 60.0):
        return self._request("POST", path, body if body is not None else {}, timeout=timeout)

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get("/object_info", timeout=120)
        return self._object_info

    def queue(self, prompt: dict, extra_data: Optional[dict] = None) -> str:
        """POST /prompt; returns the prompt id (raises HTTPError 400 with node_errors if invalid)."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        return self.post("/prompt", body)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900.0) -> RunResult:
        """Poll /history/<id> until the prompt is done; the result says how it ended."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}; log: {self.log_path}\n" + self.log_tail())
            h = self.get(f"/history/{prompt_id}")
            if h and prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                st = entry["status"]
                if st.get("status_str") == "success" and st.get("completed"):
                    status = "success"
                else:
                    status = "error"
                msgs = st.get("messages", [])
                err = next((d for ev, d in msgs if ev == "execution_error"), None)
                if any(ev == "execution_interrupted" for ev, _ in msgs):
                    status = "interrupted"
                return RunResult(prompt_id, status, entry.get("outputs", {}), msgs, err, time.monotonic() - t0)
            time.sleep(0.25)
        return RunResult(prompt_id, "timeout", {}, [], None, time.monotonic() - t0)

    def run_prompt(self, prompt: dict, timeout: float = 900.0) -> RunResult:
        """Queue an API prompt and wait for its end."""
        return self.wait(self.queue(prompt), timeout)

    def interrupt(self) -> None:
        self.post("/interrupt", {})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self.post("/free", {"unload_models": unload_models, "free_memory": free_memory})

    def queue_state(self) -> dict:
        return self.get("/queue")

    def wait_idle(self, timeout: float = 120.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            q = self.queue_state()
            if not q["queue_running"] and not q["queue_pending"]:
                return
            time.sleep(0.25)
        raise TimeoutError("queue did not empty")


# ---------------------------------------------------------------------------- UI → API prompt
# Virtual (frontend-only) nodes never reach the prompt; Reroute and PrimitiveNode forward a value.
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_MUTED, MODE_BYPASS = 2, 4


def _spec_type_opts(spec) -> tuple[str, dict]:
    t = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(t, list):
        return "COMBO", {**opts, "options": t}
    return t, opts


def widget_slots(info: dict, values: Optional[list] = None) -> list[tuple[str, str, dict, bool, bool]]:
    """(prompt key, type, options, stored, sent) for each widget the frontend gives a node, in order.

    `stored`: the widget takes the next entry of the node's widgets_values; `sent`: its value goes
    into the API prompt. What the frontend (1.49) creates, from /object_info: one widget per
    widget-type input in input_order (required, then optional; hidden ones too), each followed by
    the widgets it adds itself: an INT with control_after_generate gets a 'control_after_generate'
    widget and an image/video/audio upload combo an 'upload' button (stored, not sent); a
    video_upload combo also gets a 'video-preview' widget (not stored, sent as ''). A
    COMFY_DYNAMICCOMBO_V3 input is a combo (default: its first option) whose chosen option adds
    that option's inputs right after it, named '<parent>.<child>' and nested the same way;
    `values` (the node's widgets_values) picks the chosen options.
    """
    inputs = info["input"]
    order = info.get("input_order") or {g: list(inputs.get(g, {})) for g in ("required", "optional")}
    out: list = []
    values = list(values or [])
    stored = [0]  # widgets_values entries used so far

    def slot(key, t, opts, is_stored=True, sent=True):
        out.append((key, t, opts, is_stored, sent))
        stored[0] += is_stored

    def add(name: str, spec, prefix: str):
        key = prefix + name
        t, opts = _spec_type_opts(spec)
        if t == "COMFY_DYNAMICCOMBO_V3":
            options = opts.get("options", [])
            keys = [o["key"] for o in options]
            i = stored[0]
            default = opts.get("default", keys[0] if keys else None)
            chosen = values[i] if i < len(values) and values[i] in keys else default
            slot(key, "COMBO", {**opts, "options": keys, "default": default})
            for o in options:
                if o["key"] == chosen:
                    for group in ("required", "optional"):
                        for child, cspec in (o.get("inputs", {}).get(group, {}) or {}).items():
                            add(child, cspec, key + ".")
            return
        if t not in WIDGET_TYPES or opts.get("forceInput"):
            return
        if t == "COMBO" and "default" not in opts and opts.get("options"):
            opts = {**opts, "default": opts["options"][0]}
        slot(key, t, opts)
        if t == "INT" and opts.get("control_after_generate"):
            slot(key + ":control_after_generate", "COMBO", {}, sent=False)
        if t == "COMBO" and any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload", "animated_image_upload")):
            slot("upload", "BUTTON", {}, sent=False)
        if t == "COMBO" and opts.get("video_upload"):
            slot("video-preview", "VIDEO_PREVIEW", {"default": ""}, is_stored=False)

    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = inputs.get(group, {}).get(name)
            if spec is not None:
                add(name, spec, "")
    return out


def ui_to_api(workflow: dict, info: dict) -> dict:
    """A UI-format workflow (version 0.4) → the API prompt the frontend's graphToPrompt sends.

    Facts from comfyui_frontend_package: every non-virtual node whose mode is not muted/bypassed
    becomes {inputs, class_type, _meta}; widget values come from widgets_values in widget order
    (`widget_slots`) minus the ones not sent (control_after_generate, upload buttons), with
    defaults for widgets a saved workflow has no value for (e.g. added later);
    a linked input becomes [origin node id (str), origin slot], following Reroute nodes and
    bypassed nodes (a bypassed node passes the input of the same type through) back to a real
    node; a widget input linked to a PrimitiveNode takes the primitive's value. `_meta.title`
    is added as the frontend does.
    """
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow.get("links", [])}

    def origin(link_id):
        """(node, slot) a link's value really comes from, or ('value', v) for a primitive."""
        link = links[link_id]
        src, slot = nodes[link[1]], link[2]
        if src["type"] == "Reroute":
            inp = src["inputs"][0] if src.get("inputs") else None
            return origin(inp["link"]) if inp and inp.get("link") is not None else None
        if src["type"] == "PrimitiveNode":
            return ("value", (src.get("widgets_values") or [None])[0])
        if src.get("mode", 0) == MODE_BYPASS:
            typ = src["outputs"][slot]["type"]
            for inp in src.get("inputs", []):
                if inp.get("link") is not None and inp["type"] == typ:
                    return origin(inp["link"])
            return None
        if src.get("mode", 0) == MODE_MUTED:
            return None
        return (src, slot)

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        ni = info[node["type"]]
        values = list(node.get("widgets_values") or [])
        inputs: dict = {}
        pos = 0
        for key, t, opts, stored, sent in widget_slots(ni, values):
            value = opts.get("default")
            if stored:
                if pos < len(values):
                    value = values[pos]
                pos += 1
            if sent and (value is not None or "default" in opts):
                inputs[key] = value
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            o = origin(inp["link"])
            if o is None:
                inputs.pop(inp["name"], None)
            elif o[0] == "value":
                inputs[inp["name"]] = o[1]
            else:
                inputs[inp["name"]] = [str(o[0]["id"]), o[1]]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title") or ni.get("display_name") or node["type"]}}
    return prompt


def load_workflow(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def python_of_tests() -> str:
    return sys.executable
