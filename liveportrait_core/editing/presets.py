"""Expression presets: control values as a small versioned JSON file (never a pickle).

    {"format": "liveportrait-expression", "version": 1,
     "name": "optional text", "controls": {"smile": 0.6, "head_yaw": -10.0}}

Controls left out are neutral. Reading checks everything and names the file and the key of
the first problem (unknown key or control, a value that is not a finite number in range, bad
JSON, another format or a newer version). Writing is atomic (temporary file + rename): an
existing preset is only ever replaced by a complete one, and nothing is written on an error.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ..errors import InputError
from .controls import CONTROLS, validate_controls
from ..paths import write_bytes_atomic

FORMAT = "liveportrait-expression"
VERSION = 1
PRESET_EXTENSION = ".json"
MAX_BYTES = 1 << 20  # a preset is a few hundred bytes; anything this large is not one
_TOP_KEYS = {"format", "version", "name", "controls"}


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def preset_from_json(text: str, where: str = "preset") -> dict[str, float]:
    """Parse preset JSON text → control name → value (only the controls it lists)."""
    try:
        d = json.loads(text, object_pairs_hook=_no_duplicates)  # NaN / Infinity: rejected per control below
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    except ValueError as e:
        raise InputError(f"{where}: not a valid preset ({e}).") from None
    if not isinstance(d, dict):
        raise InputError(f"{where}: a preset is a JSON object with \"format\": \"{FORMAT}\", got {type(d).__name__}.")
    if d.get("format") != FORMAT:
        raise InputError(f"{where}: key 'format' must be \"{FORMAT}\", got {d.get('format')!r} "
                         "(not an expression preset).")
    v = d.get("version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{where}: key 'version' must be a whole number, got {v!r}.")
    if v > VERSION or v < 1:
        raise InputError(f"{where}: preset version {v} is not one this version of LivePortrait reads "
                         f"(1..{VERSION}); update it.")
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; a preset has {sorted(_TOP_KEYS)}.")
    if "name" in d and not isinstance(d["name"], str):
        raise InputError(f"{where}: key 'name' must be text, got {type(d['name']).__name__}.")
    controls = d.get("controls")
    if not isinstance(controls, dict):
        raise InputError(f"{where}: key 'controls' must be an object of control name → number.")
    for k, val in controls.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise InputError(f"{where}: control {k!r} must be a number, got {json.dumps(val)}.")
    return {k: float(x) for k, x in validate_controls(controls, where).items()}


def preset_to_json(values: Mapping[str, Any], name: str = "") -> str:
    """Control values (numbers) → preset JSON text, controls in the table's order."""
    vals = validate_controls(values, "preset")
    for k, v in vals.items():
        if not isinstance(v, float):
            if v.numel() != 1:
                raise InputError(f"preset: control '{k}' has {v.numel()} values; a preset holds one number "
                                 "per control.")
            vals[k] = float(v.reshape(-1)[0])
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if name:
        doc["name"] = str(name)
    doc["controls"] = {k: vals[k] for k in CONTROLS if k in vals}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def load_preset(path: str) -> dict[str, float]:
    """Read a preset file → control name → value (InputError naming the file and key)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"expression preset not found: {path}")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise InputError(f"{path}: {size} bytes is too large for an expression preset.")
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except OSError as e:
        raise InputError(f"cannot read expression preset {path}: {e.strerror or e}.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text (UTF-8 JSON) file.") from None
    return preset_from_json(text, path)


def save_preset(values: Mapping[str, Any], path: str, name: str = "") -> str:
    """Write control values as a preset at `path` (atomically); returns `path`."""
    path = os.fspath(path)
    text = preset_to_json(values, name)  # validates before anything touches the disk
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"cannot save preset: folder {folder} does not exist.")
    return write_bytes_atomic(path, text.encode("utf-8"))


__all__ = ["FORMAT", "VERSION", "load_preset", "preset_from_json", "preset_to_json", "save_preset"]
