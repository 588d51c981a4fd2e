"""ComfyUI-LivePortrait: LivePortrait portrait animation as ComfyUI nodes.

ComfyUI imports this file from `custom_nodes/`. It must stay cheap and side-effect free:
no downloads, no model loading, no pip. The node classes live in `nodes/`; outside ComfyUI
(CLI, tests) only the core library `liveportrait_core/` is used and nothing is imported here.
"""
import importlib.util

WEB_DIRECTORY = "./web"  # the frontend extension (live preview, timeline); served at /extensions/<pack>/

if importlib.util.find_spec("comfy_api") is not None:  # running inside ComfyUI
    from .nodes import comfy_entrypoint  # noqa: F401
