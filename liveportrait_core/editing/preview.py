"""Live preview of expression edits: one source face, prepared once, re-rendered per change.

The expression editor (a node run) and the live preview (an HTTP route while a slider moves)
both render through `render_edit`, so a run gives the preview's image bit for bit.

`PreviewCache` keeps, per source face, what does not change while the sliders move: the
appearance features f_s = F(crop) `[1,32,16,64,64]` and the face's motion (canonical
keypoints, pose, expression, ratios). Each update then costs one edited-keypoint computation
(two tiny MLPs) plus one warp W + decode G of a single frame. The cache is small and bounded
(least recently used entries go first), keyed by a content hash of the crop, the motion and
the weights identity — never by object id — and emptied by `clear()` (ComfyUI's /free).

Supersession: `Generations` hands out a number per request for a key (e.g. the node asking);
a render that starts after a newer request arrived is skipped (`Superseded`), so a slider drag
renders only the latest position once the renderer is free.

No ComfyUI import here; the routes in nodes/routes.py wrap this for the server.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping, Optional

import numpy as np
import torch

from ..errors import InputError, LivePortraitError
from ..motion import Motion


class UnknownSourceError(LivePortraitError):
    """A preview asked for a source id this process did not issue (or has freed since)."""


class Superseded(LivePortraitError):
    """A newer preview request for the same key arrived before this one started rendering."""


# ----------------------------------------------------------------------------- identities


def weights_identity(models) -> tuple:
    """What identifies loaded weights (not the Python object): folder, files, dtype, variant."""
    files = tuple(sorted((str(k), str(v)) for k, v in (getattr(models, "files", None) or {}).items()))
    return (str(getattr(models, "source", "")), files, str(getattr(models, "dtype", "")),
            str(getattr(models, "variant", "")))


def _tensor_bytes(t: Optional[torch.Tensor]) -> bytes:
    if t is None:
        return b"-"
    return t.detach().cpu().contiguous().numpy().tobytes()


def source_key(crop: torch.Tensor, motion: Motion, models, precision: str) -> str:
    """Content hash (24 hex digits) of one source face: crop pixels, its motion, weights, precision."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((weights_identity(models), precision)).encode())
    h.update(_tensor_bytes(torch.as_tensor(crop)))
    for name in ("pitch", "yaw", "roll", "R", "exp", "t", "scale", "kp", "eye_ratio", "lip_ratio"):
        h.update(_tensor_bytes(getattr(motion, name)))
    return h.hexdigest()


# ----------------------------------------------------------------------------- the render


def render_edit(animator, features: torch.Tensor, motion: Motion, values: Mapping[str, float],
                mlps=None, stitching: bool = True, strength: float = 1.0) -> torch.Tensor:
    """The edited face crop(s): `[N,512,512,3]` float32 in [0,1] on the CPU.

    features `[N,32,16,64,64]` (from `animator.source_features`), motion: the N source items
    (with kp). x_s = the source keypoints, x_d = `edited_keypoints(motion, values, mlps,
    stitching, strength)`; then W + G of `animator` (its precision decides exact / fast).
    """
    from ..images import render_to_float
    from .controls import edited_keypoints

    x_s = motion.keypoints()
    x_d = edited_keypoints(motion, values, mlps=mlps, stitching=stitching, strength=strength)
    img = animator.warp_decode(features.to(animator.device), x_s, x_d)
    return render_to_float(img)


def to_u8(image: torch.Tensor) -> np.ndarray:
    """`[...,3]` float 0..1 → uint8 as ComfyUI saves and previews IMAGEs (×255, clip, truncate),
    so a preview PNG has the pixels of the node's saved image."""
    return np.clip(255.0 * image.detach().cpu().numpy(), 0, 255).astype(np.uint8)


def encode_png(image: torch.Tensor) -> bytes:
    """One image `[512,512,3]` (or `[1,512,512,3]`) float 0..1 → PNG bytes (lossless, fast level)."""
    import cv2

    arr = to_u8(image.reshape(-1, *image.shape[-3:])[0])
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise LivePortraitError("could not encode the preview image as PNG.")
    return buf.tobytes()


# ----------------------------------------------------------------------------- the cache


@dataclass
class PreviewSource:
    """One prepared source face.

    features: `[1,32,16,64,64]` appearance features (animator dtype / device).
    motion:   its 1-item Motion (with kp and, when known, eye / lip ratios).
    stitching: whether the editor applies the stitching network.
    label:    a short description for the UI (e.g. "face 0").
    """

    key: str
    models: object
    precision: str
    features: torch.Tensor
    motion: Motion
    stitching: bool = True
    label: str = ""


