"""ComfyUI nodes of the LivePortrait pack (V3 schema API, one extension).

Thin adapters: ComfyUI tensors ↔ the core's values; all computation lives in liveportrait_core.
Importing this package registers the model folders with folder_paths and nothing else: no model
loading, no downloads, no ONNX sessions (those happen in the nodes' execute).
"""
from __future__ import annotations

from .comfy import ComfyExtension
from .animate import LivePortraitAnimate
from .editor import LivePortraitExpressionEditor
from .keyframes import LivePortraitApplyExpression, LivePortraitKeyframes
from .faces import LivePortraitCropFace, LivePortraitPasteBack
from .loaders import LivePortraitLoadFaceDetector, LoadLivePortraitModels
from .motion import (LivePortraitExtractMotion, LivePortraitLoadMotion, LivePortraitRetarget,
                     LivePortraitSaveMotion)

NODES = [
    LoadLivePortraitModels,
    LivePortraitLoadFaceDetector,
    LivePortraitCropFace,
    LivePortraitExtractMotion,
    LivePortraitRetarget,
    LivePortraitAnimate,
    LivePortraitPasteBack,
    LivePortraitLoadMotion,
    LivePortraitSaveMotion,
    LivePortraitExpressionEditor,
    LivePortraitKeyframes,
    LivePortraitApplyExpression,
]


class LivePortraitExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return list(NODES)


async def comfy_entrypoint() -> LivePortraitExtension:
    from .routes import install

    install()  # the live-preview routes on ComfyUI's server (no-op outside a server)
    return LivePortraitExtension()
