"""Facts about the pack read from its source without importing it (it needs a ComfyUI to import)."""
from __future__ import annotations

import ast
import glob
import os

from comfy_server import EXAMPLES_DIR, REPO_DIR

SAVED_WORKFLOWS_DIR = os.path.join(REPO_DIR, "tests", "fixtures", "saved_workflows")


def node_ids() -> list[str]:
    """node_id of every class listed in nodes/__init__.py NODES, in that order."""
    with open(os.path.join(REPO_DIR, "nodes", "__init__.py")) as f:
        tree = ast.parse(f.read())
    names = []
    for st in tree.body:
        if isinstance(st, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in st.targets):
            names = [e.id for e in st.value.elts]
    ids = {}
    for path in glob.glob(os.path.join(REPO_DIR, "nodes", "*.py")):
        with open(path) as f:
            mod = ast.parse(f.read())
        for cls in (n for n in ast.walk(mod) if isinstance(n, ast.ClassDef)):
            for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
                for kw in call.keywords:
                    if kw.arg == "node_id" and isinstance(kw.value, ast.Constant):
                        ids.setdefault(cls.name, kw.value.value)
    missing = [n for n in names if n not in ids]
    assert names and not missing, f"cannot find node_id of {missing} in nodes/*.py"
    return [ids[n] for n in names]


def example_workflows() -> list[str]:
    return sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.json")))


def saved_workflows() -> list[str]:
    """Verbatim copies of the example workflows of earlier versions (tests/fixtures/saved_workflows/v*/)."""
    return sorted(glob.glob(os.path.join(SAVED_WORKFLOWS_DIR, "v*", "*.json")))