class Generations:
    """A counter per key: `next(key)` numbers a request, `current(key, n)` says it is the latest."""

    def __init__(self, max_keys: int = 256):
        self._n: "OrderedDict[str, int]" = OrderedDict()
        self._lock = threading.Lock()
        self.max_keys = max_keys

    def next(self, key: str) -> int:
        with self._lock:
            n = self._n.pop(key, 0) + 1
            self._n[key] = n
            while len(self._n) > self.max_keys:
                self._n.popitem(last=False)
            return n

    def current(self, key: str, n: int) -> bool:
        with self._lock:
            return self._n.get(key, n) == n


class PreviewCache:
    """Bounded LRU of prepared source faces plus one Animator per (weights, precision).

    render_lock: held while rendering (shared with whatever moves the networks between
        devices, so a preview never runs on half-moved weights); None = a private lock.
    max_sources: entries kept (≈ 8 MB of float32 features each).
    """

    def __init__(self, max_sources: int = 8, max_animators: int = 2,
                 render_lock: Optional[ContextManager] = None):
        self.max_sources = int(max_sources)
        self.max_animators = int(max_animators)
        self.render_lock = render_lock if render_lock is not None else threading.RLock()
        self._sources: "OrderedDict[str, PreviewSource]" = OrderedDict()
        self._animators: "OrderedDict[tuple, object]" = OrderedDict()
        self._lock = threading.Lock()  # guards the two dicts (short critical sections)
        self.generations = Generations()
        self.feature_computations = 0  # F evaluations (for tests / diagnostics)
        self.renders = 0  # W+G evaluations
        self.superseded = 0  # requests skipped because a newer one of the same client arrived

    # -- animators
    def animator(self, models, precision: str):
        """The Animator of `models` at `precision` on the models' current device (cached)."""
        from ..render import Animator

        device = torch.device(getattr(models, "device", "cpu"))
        key = (weights_identity(models), precision, str(device))
        with self._lock:
            a = self._animators.get(key)
            if a is not None and a.models is models:
                self._animators.move_to_end(key)
                return a
        a = Animator(models, precision=precision, batch_size=1, device=device)
        with self._lock:
            self._animators[key] = a
            while len(self._animators) > self.max_animators:
                self._animators.popitem(last=False)
        return a

    # -- sources
    def register(self, models, crop, motion: Motion, precision: str = "exact", stitching: bool = True,
                 label: str = "") -> str:
        """Prepare one source face (features computed unless already cached); returns its id.

        crop: `[256,256,3]` uint8 RGB network input (a FaceCrops item); motion: its 1 item.
        """
        if len(motion) != 1:
            raise InputError(f"a preview source is one face item, got a motion of {len(motion)} items.")
        crop_t = torch.as_tensor(crop)
        key = source_key(crop_t, motion, models, precision)
        with self._lock:
            hit = self._sources.get(key)
            if hit is not None:
                hit.models, hit.stitching, hit.label = models, bool(stitching), label or hit.label
                self._sources.move_to_end(key)
                return key
        with self.render_lock:
            animator = self.animator(models, precision)
            feats = animator.source_features(crop_t.reshape(1, *crop_t.shape[-3:]))
            self.feature_computations += 1
        src = PreviewSource(key=key, models=models, precision=precision, features=feats,
                            motion=motion.select([0]), stitching=bool(stitching), label=label)
        with self._lock:
            self._sources[key] = src
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        return key

    def get(self, key: str) -> PreviewSource:
        with self._lock:
            src = self._sources.get(key) if isinstance(key, str) else None
            if src is None:
                raise UnknownSourceError(
                    "unknown preview source id (never issued, or freed by /free or evicted): run the "
                    "workflow once more so the editor node registers its face again.")
            self._sources.move_to_end(key)
            return src

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._sources

    def __len__(self) -> int:
        with self._lock:
            return len(self._sources)

    def render(self, key: str, values: Mapping[str, float], strength: float = 1.0,
               ticket: Optional[tuple] = None,
               on_start: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """The edited crop of source `key`: `[1,512,512,3]` float32 0..1 (see `render_edit`).

        ticket: (client key, generation) from `generations.next`; when a newer request for
        that key exists once the render lock is free, raises `Superseded` without rendering.
        """
        from .controls import validate_controls

        vals = validate_controls(values, "preview controls")
        src = self.get(key)
        with self.render_lock:
            if ticket is not None and not self.generations.current(*ticket):
                self.superseded += 1
                raise Superseded("a newer preview request replaced this one.")
            self.renders += 1
            if on_start is not None:
                on_start()
            animator = self.animator(src.models, src.precision)
            mlps = getattr(src.models, "stitching_retargeting", None)
            return render_edit(animator, src.features, src.motion, vals, mlps=mlps,
                               stitching=src.stitching, strength=strength)

    def clear(self) -> int:
        """Drop every prepared source and animator (ComfyUI's /free); returns how many sources."""
        with self._lock:
            n = len(self._sources)
            self._sources.clear()
            self._animators.clear()
        return n


def null_lock() -> ContextManager:
    return contextlib.nullcontext()
