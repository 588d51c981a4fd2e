"""Stand-in for `comfy_api.latest` (ComfyUI 0.33's comfy_api/latest): ComfyExtension, io, ui."""
from __future__ import annotations

from . import _io as io
from . import _ui as ui


class ComfyExtension:
    async def on_load(self) -> None:
        """Called once when the extension is loaded."""

    async def get_node_list(self) -> list:
        raise NotImplementedError


__all__ = ["ComfyExtension", "io", "ui"]
