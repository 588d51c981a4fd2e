"""Shared fixtures and helpers of the node tests: the pack loaded through the ComfyUI stand-in."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_DIR
from face_standins import astronaut_landmark_standin as landmark_standin  # noqa: F401  (shared)
from comfy_stub import harness

harness.install()
import comfy.model_management as mm  # noqa: E402  (the stand-in)
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

EXAMPLES = os.path.join(REPO_DIR, "example_workflows")
NODE_IDS = ["LoadLivePortraitModels", "LivePortraitLoadFaceDetector", "LivePortraitCropFace",
            "LivePortraitExtractMotion", "LivePortraitRetarget", "LivePortraitAnimate", "LivePortraitPasteBack",
            "LivePortraitLoadMotion", "LivePortraitSaveMotion",
            "LivePortraitExpressionEditor", "LivePortraitKeyframes", "LivePortraitApplyExpression"]


@pytest.fixture(scope="module")
def pack():
    module, registry = harness.load_pack(REPO_DIR)
    return module, registry


def sub(module, name):
    return sys.modules[f"{module.__name__}.{name}"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, pack, weights_st):
    """A ComfyUI tree: weights (flat safetensors + stand-in landmark.onnx) in models/liveportrait."""
    base = str(tmp_path_factory.mktemp("comfy"))
    folder_paths.reset(base)
    lp = os.path.join(folder_paths.models_dir, "liveportrait")
    os.makedirs(lp)
    for f in os.listdir(weights_st):
        os.symlink(os.path.join(weights_st, f), os.path.join(lp, f))
    landmark_standin(os.path.join(lp, "landmark.onnx"))
    return base


def activate(tree, pack) -> dict:
    """Point the stand-in ComfyUI at `tree` (fresh folder registry), as at start-up."""
    folder_paths.reset(tree)
    sub(pack[0], "nodes.comfy").register_model_folders()
    mm.interrupt_current_processing(False)
    comfy.utils.PROGRESS_EVENTS.clear()
    return pack[1]


@pytest.fixture
def env(tree, pack):
    return activate(tree, pack)


def read_image(name: str) -> torch.Tensor:
    import cv2

    img = cv2.imread(os.path.join(EXAMPLES, name))[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(img)).float()[None] / 255.0


def read_video(name: str, n: int) -> torch.Tensor:
    import imageio.v2 as iio

    frames = [np.asarray(f)[..., :3] for _, f in zip(range(n), iio.get_reader(os.path.join(EXAMPLES, name), "ffmpeg"))]
    return torch.from_numpy(np.stack(frames)).float() / 255.0


def run(reg, node_id, **inputs):
    linked = tuple(k for k, v in inputs.items() if not isinstance(v, (int, float, str, bool)))
    return harness.run_node(reg[node_id], inputs, linked=linked).args

