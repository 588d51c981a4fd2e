"""ComfyUI-Manager install hook: pip-install the requirements ComfyUI does not already satisfy.

Safe to run any number of times: a requirement that is already installed in a satisfying version
is left alone (so torch, numpy, … that ComfyUI ships are never reinstalled or changed), and torch /
torchvision / torchaudio are never installed from here. Manual installs do not need this file:
`python -m pip install -r requirements.txt` does the same.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
NEVER = {"torch", "torchvision", "torchaudio", "torchsde"}
# Another distribution may already provide the module (a compiled dlib, the non-headless OpenCV):
# installing the second one on top can break the first, so the import name decides.
PROVIDES = {"dlib-bin": "dlib", "opencv-python-headless": "cv2"}


def _version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])


def _satisfied(req: str) -> bool:
    try:  # pip's own copy of packaging understands every specifier
        from pip._vendor.packaging.requirements import Requirement

        r = Requirement(req)
        return r.specifier.contains(metadata.version(r.name), prereleases=True)
    except metadata.PackageNotFoundError:
        return False
    except Exception:  # fallback: "name>=x.y" only
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(>=\s*([\w.]+))?", req)
        if not m:
            return False
        try:
            have = metadata.version(m.group(1))
        except metadata.PackageNotFoundError:
            return False
        return m.group(3) is None or _version_tuple(have) >= _version_tuple(m.group(3))


def missing_requirements(path: str = os.path.join(HERE, "requirements.txt")) -> list[str]:
    out = []
    with open(path) as f:
        for line in f:
            req = line.split("#", 1)[0].strip()
            if not req or req.startswith("-"):
                continue
            name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
            if name in NEVER or _satisfied(req):
                continue
            if name in PROVIDES and importlib.util.find_spec(PROVIDES[name]) is not None:
                continue
            out.append(req)
    return out


def main() -> int:
    todo = missing_requirements()
    if not todo:
        print("[LivePortrait] all requirements already installed")
        return 0
    print("[LivePortrait] installing: " + ", ".join(todo))
    return subprocess.call([sys.executable, "-m", "pip", "install", *todo])


if __name__ == "__main__":
    sys.exit(main())
