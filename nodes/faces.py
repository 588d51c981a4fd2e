"""Face nodes: crop faces (IMAGE → LP_FACES + 256² crops) and paste animated crops back."""
from __future__ import annotations

import os

import numpy as np
import torch

from . import comfy as C
from .comfy import io
from .convert import image_to_u8, mask_batch, u8_to_image
from .types import CATEGORY, FaceLandmarks, LPFaceDetector, LPFaces, LPKeypoints, LPModels

PURPOSES = ["source", "driving", "custom", "none"]


class LivePortraitCropFace(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..liveportrait_core.face.detectors import ORDERS  # combo values: saved workflows keep them

        return io.Schema(
            node_id="LivePortraitCropFace",
            display_name="LivePortrait Crop Face",
            category=CATEGORY,
            description=(
                "Finds the face(s) in an image or video (IMAGE batch), refines them with the 203-point "
                "landmark model and cuts the aligned 256×256 crops the networks need, remembering how to "
                "paste them back. Video faces are tracked; frames without a face reuse the last crop. "
                "Give either a detector or ComfyUI's FACE_LANDMARKS (MediaPipe nodes)."),
            inputs=[
                io.Image.Input("image", tooltip="Source photo, source video frames, or driving video frames."),
                LPModels.Input("models", tooltip="From Load LivePortrait Models (provides the 203-point landmark model)."),
                LPFaceDetector.Input("detector", optional=True,
                                     tooltip="From LivePortrait Face Detector. Not needed with face_landmarks "
                                             "or purpose 'none'."),
                FaceLandmarks.Input("face_landmarks", optional=True,
                                    tooltip="ComfyUI core FACE_LANDMARKS (MediaPipe Face Landmarker) for the same "
                                            "IMAGE, used instead of a detector to place the faces."),
                io.Combo.Input("purpose", options=PURPOSES, default="source",
                               tooltip="source: crop for animating (scale 2.3, vy -0.125). driving: crop a driving "
                                       "video (scale 2.2, vy -0.1). custom: use scale / vx_ratio / vy_ratio below. "
                                       "none: the frames already are face crops (resized to 256, no detection)."),
                io.Float.Input("scale", default=2.3, min=1.0, max=4.0, step=0.05,
                               tooltip="custom only: crop side / face size (larger = more background)."),
                io.Float.Input("vx_ratio", default=0.0, min=-0.5, max=0.5, step=0.01,
                               tooltip="custom only: horizontal shift of the crop, in crop sides."),
                io.Float.Input("vy_ratio", default=-0.125, min=-0.5, max=0.5, step=0.005,
                               tooltip="custom only: vertical shift of the crop, in crop sides (negative = up)."),
                io.Int.Input("face_index", default=0, min=-1, max=63,
                             tooltip="Which face (after ordering) to crop; -1 = all faces, each tracked as its "
                                     "own face id, so one motion animates everyone."),
                io.Combo.Input("face_order", options=list(ORDERS), default="large-small",
                               tooltip="How faces are ordered for face_index."),
                io.Boolean.Input("rotate", default=True,
                                 tooltip="Rotate the crop to cancel head roll (reference behaviour)."),
                io.Float.Input("smoothing", default=0.0, min=0.0, max=20.0, step=0.5,
                               tooltip="Video sources: smooth the crop boxes over time against jitter, as a "
                                       "Gaussian sigma in frames (0 = reference behaviour, no smoothing). Driving "
                                       "videos use one box for the whole clip anyway."),
            ],
            outputs=[
                LPFaces.Output(display_name="faces",
                               tooltip="The face crops with their paste-back transforms and landmarks (LP_FACES)."),
                io.Image.Output(display_name="crops", tooltip="The 256×256 crops as an IMAGE, for preview."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, models, purpose: str, scale: float, vx_ratio: float, vy_ratio: float, face_index: int,
                face_order: str, rotate: bool, smoothing: float, detector=None, face_landmarks=None) -> io.NodeOutput:
        from ..liveportrait_core.errors import InputError
        from ..liveportrait_core.face.pipeline import crop_faces

        frames = image_to_u8(image, "image")
        if face_landmarks is not None:  # ComfyUI's FACE_LANDMARKS: {"frames": [[face, …] per frame], …}
            from ..liveportrait_core.face.detectors.mediapipe import MediaPipeFaces

            per_frame = face_landmarks.get("frames") if isinstance(face_landmarks, dict) else None
            detector = MediaPipeFaces(per_frame, frames.shape[0], frames.shape[1:3],
                                      what="LivePortraitCropFace: face_landmarks")
        if purpose != "none" and detector is None:
            raise InputError("LivePortraitCropFace: connect a 'detector' (LivePortrait Face Detector) or "
                             "'face_landmarks' (MediaPipe Face Landmarker), or set purpose to 'none' when the "
                             "frames already are face crops.")
        custom = purpose == "custom"
        prog = C.Progress(frames.shape[0], cls.hidden.unique_id)
        faces = crop_faces(
            frames, detector, landmark_runner(models),
            purpose="source" if purpose in ("custom", "none") else purpose,
            scale=scale if custom else None, vx=vx_ratio if custom else None, vy=vy_ratio if custom else None,
            face_index="all" if face_index < 0 else face_index, order=face_order, rotate=rotate,
            smooth=smoothing, mode="none" if purpose == "none" else "detect", name="image",
            progress=prog)
        return io.NodeOutput(faces, u8_to_image(faces.crops))


# ONNX sessions of landmark.onnx, keyed by (file, mtime, device); created on first use only.
_LANDMARK_RUNNERS: dict = {}


def landmark_runner(models):
    """The 203-point landmark runner of the weights' landmark.onnx (None when there is none)."""
    path = getattr(models, "landmark_path", None)
    if not path:
        return None
    from ..liveportrait_core.face.landmarks import LandmarkRunner

    device = C.onnx_device()
    key = (os.path.realpath(path), os.path.getmtime(path), device)
    if key not in _LANDMARK_RUNNERS:
        _LANDMARK_RUNNERS.clear()
        _LANDMARK_RUNNERS[key] = LandmarkRunner(path, device=device)
    return _LANDMARK_RUNNERS[key]


def paste_plan(faces, n_crops: int, keypoints=None) -> tuple[np.ndarray, np.ndarray]:
    """(source item, output frame) of each animated crop. Index bookkeeping only.

    With the keypoint plan given to Animate: its source_index / frame_index. Without: one crop
    per source item (same order), or, for a still source, the items repeated per output frame
    (the order compose produces: by output frame, then face).
    """
    from ..liveportrait_core.errors import InputError

    n_items = len(faces)
    if keypoints is not None and len(keypoints) == n_crops:
        src = keypoints.source_index.reshape(-1).long().cpu().numpy()
        fi = keypoints.frame_index
        out = fi.reshape(-1).long().cpu().numpy() if fi is not None else np.arange(n_crops)
        return src, np.unique(out, return_inverse=True)[1].reshape(-1)
    frames = faces.frame_index.reshape(-1).long().cpu().numpy()
    if n_crops == n_items:
        return np.arange(n_crops), np.unique(frames, return_inverse=True)[1].reshape(-1)
    if n_items and n_crops % n_items == 0 and len(np.unique(frames)) == 1:
        i = np.arange(n_crops)
        return i % n_items, i // n_items
    raise InputError(
        f"LivePortraitPasteBack: got {n_crops} crops for {n_items} source face item(s) from "
        f"{len(np.unique(frames))} frame(s). Connect the crops LivePortrait Animate made from these source_faces "
        "(an upscaler in between must keep the batch size), and connect Animate's 'keypoints' here too when a "
        "source video and the driving motion differ in length.")


class LivePortraitPasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitPasteBack",
            display_name="LivePortrait Paste Back",
            category=CATEGORY,
            description=("Pastes animated face crops back into the source picture or video with a soft face "
                         "mask. The crops may have been upscaled or restored in between (any square size). "
                         "Returns the frames and the blend mask it used."),
            inputs=[
                io.Image.Input("source_image", tooltip="The IMAGE the source faces were cropped from."),
                io.Image.Input("crops", tooltip="Animated crops from LivePortrait Animate (square, any size)."),
                LPFaces.Input("source_faces", tooltip="The source LP_FACES from LivePortrait Crop Face."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional mask in CROP space (1 = keep the animated face) multiplied into "
                                      "the reference face mask; any size, resized."),
                LPKeypoints.Input("keypoints", optional=True,
                                  tooltip="Optional: the keypoint plan given to Animate, to place each crop exactly "
                                          "(needed only when source video and driving lengths differ)."),
                io.Float.Input("feather", default=0.0, min=0.0, max=128.0, step=1.0,
                               tooltip="Extra softening of the mask edge, in 512-crop pixels (0 = reference)."),
                io.Float.Input("color_match", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Match the pasted face's colours to the original (0 = off, reference)."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Frames with the animated faces pasted in."),
                     io.Mask.Output(display_name="mask", tooltip="The blend mask used per frame (1 = animated face).")],
        )

    @classmethod
    def execute(cls, source_image, crops, source_faces, feather: float, color_match: float, mask=None,
                keypoints=None) -> io.NodeOutput:
        from ..liveportrait_core.errors import InputError
        from ..liveportrait_core.face.paste import paste_back

        frames = image_to_u8(source_image, "source_image")
        crops_u8 = image_to_u8(crops, "crops")
        faces = source_faces
        h, w = frames.shape[1:3]
        if tuple(faces.image_size) != (h, w):
            raise InputError(f"LivePortraitPasteBack: source_image is {w}×{h} but source_faces were cropped from "
                             f"{faces.image_size[1]}×{faces.image_size[0]} frames; connect the IMAGE given to "
                             "the source Crop Face node.")
        frame_idx = faces.frame_index.reshape(-1).long().cpu().numpy()
        if frames.shape[0] <= int(frame_idx.max(initial=0)):
            raise InputError(f"LivePortraitPasteBack: source_faces come from {int(frame_idx.max()) + 1} frames but "
                             f"source_image has {frames.shape[0]}; connect the IMAGE batch given to Crop Face.")
        n = crops_u8.shape[0]
        src, out_frame = paste_plan(faces, n, keypoints)
        n_out = int(out_frame.max()) + 1
        first = np.array([np.flatnonzero(out_frame == o)[0] for o in range(n_out)])
        out = frames[frame_idx[src[first]]]          # each output frame starts as its source frame
        M = faces.M_c2o.detach().cpu().numpy() if isinstance(faces.M_c2o, torch.Tensor) else np.asarray(faces.M_c2o)
        user = None if mask is None else mask_batch(mask, (faces.crop_size, faces.crop_size), n)
        C.check_interrupt()
        # several faces of one output frame are pasted one after the other into it
        out, masks = paste_back(out, crops_u8, M[src], mask=user, feather=feather, color_match=color_match,
                                crop_size=faces.crop_size, into=out_frame)
        return io.NodeOutput(u8_to_image(out), torch.from_numpy(masks).to(C.intermediate_device()))
