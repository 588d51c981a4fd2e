"""Session fixtures of the integration tests: one real ComfyUI server, a headless browser.

Fixtures for other tests to build on:
- `comfy_install`  — `Install(dir, python)` of the ComfyUI under test, the pack installed the
                     ComfyUI-Manager way (skips the module with one line when there is none);
- `comfy`          — a running `ComfyServer` (session): synthetic weights and the astronaut
                     landmark stand-in through extra_model_paths.yaml, example inputs in input/;
                     stopped at session end, also after failures; its log path is printed;
- `object_info`    — the server's /object_info (session);
- `lp_models_dir`  — the liveportrait model folder the server sees (write more files there);
- `browser`        — a headless Chromium (playwright, /usr/bin/chromium or $CHROMIUM), session;
- `page`           — a fresh page with the ComfyUI frontend loaded and errors collected
                     (`page.lp_errors`: page errors and console errors), per test;
- `artifacts`      — a per-test folder for screenshots (path printed by the tests).
"""
from __future__ import annotations

import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(HERE)
for p in (HERE, TESTS_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)

import comfy_server as cs  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _report(msg: str) -> None:
    """A line on the terminal even without -s (pytest captures prints of fixtures)."""
    sys.__stderr__.write(f"\n[integration] {msg}\n")
    sys.__stderr__.flush()


@pytest.fixture(scope="session")
def comfy_install() -> cs.Install:
    install, why = cs.locate_comfyui()
    if install is None:
        pytest.skip(why)
    t0 = time.monotonic()
    log = cs.install_pack(install)
    v = cs.comfyui_version(install)
    _report(f"ComfyUI {v['comfyui']} (commit {v['commit']}), frontend {v['frontend']}, python {install.python}"
            + (f"; pack requirements installed in {time.monotonic() - t0:.0f}s" if log else ""))
    return install


@pytest.fixture(scope="session")
def lp_models_dir(tmp_path_factory) -> str:
    """Synthetic SEED=0 flat safetensors weights + the astronaut landmark.onnx stand-in."""
    import synth_weights
    from face_standins import astronaut_landmark_standin

    d = str(tmp_path_factory.mktemp("lp_models"))
    synth_weights.write_folder(d, 0, "safetensors-flat")
    astronaut_landmark_standin(os.path.join(d, "landmark.onnx"))
    return d


@pytest.fixture(scope="session")
def comfy(comfy_install, lp_models_dir, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("comfy_base"))
    yaml_path = cs.prepare_base(base, lp_models_dir)
    import frontend

    frontend.seed_user_settings(os.path.join(base, "user"))
    server = cs.ComfyServer(comfy_install, base, yaml_path)
    _report(f"ComfyUI log: {server.log_path}")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _report(f"ComfyUI stopped; log: {server.log_path}")


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    return comfy.object_info()


@pytest.fixture
def artifacts(tmp_path) -> str:
    d = tmp_path / "artifacts"
    d.mkdir()
    return str(d)


@pytest.fixture(scope="session")
def browser(comfy):
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (or set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, comfy):
    """The ComfyUI frontend, loaded and ready (window.app.graph exists), 1600x1000."""
    import frontend

    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    pg.lp_errors = errors
    try:
        frontend.open_app(pg, comfy.url)
        yield pg
    finally:
        ctx.close()
