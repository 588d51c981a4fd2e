"""Stand-in for `comfy.utils`: ProgressBar and the global hook `main.py: hijack_progress` installs.

The installed hook checks for Cancel first, then records the update; tests read
`PROGRESS_EVENTS` (value, total, node_id, has_preview).
"""
from __future__ import annotations

import comfy.model_management as mm

PROGRESS_EVENTS: list = []


def _hook(value, total, preview, node_id=None):
    mm.throw_exception_if_processing_interrupted()
    if preview is not None:   # ("JPEG", PIL.Image, max_size) as main.py expects
        assert isinstance(preview, tuple) and len(preview) == 3 and preview[0] in ("JPEG", "PNG")
        preview[1].size  # a PIL image
    PROGRESS_EVENTS.append((value, total, node_id, preview is not None))


PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK = _hook


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.node_id = node_id
        self.hook = PROGRESS_BAR_HOOK

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)
