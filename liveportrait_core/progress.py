"""Progress and cancel contracts of the core's long loops (render, motion extraction, tracking).

* progress: `progress(done, total)` — called after each unit of work (frames, crops); `total`
  is None while unknown (a tracking pass over a stream).
* cancel: a check function polled between frames. It stops the loop by raising: either its own
  exception (ComfyUI's `check_interrupt` raises the interrupt ComfyUI expects) or, when it
  returns True, `Cancelled` raised by `check_cancel`. The CLI and the nodes pass it the same way.
"""
from __future__ import annotations

from typing import Callable, Optional

from .errors import LivePortraitError

ProgressFn = Callable[[int, Optional[int]], None]
CancelFn = Callable[[], object]


class Cancelled(LivePortraitError):
    """A long loop was stopped by its cancel check."""


def check_cancel(cancel: Optional[CancelFn], what: str = "Rendering") -> None:
    """Poll `cancel` (if any): raise `Cancelled` when it returns True (it may raise itself)."""
    if cancel is not None and cancel():
        raise Cancelled(f"{what} cancelled.")
