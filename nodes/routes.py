"""HTTP routes of the live preview, on ComfyUI's server under /liveportrait/.

POST /liveportrait/preview   body (JSON, ≤ 64 KB):
    {"source": "<id an editor run issued>", "controls": {"smile": 0.6, ...},
     "strength": 1.0, "client": "<any short key, e.g. the node id>"}
    → 200 image/png (512×512, the node's pixels), headers X-LivePortrait-Render-Ms;
      400 bad JSON / values, 404 unknown id, 409 superseded by a newer request of the same
      client, 413 body too large, 415 not JSON, 500 render failed — errors as {"error": "..."}.
    or, from the Keyframes timeline, {"source", "sequence": {keyframe JSON}, "frame": n, "client"}:
    the controls of frame n of the sequence (evaluated by the core), strength = the sequence's.
GET  /liveportrait/controls  → {"controls": [{name, label, min, max, neutral, step, unit, kind,
                                tooltip}, ...]} (the editor's sliders, CONTROLS order)
GET  /liveportrait/sources   → {"sources": [{"id", "label", "precision"}], "epoch": n,
                                "renders": n, "superseded": n}  (ids in registration order)

Only ids the editor node registered are accepted (nothing from the request is opened as a
file); values are validated against the control table. The render runs in a worker thread
(the server's event loop keeps serving) under nodes/comfy.MODELS_LOCK, so it never overlaps a
move of the networks between devices. ComfyUI's POST /free empties the cache (a middleware).

The request handling is plain functions (`parse_preview`, `preview_response`) so it is tested
and benchmarked without a server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from typing import Optional

from . import comfy as C

log = logging.getLogger(__name__)

PREFIX = "/liveportrait"
MAX_BODY = 64 * 1024
_CACHE = None
_CACHE_LOCK = threading.Lock()
_EPOCH = [0]


class RequestError(Exception):
    """A bad request: HTTP status + message for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def preview_cache():
    """The process-wide PreviewCache (created on first use; rendering under MODELS_LOCK)."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            from ..liveportrait_core.editing.preview import PreviewCache

            _CACHE = PreviewCache(max_sources=8, max_animators=2, render_lock=C.MODELS_LOCK)
        return _CACHE


def cache_epoch() -> int:
    """Bumped whenever the cache is emptied (the editor re-runs to register its face again)."""
    return _EPOCH[0]


def free_cache() -> int:
    _EPOCH[0] += 1
    if _CACHE is None:
        return 0
    n = _CACHE.clear()
    log.info("[LivePortrait] preview cache emptied (%d source(s))", n)
    return n


# ----------------------------------------------------------------------------- request logic


def parse_preview(body: bytes) -> dict:
    """Validate a preview request body → {"source", "controls", "strength", "client"}.
    Raises RequestError (400 / 404 / 413)."""
    from ..liveportrait_core.editing.controls import validate_controls
    from ..liveportrait_core.errors import LivePortraitError

    if len(body) > MAX_BODY:
        raise RequestError(413, f"request body larger than {MAX_BODY} bytes.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "body must be a JSON object {\"source\": id, \"controls\": {...}}.")
    unknown = set(data) - {"source", "controls", "strength", "client", "sequence", "frame"}
    if unknown:
        raise RequestError(400, f"unknown field(s) {sorted(unknown)}; expected source, controls, strength, client "
                                "(or sequence + frame).")
    source = data.get("source")
    if not isinstance(source, str) or not (0 < len(source) <= 64):
        raise RequestError(400, "'source' must be the preview id the editor node returned (a short string).")
    if source not in preview_cache():
        raise RequestError(404, "unknown preview source id (never issued, or freed by /free): run the workflow "
                                "once so the editor node registers its face.")
    if "sequence" in data:
        if "controls" in data or "strength" in data:
            raise RequestError(400, "give either 'controls' (+ 'strength') or 'sequence' + 'frame', not both.")
        data = {**data, **sequence_frame(data.get("sequence"), data.get("frame"))}
    controls = data.get("controls", {})
    if not isinstance(controls, dict):
        raise RequestError(400, "'controls' must be an object of control name → number.")
    for k, v in controls.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RequestError(400, f"control '{k}' must be a number, got {json.dumps(v)[:40]}.")
    try:
        values = validate_controls(controls, "preview request")
    except LivePortraitError as e:
        raise RequestError(400, str(e)) from None
    strength = data.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or not (0.0 <= strength <= 2.0):
        raise RequestError(400, f"'strength' must be a number between 0 and 2, got {json.dumps(strength)[:40]}.")
    client = data.get("client", source)
    if not isinstance(client, str) or len(client) > 64:
        raise RequestError(400, "'client' must be a short string (≤ 64 characters).")
    return {"source": source, "controls": values, "strength": float(strength), "client": client}


def sequence_frame(sequence, frame) -> dict:
    """{"controls", "strength"} of frame `frame` of a keyframe sequence (a JSON object, as the
    timeline sends it: the Keyframes node's widgets already applied). The core evaluates it."""
    from ..liveportrait_core.editing.keyframes import frame_count, sequence_from_dict, sequence_values
    from ..liveportrait_core.errors import LivePortraitError

    if isinstance(frame, bool) or not isinstance(frame, int) or not (0 <= frame <= 100_000):
        raise RequestError(400, "'frame' must be a whole frame number between 0 and 100000.")
    try:
        seq = sequence_from_dict(sequence, "preview sequence")
        n = max(frame + 1, frame_count(seq))
        values = sequence_values(seq, n_frames=n)
    except LivePortraitError as e:
        raise RequestError(400, str(e)) from None
    return {"controls": {k: float(v[frame]) for k, v in values.items()}, "strength": float(seq.strength)}


def render_preview(req: dict, ticket: Optional[tuple] = None) -> tuple[bytes, float]:
    """(PNG bytes, render ms) of a parsed request. Raises Superseded / UnknownSourceError."""
    from ..liveportrait_core.editing.preview import encode_png

    cache = preview_cache()
    started = []
    t0 = time.perf_counter()
    img = cache.render(req["source"], req["controls"], strength=req["strength"], ticket=ticket,
                       on_start=lambda: started.append(time.perf_counter()))
    ms = (time.perf_counter() - (started[0] if started else t0)) * 1000.0
    return encode_png(img), ms


def accept_preview(body: bytes) -> tuple[dict, tuple]:
    """Parse a request and number it for its client (at arrival: a later one supersedes it)."""
    req = parse_preview(body)
    return req, (req["client"], preview_cache().generations.next(req["client"]))


def preview_response(body: bytes, accepted: Optional[tuple] = None) -> tuple[int, dict, bytes]:
    """The whole POST /liveportrait/preview, synchronously: (status, headers, body bytes).
    accepted: the result of `accept_preview(body)` when already parsed and numbered."""
    from ..liveportrait_core.editing.preview import Superseded, UnknownSourceError

    try:
        req, ticket = accepted if accepted is not None else accept_preview(body)
        png, ms = render_preview(req, ticket)
    except RequestError as e:
        return e.status, _json_headers(), _error(e.message)
    except Superseded as e:
        return 409, _json_headers(), _error(str(e))
    except UnknownSourceError as e:
        return 404, _json_headers(), _error(str(e))
    except Exception as e:  # a failed render is reported, the server keeps serving
        log.exception("[LivePortrait] preview failed")
        return 500, _json_headers(), _error(f"preview failed: {e}")
    return 200, {"Content-Type": "image/png", "Cache-Control": "no-store",
                 "X-LivePortrait-Render-Ms": f"{ms:.1f}"}, png


def controls_table() -> dict:
    from ..liveportrait_core.editing.controls import CONTROLS

    return {"controls": [{"name": c.name, "label": c.label, "min": c.minimum, "max": c.maximum,
                          "neutral": c.neutral, "step": c.step, "unit": c.unit, "kind": c.kind,
                          "tooltip": c.tooltip} for c in CONTROLS.values()]}


def sources_table() -> dict:
    cache = preview_cache()
    with cache._lock:
        items = [{"id": k, "label": s.label, "precision": s.precision} for k, s in cache._sources.items()]
    return {"sources": items, "epoch": cache_epoch(), "renders": cache.renders, "superseded": cache.superseded}


def _error(msg: str) -> bytes:
    return json.dumps({"error": msg}).encode()


def _json_headers() -> dict:
    return {"Content-Type": "application/json", "Cache-Control": "no-store"}


# ----------------------------------------------------------------------------- aiohttp wiring


def _register(routes, web) -> None:
    async def read_body(request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise RequestError(413, f"request body larger than {MAX_BODY} bytes.")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise RequestError(413, f"request body larger than {MAX_BODY} bytes.")
        return body

    @routes.post(PREFIX + "/preview")
    async def liveportrait_preview(request):
        try:
            if request.content_type not in ("application/json", "text/plain", "application/octet-stream"):
                raise RequestError(415, "send the request as JSON (Content-Type: application/json).")
            body = await read_body(request)
            accepted = accept_preview(body)  # cheap checks; numbered on arrival
        except RequestError as e:
            return web.Response(status=e.status, body=_error(e.message), headers=_json_headers())
        # the render (and its lock wait) in a worker thread: the event loop keeps serving
        status, headers, out = await asyncio.get_running_loop().run_in_executor(
            None, preview_response, body, accepted)
        return web.Response(status=status, body=out, headers=headers)

    @routes.get(PREFIX + "/controls")
    async def liveportrait_controls(request):
        return web.json_response(controls_table())

    @routes.get(PREFIX + "/sources")
    async def liveportrait_sources(request):
        return web.json_response(sources_table())


_INSTALLED = [False]


def install() -> bool:
    """Add the routes and the /free hook to ComfyUI's server (once; no-op without a server)."""
    if _INSTALLED[0]:
        return True
    if not C.add_server_routes(_register):
        return False
    C.on_free(free_cache)
    _INSTALLED[0] = True
    return True
