"""Motion files: the reference tool's `.pkl` templates and our own pickle-free format.

* `.pkl` (ARCHITECTURE.md §11): read through a restricted unpickler that admits only the numpy
  globals arrays and numbers are rebuilt from (`multiarray._reconstruct` / `.scalar` under
  `numpy.core` or `numpy._core`, `numpy.ndarray`, `numpy.dtype` — object dtypes refused); any
  other global is refused before anything runs. Both layouts are read: rotation `R` or `R_d`, ratio lists
  `c_eyes_lst` / `c_lip_lst` or `c_d_eyes_lst` / `c_d_lip_lst`, or none (ratios then unknown).
  Written with protocol 4, plain float32 arrays and Python ints, the current key names.
* `.lpmotion.safetensors` (ours): safetensors tensors + JSON metadata; round-trips every
  Motion field exactly (None fields, fps, face ids, frame indices, and the editing fields:
  the anchor as `anchor.<field>` tensors, eye / lip ratio targets). Files of motions without
  editing fields are format version 1 as before; with them version 2 (older readers then say
  the file is newer than they read, instead of misreading it).
* A `.pkl` template has no place for the editing fields: saving drops the anchor and the
  ratio targets (with a warning), so a reloaded edited motion is relative to its frame 0.
"""
from __future__ import annotations

import importlib
import io
import json
import math
import os
import pickle
import struct
import uuid
import warnings
from typing import Any

import numpy as np
import torch

from .errors import LivePortraitError, MotionFileError
from .motion import NUM_KP, Motion

MOTION_EXTENSION = ".lpmotion.safetensors"
PICKLE_EXTENSION = ".pkl"
_FORMAT_KEY = "liveportrait_motion"
_FORMAT_VERSION = 2  # newest version read; 1 = no editing fields
_MAX_BYTES = 1 << 30
_FLOAT_FIELDS = ("pitch", "yaw", "roll", "R", "exp", "t", "scale", "kp", "eye_ratio", "lip_ratio")
_INT_FIELDS = ("face_id", "frame_index")
_EDIT_FIELDS = ("eye_target", "lip_target")  # version 2
_ANCHOR = "anchor."  # prefix of the anchor's tensors (version 2)


# ------------------------------------------------------------------------------ reading .pkl


def _multiarray():
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, then numpy 1
        try:
            return importlib.import_module(mod)
        except ImportError:
            continue
    raise MotionFileError("this numpy cannot rebuild pickled arrays (no multiarray module).")


def _numpy_reconstruct():
    return _multiarray()._reconstruct


def _plain_dtype(*args):
    """numpy.dtype for numbers only: object dtypes (which can hold anything) are refused."""
    d = np.dtype(*args)
    if d.hasobject:
        raise MotionFileError("refused to load: the file contains an object array, which a motion "
                              "template never does (only float arrays and plain values are allowed).")
    return d


