"""Shared test fixtures: repository paths, fixture lookup, synthetic weight folders."""
from __future__ import annotations

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)
FIXTURES_DIR = os.path.join(TESTS_DIR, "fixtures")
# Full reference data lives beside the clone when available (developers' machines and CI);
# the compact copies in tests/fixtures keep the suite meaningful without it.
SHARED_DIR = os.environ.get("LP_SHARED_DIR", os.path.join(os.path.dirname(REPO_DIR), "shared"))
PARITY_DIR = os.path.join(SHARED_DIR, "fixtures", "parity")
DATA_DIR = os.path.join(SHARED_DIR, "data")

for p in (REPO_DIR, TESTS_DIR):
    if p not in sys.path:
        sys.path.insert(0, p)


def parity_file(name: str) -> str | None:
    """Full upstream fixture `name` from shared/ if present, else None."""
    path = os.path.join(PARITY_DIR, name)
    return path if os.path.exists(path) else None


def compact_file(name: str) -> str:
    return os.path.join(FIXTURES_DIR, name)


@pytest.fixture(scope="session")
def weights_pth(tmp_path_factory) -> str:
    """A synthetic SEED=0 weight folder in the upstream .pth layout (the `pretrained_weights` root)."""
    import synth_weights

    return synth_weights.write_folder(str(tmp_path_factory.mktemp("w_pth")), 0, "upstream-pth")


@pytest.fixture(scope="session")
def weights_st(tmp_path_factory) -> str:
    """A synthetic SEED=0 weight folder of flat float32 .safetensors files."""
    import synth_weights

    return synth_weights.write_folder(str(tmp_path_factory.mktemp("w_st")), 0, "safetensors-flat")
