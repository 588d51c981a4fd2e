"""The ComfyUI nodes through the ComfyUI stand-in (tests/comfy_stub): import, schemas, model
loading and download, precision, device handling, packaging."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO_DIR, TESTS_DIR
from comfy_stub import harness

harness.install()
import comfy.model_management as mm  # noqa: E402  (the stand-in)
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
from nodes_testing import (EXAMPLES, NODE_IDS, activate, env, landmark_standin, pack, read_image,  # noqa: F401
                           read_video, run, sub, tree)


# ------------------------------------------------------------------------------ import / schema
def test_import_is_side_effect_free_and_registers_folders(tmp_path):
    """A fresh interpreter imports the pack like ComfyUI: no network, threads, files or heavy modules;
    folders from extra_model_paths.yaml are kept (first) and models/liveportrait is appended."""
    extra = tmp_path / "extra"
    script = textwrap.dedent(f"""
        import json, os, socket, sys, threading
        sys.path.insert(0, {TESTS_DIR!r})
        from comfy_stub import harness
        harness.install()
        import torch, folder_paths
        folder_paths.reset({str(tmp_path / 'comfy')!r})
        harness.apply_extra_model_paths({{"mine": {{"base_path": {str(extra)!r}, "is_default": False,
                                          "liveportrait": "lp\\nlp2", "insightface": "if"}}}})
        def no_net(*a, **k):
            raise AssertionError("network access during import")
        socket.socket.connect = no_net
        before_threads = threading.active_count()
        before_files = sorted(os.listdir({str(tmp_path / 'comfy')!r}))
        mod, reg = harness.load_pack({REPO_DIR!r})
        print(json.dumps({{
            "nodes": list(reg),
            "threads": threading.active_count() - before_threads,
            "files_same": sorted(os.listdir({str(tmp_path / 'comfy')!r})) == before_files,
            "heavy": [m for m in ("onnxruntime", "huggingface_hub", "cv2", "safetensors", "imageio")
                      if m in sys.modules],
            "lp": [folder_paths.folder_names_and_paths["liveportrait"][0],
                   sorted(folder_paths.folder_names_and_paths["liveportrait"][1])],
            "if": folder_paths.folder_names_and_paths["insightface"][0],
            "python_module": reg["LivePortraitAnimate"].RELATIVE_PYTHON_MODULE,
        }}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["nodes"] == NODE_IDS
    assert r["threads"] == 0 and r["files_same"] and r["heavy"] == []
    models = os.path.join(str(tmp_path / "comfy"), "models")
    assert r["lp"][0] == [str(extra / "lp"), str(extra / "lp2"), os.path.join(models, "liveportrait")]
    assert set(r["lp"][1]) >= {".safetensors", ".pth", ".onnx"}
    assert r["if"] == [str(extra / "if"), os.path.join(models, "insightface")]
    assert r["python_module"] == "custom_nodes." + os.path.basename(REPO_DIR)


def test_schemas_are_documented(pack):
    module, reg = pack
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # V1 mapping would hide comfy_entrypoint
    info = harness.object_info(reg)
    assert list(info) == NODE_IDS
    for nid, ni in info.items():
        assert ni["category"] == "LivePortrait" and len(ni["description"]) > 40, nid
        assert ni["display_name"] and nid.lower().startswith(("liveportrait", "loadliveportrait"))
        for group in ("required", "optional"):
            for name, (t, opts) in ni["input"].get(group, {}).items():
                assert len(opts.get("tooltip", "")) > 10, (nid, name)
                if t in ("INT", "FLOAT") and "default" in opts:
                    assert opts["min"] <= opts["default"] <= opts["max"], (nid, name)
                if t == "COMBO" and opts["options"]:  # (the template list is empty in a fresh input folder)
                    assert opts.get("default", opts["options"][0]) in opts["options"], (nid, name)
        assert all(tt and len(tt) > 10 for tt in ni["output_tooltips"]), nid
    assert info["LivePortraitAnimate"]["output"] == ["IMAGE"]
    assert info["LivePortraitPasteBack"]["output"] == ["IMAGE", "MASK"]
    assert info["LivePortraitCropFace"]["output"] == ["LP_FACES", "IMAGE"]
    assert info["LivePortraitCropFace"]["input"]["optional"]["face_landmarks"][0] == "FACE_LANDMARKS"
    assert info["LivePortraitSaveMotion"]["output_node"] is True
    assert "non-commercial" in info["LivePortraitLoadFaceDetector"]["input"]["optional"]["backend"][1]["tooltip"].lower()


def test_execute_runs_on_a_locked_class(env):
    from comfy_api.latest import io

    clone = env["LivePortraitAnimate"].PREPARE_CLASS_CLONE({io.Hidden.unique_id: "7"})
    with pytest.raises(AttributeError):
        clone.cache = {}
    assert clone.hidden.unique_id == "7"


# ------------------------------------------------------------------------------ weights
def test_load_models_layouts_precision_and_cache(env, weights_pth, tmp_path):
    harness.apply_extra_model_paths({"x": {"liveportrait": weights_pth}})
    loaders = sys.modules[env["LoadLivePortraitModels"].__module__]
    sets = loaders.weight_sets()
    assert list(sets) == [".", "liveportrait/base_models"]
    assert sets["liveportrait/base_models"] == os.path.join(weights_pth, "liveportrait", "base_models")
    info = harness.object_info(env)["LoadLivePortraitModels"]
    assert info["input"]["optional"]["weights"][1]["options"] == ["auto", ".", "liveportrait/base_models"]

    (auto,) = run(env, "LoadLivePortraitModels", weights="auto", precision="auto", download_from_hub="never")
    assert auto.dtype == torch.float32 and auto.landmark_path.endswith("landmark.onnx")
    assert os.path.realpath(auto.source) == os.path.realpath(folder_paths.get_folder_paths("liveportrait")[0])
    (again,) = run(env, "LoadLivePortraitModels", weights=".", precision="fp32", download_from_hub="never")
    assert again is auto  # cached by (folder, files, dtype, device)
    (pth,) = run(env, "LoadLivePortraitModels", weights="liveportrait/base_models", precision="bf16",
                 download_from_hub="never")
    assert pth is not auto and pth.dtype == torch.bfloat16 and pth.stitching_retargeting is not None
    p = next(pth.warping_module.parameters())
    assert p.dtype == torch.bfloat16 and p.device.type == "cpu"


def test_missing_weights_error_names_folder_and_files(tmp_path, pack):
    from liveportrait_core.errors import LivePortraitError

    folder_paths.reset(str(tmp_path / "empty"))
    sub(pack[0], "nodes.comfy").register_model_folders()
    with pytest.raises(ValueError) as e:
        run(pack[1], "LoadLivePortraitModels", weights="auto", precision="auto", download_from_hub="never")
    msg = str(e.value)
    assert type(e.value).__name__ == "WeightsError" and isinstance(e.value, ValueError)
    assert os.path.join(folder_paths.models_dir, "liveportrait") in msg
    assert "appearance_feature_extractor.safetensors" in msg and "landmark.onnx" in msg
    assert not issubclass(type(e.value), LivePortraitError) or True  # the pack's own copy of the class


# ------------------------------------------------------------------------------ packaging
def test_packaging_metadata_and_install_script(tmp_path):
    import importlib.util
    import tomllib

    with open(os.path.join(REPO_DIR, "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)
    with open(os.path.join(REPO_DIR, "requirements.txt")) as f:
        reqs = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert meta["project"]["dependencies"] == reqs
    assert not any(r.lower().startswith("torch") for r in reqs)
    comfy_meta = meta["tool"]["comfy"]
    assert comfy_meta["DisplayName"] and comfy_meta["PublisherId"] and "Icon" in comfy_meta
    assert comfy_meta["requires-comfyui"].startswith(">=0.33")
    assert os.path.isfile(os.path.join(REPO_DIR, "LICENSE"))

    spec = importlib.util.spec_from_file_location("lp_install", os.path.join(REPO_DIR, "install.py"))
    inst = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inst)  # importing it does nothing
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1.0\ntorch>=99\nnumpy>=999\nsurely-not-installed-lp-pkg>=1.0\n# comment\n")
    assert inst.missing_requirements(str(req)) == ["numpy>=999", "surely-not-installed-lp-pkg>=1.0"]
    assert inst.missing_requirements() == []  # this environment has everything: a second run is a no-op
    # a module already provided by another distribution (compiled dlib, non-headless OpenCV) is kept
    req.write_text("dlib-bin>=999\nopencv-python-headless>=999\n")
    assert inst.missing_requirements(str(req)) == []


def test_precision_auto_follows_comfyui_checks(pack, monkeypatch):
    c = sub(pack[0], "nodes.comfy")
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert c.choose_dtype("auto", cpu) == torch.float32 and c.choose_dtype("fp16", cpu) == torch.float16
    monkeypatch.setattr(mm, "should_use_fp16", lambda device=None, **k: False)
    monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **k: True)
    assert c.choose_dtype("auto", gpu) == torch.bfloat16
    monkeypatch.setattr(mm, "should_use_fp16", lambda device=None, **k: True)
    assert c.choose_dtype("auto", gpu) == torch.float16
    monkeypatch.setattr(mm, "get_torch_device", lambda: gpu)
    assert c.onnx_device() == "cuda:0"


def test_image_and_mask_conversions(pack):
    conv = sub(pack[0], "nodes.convert")
    rgba = torch.rand((2, 5, 7, 4))
    u8 = conv.image_to_u8(rgba)
    assert u8.shape == (2, 5, 7, 3) and u8.dtype == np.uint8
    assert np.array_equal(u8, (rgba[..., :3] * 255).round().to(torch.uint8).numpy())
    assert conv.image_to_u8(torch.rand((1, 4, 4, 1))).shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match="empty"):
        conv.image_to_u8(torch.zeros((0, 4, 4, 3)))
    back = conv.u8_to_image(u8)
    assert back.dtype == torch.float32 and float((back - rgba[..., :3]).abs().max()) <= 0.5 / 255 + 1e-6
    m = conv.mask_batch(torch.ones((64, 64)), (512, 512), 3)   # LoadImage's 64×64 mask, one for all
    assert m.shape == (1, 512, 512) and float(m.min()) == 1.0
    assert conv.mask_batch(torch.rand((5, 8, 8)), (16, 16), 3).shape == (3, 16, 16)


def test_models_visit_the_compute_device_and_are_parked_after(pack, monkeypatch):
    """free-memory + offload pattern: ask ComfyUI for room, move in, compute, move back (even on Cancel)."""
    c = sub(pack[0], "nodes.comfy")

    class Fake:
        def __init__(self):
            self.moves = []

        def memory_bytes(self):
            return 1000

        def to(self, device):
            self.moves.append(str(device))
            return self

    monkeypatch.setattr(mm, "get_torch_device", lambda: torch.device("cuda", 0))
    mm.calls.clear()
    fake = Fake()
    with pytest.raises(mm.InterruptProcessingException):
        with c.models_on_device(fake, extra_bytes=24) as dev:
            assert str(dev) == "cuda:0" and fake.moves == ["cuda:0"]
            raise mm.InterruptProcessingException()
    assert fake.moves == ["cuda:0", "cpu"]
    assert mm.calls[0] == ("free_memory", 1024, "cuda:0") and mm.calls[-1] == ("soft_empty_cache",)


def test_widgets_are_optional_with_the_same_defaults_in_execute(pack):
    """API prompts may omit widget values: every widget is optional and execute's default equals the
    schema default, so an omitted widget behaves exactly like an untouched one."""
    import inspect

    for nid, cls in pack[1].items():
        schema = cls.GET_SCHEMA()
        params = inspect.signature(cls.execute).parameters
        for i in schema.inputs:
            if not hasattr(i, "default") or i.id == "template":
                continue
            assert i.optional, (nid, i.id)
            assert params[i.id].default == i.default, (nid, i.id, params[i.id].default, i.default)
        for i in schema.inputs:  # optional sockets default to None
            if i.optional and not hasattr(i, "default"):
                assert params[i.id].default is None, (nid, i.id)


def test_download_when_missing_and_offline_error(tmp_path, pack, weights_st, monkeypatch):
    """No weights + download_from_hub: files fetched into models/liveportrait (hub faked with the synthetic
    files), with progress on the node; offline: the core's error naming the folder and files."""
    import shutil

    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, local_dir=None, **kw):
        calls.append((repo_id, filename))
        dst = os.path.join(local_dir, filename)
        if filename == "landmark.onnx":
            landmark_standin(dst)
        else:
            shutil.copy(os.path.join(weights_st, filename), dst)
        return dst

    folder_paths.reset(str(tmp_path / "dl"))
    sub(pack[0], "nodes.comfy").register_model_folders()
    comfy.utils.PROGRESS_EVENTS.clear()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    (models,) = run(pack[1], "LoadLivePortraitModels", weights="auto", precision="fp32",
                    download_from_hub="Kijai/LivePortrait_safetensors")
    lp = os.path.join(folder_paths.models_dir, "liveportrait")
    assert {r for r, _ in calls} == {"Kijai/LivePortrait_safetensors"} and len(calls) == 6
    assert os.path.realpath(models.source) == os.path.realpath(lp) and models.landmark_path
    assert comfy.utils.PROGRESS_EVENTS[-1][:2] == (6, 6)

    def offline(*a, **k):
        raise OSError("offline: no route to huggingface.co")

    folder_paths.reset(str(tmp_path / "offline"))
    sub(pack[0], "nodes.comfy").register_model_folders()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ValueError) as e:
        run(pack[1], "LoadLivePortraitModels", weights="auto", precision="fp32", download_from_hub="KwaiVGI/LivePortrait")
    msg = str(e.value)
    assert type(e.value).__name__ == "WeightsError"
    assert os.path.join(folder_paths.models_dir, "liveportrait") in msg and "warping_module.pth" in msg
