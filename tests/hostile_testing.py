"""Helpers of the hostile-input tests: snapshot a folder (hash of every file) and compare."""
from __future__ import annotations

import hashlib
import os
from typing import Dict

import numpy as np

TEMP_MARKS = (".part", ".tmp")


def snapshot(folder) -> Dict[str, str]:
    """relative path → sha256 (or 'link→target' for symlinks) of everything under `folder`."""
    out: Dict[str, str] = {}
    folder = os.fspath(folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = "link→" + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def temp_files(folder) -> list:
    return [rel for rel in snapshot(folder) if any(m in os.path.basename(rel) for m in TEMP_MARKS)]


def assert_untouched(before: Dict[str, str], folder, allowed=()) -> None:
    """Nothing under `folder` changed, except the relative paths in `allowed`; no temp file."""
    after = snapshot(folder)
    allowed = set(allowed)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)} - allowed
    assert not changed, f"files changed: {sorted(changed)}"
    assert not temp_files(folder), f"temporary files left: {temp_files(folder)}"


def face_photo() -> np.ndarray:
    """The fixture portrait (545x640 RGB uint8)."""
    from conftest import REPO_DIR
    from liveportrait_core import video as vio

    return vio.read_image(os.path.join(REPO_DIR, "tests", "fixtures", "photos", "s0.jpg"))
