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
    assert "non-commercial" in info["LivePortraitLoadFaceDetector"]["input"]["required"]["backend"][1]["tooltip"].lower()


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
    assert info["input"]["required"]["weights"][1]["options"] == ["auto", ".", "liveportrait/base_models"]

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


def test_networks_are_model_patchers_loaded_with_the_batch_memory(env, weights_st, pack):
    """One ComfyUI ModelPatcher per network, made once and kept on the loaded models; the node asks
    load_models_gpu for the networks it runs plus the activations of its batch."""
    memory = sub(pack[0], "nodes.memory")
    harness.apply_extra_model_paths({"x": {"liveportrait": weights_st}})
    (models,) = run(env, "LoadLivePortraitModels", weights="auto", precision="fp32", download_from_hub="never")
    mm.calls.clear()
    device = memory.load_for_rendering(models, None, 3, torch.float32)
    first = memory.patchers(models, memory.RENDER_NETWORKS)
    assert device.type == "cpu" and [p.model for p in first] == [
        models.appearance_feature_extractor, models.warping_module, models.spade_generator]
    assert mm.calls == [("load_models_gpu", 3, 3 * memory.BYTES_PER_FRAME_FP32)]
    assert memory.patchers(models, memory.RENDER_NETWORKS) == first  # the same objects, not rebuilt
    assert memory.frame_bytes(torch.float16) == memory.BYTES_PER_FRAME_FP32 // 2
    memory.load_for_extraction(models, 8)
    assert mm.calls[-1] == ("load_models_gpu", 1, 8 * 64 * 1024 ** 2)


def test_out_of_memory_halves_the_batch_down_to_one_then_says_what_to_do(pack):
    memory = sub(pack[0], "nodes.memory")
    import importlib

    LivePortraitError = importlib.import_module(f"{pack[0].__name__}.liveportrait_core.errors").LivePortraitError
    tried = []

    def attempt(batch):
        tried.append(batch)
        if batch > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return batch

    assert memory.with_batch_fallback(12, attempt, "LivePortraitAnimate") == 3 and tried == [12, 6, 3]

    def always(batch):
        tried.append(batch)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    tried.clear()
    with pytest.raises(LivePortraitError, match="LivePortraitAnimate: out of memory .* batch_size 1"):
        memory.with_batch_fallback(4, always, "LivePortraitAnimate")
    assert tried == [4, 2, 1]
    with pytest.raises(KeyError):  # other errors pass through untouched, no retry
        memory.with_batch_fallback(4, lambda b: {}["x"], "LivePortraitAnimate")


def test_animate_resumes_after_out_of_memory_with_the_same_frames(env, weights_st, pack, monkeypatch):
    """An out-of-memory error in the middle of a render restarts at the first missing frame with half
    the batch; the result equals an uninterrupted render."""
    import importlib

    render = importlib.import_module(f"{pack[0].__name__}.liveportrait_core.render")  # the pack's own copy
    KeypointPlan = importlib.import_module(f"{pack[0].__name__}.liveportrait_core.compose").KeypointPlan

    harness.apply_extra_model_paths({"x": {"liveportrait": weights_st}})
    (models,) = run(env, "LoadLivePortraitModels", weights="auto", precision="fp32", download_from_hub="never")
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 255, (1, 256, 256, 3), generator=g, dtype=torch.uint8)
    x_s = torch.randn(1, 21, 3, generator=g) * 0.2
    plan = KeypointPlan(x_s=x_s.expand(3, -1, -1).clone(), x_d=x_s + 0.01 * torch.randn(3, 21, 3, generator=g),
                        source_index=torch.zeros(3, dtype=torch.int64))
    real = render.Animator.warp_decode
    calls = []

    def flaky(self, f_s, xs, xd, cancel=None):
        calls.append((self.batch_size, xs.shape[0]))
        if self.batch_size == 2 and len(calls) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(self, f_s, xs, xd, cancel)

    monkeypatch.setattr(render.Animator, "warp_decode", flaky)
    (crops_out,) = run(env, "LivePortraitAnimate", models=models, source_faces=crops, keypoints=plan,
                       batch_size=2, precision="exact")
    # frames 0-1 (exact on CPU: the batch, then frame by frame), OOM on frame 2, which is retried alone
    assert calls == [(2, 2), (2, 1), (2, 1), (2, 1), (1, 1)], calls
    monkeypatch.setattr(render.Animator, "warp_decode", real)
    (ref,) = run(env, "LivePortraitAnimate", models=models, source_faces=crops, keypoints=plan,
                 batch_size=1, precision="exact")
    assert crops_out.shape == (3, 512, 512, 3) and torch.equal(crops_out, ref)


def test_loaded_models_are_freed_when_comfyui_drops_them(env, weights_st):
    """The loader's cache is weak: once ComfyUI's output cache lets go, the weights are freed."""
    import gc
    import weakref

    harness.apply_extra_model_paths({"x": {"liveportrait": weights_st}})
    (models,) = run(env, "LoadLivePortraitModels", weights="auto", precision="fp32", download_from_hub="never")
    (again,) = run(env, "LoadLivePortraitModels", weights="auto", precision="fp32", download_from_hub="never")
    assert again is models  # shared while alive
    sub_mem = sys.modules[env["LivePortraitAnimate"].__module__.rsplit(".", 1)[0] + ".memory"]
    sub_mem.patchers(models, sub_mem.RENDER_NETWORKS)
    ref = weakref.ref(models)
    del models, again
    gc.collect()
    assert ref() is None


def test_widgets_are_required_with_one_default(pack):
    """A widget always has a value: it is a required input whose default is declared once, in the
    schema (execute has no default of its own to drift from it). Optional sockets default to None."""
    import inspect

    for nid, cls in pack[1].items():
        schema = cls.GET_SCHEMA()
        params = inspect.signature(cls.execute).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for i in schema.inputs:
            if hasattr(i, "default"):
                assert not i.optional, (nid, i.id)
                assert i.id in params or takes_all, (nid, i.id)
                # never a second default that could drift from the schema's
                assert i.id not in params or params[i.id].default in (inspect.Parameter.empty, i.default), (nid, i.id)
            elif i.optional:
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
