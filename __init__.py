"""ComfyUI-LivePortrait: LivePortrait portrait animation as ComfyUI nodes.

ComfyUI imports this file from `custom_nodes/`. It must stay cheap and side-effect free:
no downloads, no model loading, no pip. The node classes live in `nodes/`.
"""
try:  # inside ComfyUI
    from .nodes import comfy_entrypoint  # noqa: F401
except ImportError as exc:  # outside ComfyUI (tests, CLI): the core library is still usable
    if not any(m in str(exc) for m in ("comfy", "folder_paths", "nodes")):
        raise
