"""The ComfyUI nodes, end to end through the ComfyUI stand-in (tests/comfy_stub).

Synthetic weights (conftest `weights_st` / `weights_pth`), a stand-in landmark.onnx
(tests/face_standins.py) and the offline OpenCV detector; the photo and driving clip are the
example inputs shipped in example_workflows/. Images stay small (2 animated frames).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REPO_DIR, TESTS_DIR, compact_file, parity_file
from comfy_stub import harness

harness.install()
import comfy.model_management as mm  # noqa: E402  (the stand-in)
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

EXAMPLES = os.path.join(REPO_DIR, "example_workflows")
NODE_IDS = ["LoadLivePortraitModels", "LivePortraitLoadFaceDetector", "LivePortraitCropFace",
            "LivePortraitExtractMotion", "LivePortraitRetarget", "LivePortraitAnimate", "LivePortraitPasteBack",
            "LivePortraitLoadMotion", "LivePortraitSaveMotion"]


@pytest.fixture(scope="module")
def pack():
    module, registry = harness.load_pack(REPO_DIR)
    return module, registry


def sub(module, name):
    return sys.modules[f"{module.__name__}.{name}"]


def landmark_standin(path: str) -> str:
    """landmark.onnx stand-in answering the astronaut's 203 points, in the runner's crop units."""
    from face_standins import landmark203_standin

    src = parity_file("e2e_image_to_video.npz") or compact_file("face_e2e.npz")
    lmk = np.load(src)["source_lmk203"].astype(np.float32)
    center = (lmk.min(0) + lmk.max(0)) / 2
    side = 1.5 * float(np.ptp(lmk, axis=0).max())
    raw = (lmk - center) / side + np.array([0.5, 0.5 - 0.1], np.float32)
    return landmark203_standin(path, raw.reshape(-1), probe=False)


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


# ------------------------------------------------------------------------------ the graph
@pytest.fixture(scope="module")
def graph(tree, pack):
    """Source photo + 2 driving frames through detector, crop, motion and retarget (built once)."""
    env = activate(tree, pack)
    (models,) = run(env, "LoadLivePortraitModels", weights="auto", precision="auto", download_from_hub="never")
    (det,) = run(env, "LivePortraitLoadFaceDetector", backend="offline", threshold=-1.0, max_side=640)
    photo = read_image("liveportrait_source.jpg")
    driving = read_video("liveportrait_driving.mp4", 2)
    crop = dict(scale=2.3, vx_ratio=0.0, vy_ratio=-0.125, face_index=0, face_order="large-small", rotate=True,
                smoothing=0.0)
    src_faces, src_crops = run(env, "LivePortraitCropFace", image=photo, models=models, detector=det,
                               purpose="source", **crop)
    drv_faces, drv_crops = run(env, "LivePortraitCropFace", image=driving, models=models, detector=det,
                               purpose="driving", **crop)
    (src_motion,) = run(env, "LivePortraitExtractMotion", models=models, faces=src_faces, fps=25.0, batch_size=8)
    (drv_motion,) = run(env, "LivePortraitExtractMotion", models=models, faces=drv_faces, fps=12.0, batch_size=1)
    retarget = dict(relative_motion=True, driving_option="expression-friendly", driving_multiplier=1.0,
                    animation_region="all", stitching=True, eye_retargeting=False, lip_retargeting=False,
                    normalize_lip=False, source_video_eye_retargeting=False, smooth_variance=3e-7,
                    target_eye_ratio=-1.0, target_lip_ratio=-1.0, length_policy="cut",
                    lip_normalize_threshold=0.03, source_video_eye_threshold=0.18)
    (plan,) = run(env, "LivePortraitRetarget", models=models, source_motion=src_motion, driving_motion=drv_motion,
                  **retarget)
    return dict(models=models, det=det, photo=photo, driving=driving, crop=crop, retarget=retarget,
                src_faces=src_faces, src_crops=src_crops, drv_faces=drv_faces, drv_crops=drv_crops,
                src_motion=src_motion, drv_motion=drv_motion, plan=plan)


def test_crop_extract_retarget(env, graph):
    g = graph
    assert len(g["src_faces"]) == 1 and g["src_faces"].image_size == (512, 512)
    assert g["src_crops"].shape == (1, 256, 256, 3) and g["src_crops"].dtype == torch.float32
    assert g["drv_crops"].shape == (2, 256, 256, 3)
    assert 0.0 <= float(g["src_crops"].min()) and float(g["src_crops"].max()) <= 1.0
    assert torch.equal(g["src_crops"][0], g["src_faces"].crops[0].float() / 255)
    m = g["src_motion"]
    assert len(m) == 1 and m.kp.shape == (1, 21, 3) and m.eye_ratio.shape == (1, 2)
    assert len(g["drv_motion"]) == 2 and g["drv_motion"].fps == 12.0
    assert len(g["plan"]) == 2 and g["plan"].x_d.shape == (2, 21, 3)
    assert torch.isfinite(g["plan"].x_d).all()
    run(env, "LivePortraitExtractMotion", models=g["models"], faces=g["drv_faces"], fps=12.0, batch_size=1)
    ev = comfy.utils.PROGRESS_EVENTS
    assert [e[:3] for e in ev] == [(1, 2, "1"), (2, 2, "1")]  # one update per batch, on this node


def first_frames(plan, n: int):
    """The first n output frames of a keypoint plan (W+G cost ~3 s per 512² frame here)."""
    import dataclasses

    return dataclasses.replace(plan, **{f.name: getattr(plan, f.name)[:n] for f in dataclasses.fields(plan)
                                        if isinstance(getattr(plan, f.name), torch.Tensor)})


def test_animate_and_paste_back(env, graph):
    g = graph
    plan = first_frames(g["plan"], 1)
    (crops,) = run(env, "LivePortraitAnimate", models=g["models"], source_faces=g["src_faces"],
                   keypoints=plan, batch_size=1, precision="exact")
    assert crops.shape == (1, 512, 512, 3) and crops.dtype == torch.float32 and crops.device.type == "cpu"
    assert torch.isfinite(crops).all() and 0 <= float(crops.min()) and float(crops.max()) <= 1
    assert float(crops.std()) > 0.01
    assert [e[:2] + e[3:] for e in comfy.utils.PROGRESS_EVENTS] == [(1, 1, True)]  # bar + live preview

    image, mask = run(env, "LivePortraitPasteBack", source_image=g["photo"], crops=crops, source_faces=g["src_faces"],
                      feather=0.0, color_match=0.0)
    assert image.shape == (1, 512, 512, 3) and mask.shape == (1, 512, 512)
    photo_u8 = (g["photo"][0] * 255).round()
    out_u8 = (image * 255).round()
    outside = mask[0] == 0
    assert 0.05 < float((mask[0] > 0.5).float().mean()) < 0.9
    assert torch.equal(out_u8[0][outside], photo_u8[outside])  # untouched outside the face mask
    assert float((out_u8[0][mask[0] > 0.99] - photo_u8[mask[0] > 0.99]).abs().mean()) > 1.0

    # crops upscaled in between (any square size) land in the same place
    big = torch.nn.functional.interpolate(crops.movedim(-1, 1), size=(640, 640), mode="bilinear").movedim(1, -1)
    image2, mask2 = run(env, "LivePortraitPasteBack", source_image=g["photo"], crops=big, source_faces=g["src_faces"],
                        feather=8.0, color_match=0.0, keypoints=plan)
    assert torch.equal((mask2 > 0), (mask > 0)) or float(((mask2 > 0) ^ (mask > 0)).float().mean()) < 0.01
    assert float((image2 - image).abs().mean()) < 0.02
    # a crop-space MASK of zeros keeps the photo
    zero = torch.zeros((1, 64, 64))
    image3, mask3 = run(env, "LivePortraitPasteBack", source_image=g["photo"], crops=crops,
                        source_faces=g["src_faces"], feather=0.0, color_match=0.0, mask=zero)
    assert float(mask3.max()) == 0.0 and torch.equal((image3[0] * 255).round(), photo_u8)


def test_bad_inputs_give_clear_errors(env, graph):
    g = graph
    crops3 = torch.rand((3, 512, 512, 3))
    with pytest.raises(ValueError, match="3 crops for 2 source face item"):
        run(env, "LivePortraitPasteBack", source_image=g["driving"], crops=crops3, source_faces=g["drv_faces"],
            feather=0.0, color_match=0.0)
    with pytest.raises(ValueError, match="source_image is 256×256"):
        run(env, "LivePortraitPasteBack", source_image=g["driving"], crops=crops3[:2], source_faces=g["src_faces"],
            feather=0.0, color_match=0.0)
    with pytest.raises(ValueError, match="connect a 'detector'"):
        run(env, "LivePortraitCropFace", image=g["photo"], models=g["models"], purpose="source", **g["crop"])
    with pytest.raises(ValueError, match="Value 0 smaller than min"):
        run(env, "LivePortraitAnimate", models=g["models"], source_faces=g["src_faces"], keypoints=g["plan"],
            batch_size=0, precision="exact")


def test_cancel_stops_animate(env, graph):
    g = graph
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        run(env, "LivePortraitAnimate", models=g["models"], source_faces=g["src_faces"], keypoints=g["plan"],
            batch_size=1, precision="exact")
    assert not mm.processing_interrupted()


def test_none_mode_and_face_landmarks_input(env, graph):
    g = graph
    # frames that already are face crops
    faces, crops = run(env, "LivePortraitCropFace", image=g["driving"], models=g["models"], purpose="none", **g["crop"])
    assert len(faces) == 2 and crops.shape == (2, 256, 256, 3) and faces.landmarks is not None
    # MediaPipe FACE_LANDMARKS instead of a detector: a face dict per frame (pixel coordinates)
    box = g["det"].detect((g["photo"][0] * 255).round().to(torch.uint8).numpy())[0].box
    x0, y0, x1, y1 = [float(v) for v in box]
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(x0, x1, 478), rng.uniform(y0, y1, 478)], 1).astype(np.float32)
    w, h = x1 - x0, y1 - y0  # eyes, nose tip, mouth corners where a frontal face has them
    for idx, (fx, fy) in {33: (0.25, 0.38), 133: (0.4, 0.38), 362: (0.6, 0.38), 263: (0.75, 0.38),
                          1: (0.5, 0.58), 61: (0.35, 0.75), 291: (0.65, 0.75)}.items():
        pts[idx] = (x0 + fx * w, y0 + fy * h)
    fl = {"frames": [[{"bbox_xyxy": np.array([x0, y0, x1, y1], np.float32), "score": 0.9, "landmarks_xy": pts}]],
          "image_size": (512, 512)}
    faces2, _ = run(env, "LivePortraitCropFace", image=g["photo"], models=g["models"], face_landmarks=fl,
                    purpose="source", **g["crop"])
    assert len(faces2) == 1
    # the same landmark model refines both: the crops agree closely
    a, b = faces2.M_c2o.numpy()[0], g["src_faces"].M_c2o.numpy()[0]
    assert np.abs(a[:2, :2] - b[:2, :2]).max() < 0.1 and np.abs(a[:2, 2] - b[:2, 2]).max() < 40
    with pytest.raises(ValueError, match="face_landmarks has 1 frames but image has 2"):
        run(env, "LivePortraitCropFace", image=g["driving"], models=g["models"], face_landmarks=fl,
            purpose="driving", **g["crop"])


def test_save_and_load_motion(env, graph):
    g = graph
    for fmt, ext in (("lpmotion", ".lpmotion.safetensors"), ("pkl", ".pkl")):
        out = harness.run_node(env["LivePortraitSaveMotion"], {"motion": g["drv_motion"],
                               "filename_prefix": "LivePortrait/test", "format": fmt}, linked=("motion",))
        assert out.args == () and "saved 2 frames" in out.ui.as_dict()["text"][0]
        folder = os.path.join(folder_paths.get_output_directory(), "LivePortrait")
        name = next(f for f in sorted(os.listdir(folder)) if f.endswith(ext))
        os.replace(os.path.join(folder, name), os.path.join(folder_paths.get_input_directory(), name))
        opts = harness.object_info(env)["LivePortraitLoadMotion"]["input"]["required"]["template"][1]["options"]
        assert name in opts
        (m,) = run(env, "LivePortraitLoadMotion", template=name)
        assert len(m) == 2 and torch.allclose(m.exp, g["drv_motion"].exp, atol=1e-6)
        assert torch.allclose(m.R, g["drv_motion"].R, atol=1e-6)
        (plan,) = run(env, "LivePortraitRetarget", models=g["models"], source_motion=g["src_motion"],
                      driving_motion=m, **g["retarget"])
        assert torch.allclose(plan.x_d, g["plan"].x_d, atol=1e-5)
    with pytest.raises(ValueError, match="not found in the input folder"):
        run(env, "LivePortraitLoadMotion", template="missing.pkl")


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


def test_all_faces_of_a_group_picture(env, graph):
    """face_index -1: every face is an item with its own face id; Retarget plans frame × face; Paste Back
    puts every face into its own frame (here the 256 source crops themselves, upscaled: ≈ the photo)."""
    g = graph
    pair = torch.cat([g["photo"], g["photo"].flip(2)], dim=2)  # two people side by side, 1024×512
    faces, crops = run(env, "LivePortraitCropFace", image=pair, models=g["models"], detector=g["det"],
                       purpose="source", **{**g["crop"], "face_index": -1})
    assert len(faces) == 2 and sorted(faces.face_id.tolist()) == [0, 1] and faces.frame_index.tolist() == [0, 0]
    centers = faces.M_c2o[:, 0, 2] + 256 * faces.M_c2o[:, 0, 0]
    assert (centers < 512).sum() == 1 and (centers > 512).sum() == 1  # one face per half
    (motion,) = run(env, "LivePortraitExtractMotion", models=g["models"], faces=faces, fps=25.0, batch_size=8)
    (plan,) = run(env, "LivePortraitRetarget", models=g["models"], source_motion=motion,
                  driving_motion=g["drv_motion"], **g["retarget"])
    assert len(plan) == 4 and plan.frame_index.tolist() == [0, 0, 1, 1]
    assert sorted(plan.face_id[:2].tolist()) == [0, 1] and plan.source_index.tolist()[:2] == plan.source_index.tolist()[2:]

    up = torch.nn.functional.interpolate(crops.movedim(-1, 1), size=(512, 512), mode="bicubic").movedim(1, -1)
    up = up.clamp(0, 1)[plan.source_index]  # what Animate would give for a still driving motion
    image, mask = run(env, "LivePortraitPasteBack", source_image=pair, crops=up, source_faces=faces,
                      feather=0.0, color_match=0.0, keypoints=plan)
    assert image.shape == (2, 512, 1024, 3) and mask.shape == (2, 512, 1024)
    for half in (slice(0, 512), slice(512, 1024)):
        assert float((mask[:, :, half] > 0.5).float().mean()) > 0.05  # both faces pasted in each frame
    inside = mask > 0.5
    assert float((image - pair)[inside].abs().mean()) < 0.03  # each face landed on itself
    # without the plan: one crop per source item → one frame holding both faces
    image1, mask1 = run(env, "LivePortraitPasteBack", source_image=pair, crops=up[:2], source_faces=faces,
                        feather=0.0, color_match=0.0)
    assert image1.shape == (1, 512, 1024, 3) and torch.allclose(mask1[0], mask[0])


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


def test_an_api_prompt_with_only_the_links_runs(env, graph):
    g = graph
    prompt = {"1": {"class_type": "LoadLivePortraitModels", "inputs": {}},
              "2": {"class_type": "LivePortraitLoadFaceDetector", "inputs": {}},
              "3": {"class_type": "LivePortraitCropFace", "inputs": {"image": ["9", 0], "models": ["1", 0],
                                                                     "detector": ["2", 0]}},
              "4": {"class_type": "LivePortraitExtractMotion", "inputs": {"models": ["1", 0], "faces": ["3", 0]}},
              "5": {"class_type": "LivePortraitSaveMotion", "inputs": {"motion": ["4", 0]}}}

    from comfy_api.latest import io

    class PhotoNode(io.ComfyNode):  # a tiny source node handing over the photo
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Photo", inputs=[], outputs=[io.Image.Output()])

        @classmethod
        def execute(cls):
            return io.NodeOutput(g["photo"])

    prompt["9"] = {"class_type": "Photo", "inputs": {}}
    results = harness.execute_prompt(prompt, {**env, "Photo": PhotoNode})
    assert "saved 1 frames" in results["5"].ui.as_dict()["text"][0]
    assert len(results["3"].args[0]) == 1


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