def _plain_scalar(dtype, *args):
    """A numpy number (e.g. an fps saved as numpy.int64); object scalars are refused."""
    return _multiarray().scalar(_plain_dtype(dtype), *args)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays and numbers are rebuilt from."""

    _ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                for n in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise MotionFileError(
                f"refused to load: the file references '{module}.{name}', which a motion template "
                "never contains (only numpy arrays and plain values are allowed). It may be unsafe; "
                "nothing from it was run.")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if name == "scalar":
            return _plain_scalar
        return np.ndarray if name == "ndarray" else _plain_dtype

    def persistent_load(self, pid: Any) -> Any:
        raise MotionFileError("refused to load: the pickle uses persistent ids (not a motion template).")


def _unpickle(data: bytes, path: str) -> Any:
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except MotionFileError as e:
        raise MotionFileError(f"{path}: {e}") from None
    except Exception as e:  # truncated / garbage / wrong kind: all the user's file, not our bug
        raise MotionFileError(f"{path}: not a readable motion template ({type(e).__name__}: {e}).") from None


def _array(value: Any, size: int, what: str, path: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind not in "fiub":
        raise MotionFileError(f"{path}: {what} has dtype {value.dtype}, expected float32 numbers.")
    try:
        a = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise MotionFileError(f"{path}: {what} is not a numeric array.") from None
    if a.size != size:
        raise MotionFileError(f"{path}: {what} has {a.size} values, expected {size}.")
    return a.reshape(-1)


def _int(value: Any, what: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise MotionFileError(f"{path}: {what} should be a number, got {type(value).__name__}.")
    return int(value)


def _from_template(d: Any, path: str) -> Motion:
    """Template dict (§11 layout, old or current key names) → Motion (degrees derived from R)."""
    if not isinstance(d, dict) or not isinstance(d.get("motion"), (list, tuple)):
        raise MotionFileError(f"{path}: not a LivePortrait motion template (no 'motion' list of frames).")
    frames = list(d["motion"])
    n = _int(d.get("n_frames", len(frames)), "n_frames", path)
    if n < 1 or n > len(frames):
        raise MotionFileError(f"{path}: n_frames is {n} but the template holds {len(frames)} frame(s).")
    frames = frames[:n]
    cols: dict[str, list] = {k: [] for k in ("R", "exp", "t", "scale", "kp")}
    for i, f in enumerate(frames):
        if not isinstance(f, dict):
            raise MotionFileError(f"{path}: motion frame {i} is not a dict of arrays.")
        rot = "R" if "R" in f else "R_d"
        for key, src, size in (("R", rot, 9), ("exp", "exp", 63), ("t", "t", 3), ("scale", "scale", 1)):
            if src not in f:
                raise MotionFileError(f"{path}: motion frame {i} lacks '{src}'.")
            cols[key].append(_array(f[src], size, f"frame {i} '{src}'", path))
        if "kp" in f:
            cols["kp"].append(_array(f["kp"], 63, f"frame {i} 'kp'", path))
    fps = d.get("output_fps", 25)
    fps = float(_int(fps, "output_fps", path)) if isinstance(fps, (int, np.integer)) else fps
    if isinstance(fps, bool) or not isinstance(fps, (float, np.floating)) or not (math.isfinite(fps) and fps > 0):
        raise MotionFileError(f"{path}: output_fps should be a positive number, got {fps!r}.")
    ratios = {}
    for name, keys, size in (("eye_ratio", ("c_eyes_lst", "c_d_eyes_lst"), 2),
                             ("lip_ratio", ("c_lip_lst", "c_d_lip_lst"), 1)):
        key = next((k for k in keys if k in d), None)
        if key is None:
            ratios[name] = None  # e.g. wink.pkl: ratios unknown, motion still complete
            continue
        lst = d[key]
        if not isinstance(lst, (list, tuple)) or len(lst) < n:
            got = len(lst) if isinstance(lst, (list, tuple)) else type(lst).__name__
            raise MotionFileError(f"{path}: '{key}' should list one ratio per frame ({n}), got {got}.")
        ratios[name] = np.stack([_array(v, size, f"'{key}' entry {i}", path) for i, v in enumerate(lst[:n])])
    stack = {k: np.stack(v) for k, v in cols.items() if v}
    kp = stack["kp"].reshape(n, NUM_KP, 3) if len(cols["kp"]) == n else None
    return Motion.from_rotation(stack["R"].reshape(n, 3, 3), stack["exp"], stack["t"], stack["scale"],
                                kp=kp, fps=float(fps), **ratios)


# ------------------------------------------------------------------------------ writing .pkl


class _TemplatePickler(pickle._Pickler):  # pure-Python pickler: lets us name numpy's global
    """Writes `_reconstruct` as `numpy.core.multiarray._reconstruct`, the name every numpy
    (1.x natively, 2.x through its compatibility module) resolves, as upstream's files do."""

    def save_global(self, obj, name=None):
        if obj is _numpy_reconstruct():
            self.save("numpy.core.multiarray")
            self.save("_reconstruct")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _single_face(motion: Motion, path: str) -> None:
    if len(motion.faces()) > 1:
        raise MotionFileError(f"{path}: a .pkl template holds one face, this motion has faces "
                              f"{motion.faces()}. Select one face, or save as {MOTION_EXTENSION}.")


def _to_template(motion: Motion) -> dict:
    n = len(motion)
    a = lambda t, i, shape: np.ascontiguousarray(t[i].numpy().reshape(shape), dtype=np.float32).copy()
    x_s = motion.keypoints() if motion.kp is not None else None
    frames = []
    for i in range(n):
        f = {"scale": a(motion.scale, i, (1, 1)), "R": a(motion.R, i, (1, 3, 3)),
             "exp": a(motion.exp, i, (1, NUM_KP, 3)), "t": a(motion.t, i, (1, 3))}
        if x_s is not None:
            f["kp"] = a(motion.kp, i, (1, NUM_KP, 3))
            f["x_s"] = a(x_s, i, (1, NUM_KP, 3))
        frames.append(f)
    fps = float(motion.fps)
    d: dict = {"n_frames": int(n), "output_fps": int(fps) if fps.is_integer() else fps, "motion": frames}
    if motion.eye_ratio is not None:
        d["c_eyes_lst"] = [a(motion.eye_ratio, i, (1, 2)) for i in range(n)]
    if motion.lip_ratio is not None:
        d["c_lip_lst"] = [a(motion.lip_ratio, i, (1, 1)) for i in range(n)]
    return d


# ------------------------------------------------------------------------------ our format


def _tensors(motion: Motion, prefix: str = "") -> dict:
    out = {}
    for k in _FLOAT_FIELDS + _INT_FIELDS + _EDIT_FIELDS:
        v = getattr(motion, k)
        if v is not None:
            out[prefix + k] = v.detach().cpu().to(torch.int64 if k in _INT_FIELDS else torch.float32).contiguous().clone()
    return out


def _to_safetensors(motion: Motion) -> bytes:
    from safetensors.torch import save

    tensors = _tensors(motion)
    if motion.anchor is not None:
        tensors.update(_tensors(motion.anchor, _ANCHOR))
    edited = motion.anchor is not None or any(getattr(motion, k) is not None for k in _EDIT_FIELDS)
    meta = {"version": 2 if edited else 1, "fps": float(motion.fps), "n_items": len(motion)}
    return save(tensors, metadata={_FORMAT_KEY: json.dumps(meta)})


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    return 2 <= size <= len(data) - 8 and data[8:9] == b"{"


