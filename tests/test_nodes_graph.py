"""The LivePortrait node graph end to end through the ComfyUI stand-in: crop → extract → retarget
→ animate → paste back, several faces, bad inputs, cancel, motion files, API prompts.

Synthetic weights, a stand-in landmark.onnx and the offline detector; the photo and driving clip
are the example inputs shipped in example_workflows/. Images stay small (2 animated frames).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from comfy_stub import harness

harness.install()
import comfy.model_management as mm  # noqa: E402  (the stand-in)
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402
from nodes_testing import (EXAMPLES, NODE_IDS, activate, env, landmark_standin, pack, read_image,  # noqa: F401
                           read_video, run, sub, tree)


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
                    lip_normalize_threshold=0.03, source_video_eye_threshold=0.18, anchor_frame=-1)
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
    """Save Motion → Load Motion in the UI: the saved file is listed as '… [output]' and loads as
    saved; a file copied into the input folder is listed by its name."""
    g = graph
    for fmt, ext in (("lpmotion", ".lpmotion.safetensors"), ("pkl", ".pkl")):
        out = harness.run_node(env["LivePortraitSaveMotion"], {"motion": g["drv_motion"],
                               "filename_prefix": "LivePortrait/test", "format": fmt}, linked=("motion",))
        assert out.args == () and "saved 2 frames" in out.ui.as_dict()["text"][0]
        folder = os.path.join(folder_paths.get_output_directory(), "LivePortrait")
        name = next(f for f in sorted(os.listdir(folder)) if f.endswith(ext))
        opts = harness.object_info(env)["LivePortraitLoadMotion"]["input"]["required"]["template"][1]["options"]
        assert f"LivePortrait/{name} [output]" in opts
        (saved,) = run(env, "LivePortraitLoadMotion", template=f"LivePortrait/{name} [output]")
        os.replace(os.path.join(folder, name), os.path.join(folder_paths.get_input_directory(), name))
        opts = harness.object_info(env)["LivePortraitLoadMotion"]["input"]["required"]["template"][1]["options"]
        assert name in opts and f"LivePortrait/{name} [output]" not in opts
        (m,) = run(env, "LivePortraitLoadMotion", template=name)
        for loaded in (saved, m):
            assert len(loaded) == 2 and torch.allclose(loaded.exp, g["drv_motion"].exp, atol=1e-6)
            assert torch.allclose(loaded.R, g["drv_motion"].R, atol=1e-6)
        (plan,) = run(env, "LivePortraitRetarget", models=g["models"], source_motion=g["src_motion"],
                      driving_motion=m, **g["retarget"])
        assert torch.allclose(plan.x_d, g["plan"].x_d, atol=1e-5)
    with pytest.raises(ValueError, match="'missing.pkl' not found in the input or output folder; upload it"):
        run(env, "LivePortraitLoadMotion", template="missing.pkl")
    with pytest.raises(ValueError, match="not a file name inside the input or output folder"):
        run(env, "LivePortraitLoadMotion", template="../secret.pkl")


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


def test_an_api_prompt_runs_and_a_missing_widget_is_named(env, graph):
    """API prompts carry every widget value (the frontend writes them all); one without a required
    widget is refused before anything runs, naming the input, as the real ComfyUI does."""
    g = graph
    crop = {"purpose": "source", **g["crop"]}
    prompt = {"1": {"class_type": "LoadLivePortraitModels",
                    "inputs": {"weights": "auto", "precision": "auto", "download_from_hub": "never"}},
              "2": {"class_type": "LivePortraitLoadFaceDetector",
                    "inputs": {"backend": "offline", "threshold": -1.0, "max_side": 640}},
              "3": {"class_type": "LivePortraitCropFace", "inputs": {"image": ["9", 0], "models": ["1", 0],
                                                                     "detector": ["2", 0], **crop}},
              "4": {"class_type": "LivePortraitExtractMotion",
                    "inputs": {"models": ["1", 0], "faces": ["3", 0], "fps": 25.0, "batch_size": 8}},
              "5": {"class_type": "LivePortraitSaveMotion",
                    "inputs": {"motion": ["4", 0], "filename_prefix": "LivePortrait/api", "format": "lpmotion"}}}

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
    del prompt["4"]["inputs"]["fps"]
    with pytest.raises(ValueError, match="fps"):
        harness.execute_prompt(prompt, {**env, "Photo": PhotoNode})