def _from_safetensors(data: bytes, path: str) -> Motion:
    from safetensors.torch import load

    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + size])
        meta = json.loads(header.get("__metadata__", {}).get(_FORMAT_KEY, "null"))
        tensors = load(data)
    except Exception as e:
        raise MotionFileError(f"{path}: damaged motion file ({type(e).__name__}: {e}).") from None
    if not isinstance(meta, dict) or "fps" not in meta:
        raise MotionFileError(f"{path}: a safetensors file, but not a LivePortrait motion "
                              f"(no '{_FORMAT_KEY}' metadata) — maybe a model weights file?")
    if int(meta.get("version", 0)) > _FORMAT_VERSION:
        raise MotionFileError(f"{path}: motion format version {meta['version']} is newer than this "
                              f"version of LivePortrait reads ({_FORMAT_VERSION}); update it.")
    missing = [k for k in ("pitch", "yaw", "roll", "R", "exp", "t", "scale") if k not in tensors]
    if missing:
        raise MotionFileError(f"{path}: motion file lacks {missing}.")
    known = _FLOAT_FIELDS + _INT_FIELDS + _EDIT_FIELDS
    for k, v in tensors.items():
        base = k[len(_ANCHOR):] if k.startswith(_ANCHOR) else k
        want = torch.int64 if base in _INT_FIELDS else torch.float32
        if base not in known or v.dtype != want:
            raise MotionFileError(f"{path}: unexpected entry '{k}' ({v.dtype}) in motion file.")
    anchor = None
    if any(k.startswith(_ANCHOR) for k in tensors):
        anchor = Motion(**{k: tensors.get(_ANCHOR + k) for k in known}, fps=float(meta["fps"]))
    m = Motion(**{k: tensors.get(k) for k in known}, fps=float(meta["fps"]), anchor=anchor)
    try:
        m.validate(path)
    except LivePortraitError as e:
        raise MotionFileError(str(e)) from None
    return m


# ------------------------------------------------------------------------------ public API


def load_motion(path: str) -> Motion:
    """Read a motion file: a reference `.pkl` template (safely) or our `.lpmotion.safetensors`.

    The kind is recognised from the content. Templates carry no canonical keypoints unless
    the writer stored them (`kp`); their degrees are derived from R; missing ratio lists give
    `eye_ratio` / `lip_ratio` None. Any unreadable, truncated, unsafe or foreign file raises
    MotionFileError; nothing inside a file is ever executed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MotionFileError(f"motion file not found: {path}")
    size = os.path.getsize(path)
    if size > _MAX_BYTES:  # a 1-hour 60 fps template is ~100 MB; larger is not a motion file
        raise MotionFileError(f"{path}: {size / 2**20:.0f} MB is too large for a motion file.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MotionFileError(f"cannot read motion file {path}: {e.strerror or e}.") from None
    if not data:
        raise MotionFileError(f"{path}: the motion file is empty.")
    if _is_safetensors(data):  # unambiguous: a pickle never starts with a small u64 + '{'
        return _from_safetensors(data, path)
    try:
        return _from_template(_unpickle(data, path), path)
    except MotionFileError:
        raise
    except LivePortraitError as e:  # e.g. inconsistent shapes caught by Motion.validate
        raise MotionFileError(f"{path}: {e}") from None


def save_motion(motion: Motion, path: str) -> str:
    """Write `motion` to `path`: `.pkl` → reference template (protocol 4, current key names,
    `kp`/`x_s` when known, ratio lists when known, single face); `.safetensors` (use
    `.lpmotion.safetensors`) → our exact format. Written to a temporary file and renamed, so an
    existing file is only replaced by a complete one. Returns `path`."""
    path = os.fspath(path)
    low = path.lower()
    try:
        motion.validate("motion to save")
    except LivePortraitError as e:
        raise MotionFileError(str(e)) from None
    if low.endswith((".pkl", ".pickle")):
        _single_face(motion, path)
        dropped = [k for k in ("anchor",) + _EDIT_FIELDS if getattr(motion, k) is not None]
        if dropped:
            warnings.warn(f"{path}: a .pkl template cannot hold {', '.join(dropped)} (editing data); they are "
                          f"not saved — use {MOTION_EXTENSION} to keep them.", stacklevel=2)
        buf = io.BytesIO()
        _TemplatePickler(buf, protocol=4).dump(_to_template(motion))
        data = buf.getvalue()
    elif low.endswith(".safetensors"):
        data = _to_safetensors(motion)
    else:
        raise MotionFileError(f"{path}: unknown motion file type; use {PICKLE_EXTENSION} (reference "
                              f"template) or {MOTION_EXTENSION}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MotionFileError(f"cannot save motion: folder {folder} does not exist.")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:  # 0o666 & umask like any new file (mkstemp would make it private)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
