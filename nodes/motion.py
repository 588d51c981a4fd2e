"""Motion nodes: extract (LP_FACES → LP_MOTION), retarget (→ LP_KEYPOINTS), load / save templates."""
from __future__ import annotations

import os

from . import comfy as C
from . import memory
from .comfy import io, ui
from .types import CATEGORY, LPFaces, LPKeypoints, LPModels, LPMotion

TEMPLATE_EXTS = (".pkl", ".lpmotion.safetensors")


def _cancel() -> bool:
    C.check_interrupt()  # raises ComfyUI's InterruptProcessingException on Cancel
    return False


class LivePortraitExtractMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitExtractMotion",
            display_name="LivePortrait Extract Motion",
            category=CATEGORY,
            description=("Runs the motion extractor on face crops: head pose, expression, translation, "
                         "scale and keypoints per item, plus eye/lip openness from the 203 landmarks. Use it "
                         "on the source faces and on the driving faces."),
            inputs=[
                LPModels.Input("models", tooltip="From Load LivePortrait Models."),
                LPFaces.Input("faces", tooltip="Face crops from LivePortrait Crop Face (source or driving)."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.01,
                               tooltip="Frame rate stored with the motion (used when it is saved as a "
                                       "template); 25 for a still image."),
                io.Int.Input("batch_size", default=8, min=1, max=256,
                             tooltip="Crops per motion-extractor batch (memory vs speed)."),
            ],
            outputs=[LPMotion.Output(display_name="motion",
                                     tooltip="Per-item keypoint parameters (LP_MOTION), on the CPU.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, models, faces, fps: float, batch_size: int) -> io.NodeOutput:
        from ..liveportrait_core.extract import extract_motion

        prog = C.Progress(len(faces), cls.hidden.unique_id)
        memory.load_for_extraction(models, batch_size)
        motion = extract_motion(models, faces, fps=fps, batch_size=batch_size,
                                progress=lambda d, t: prog.update(d - prog.done), cancel=_cancel)
        return io.NodeOutput(motion)


OUTPUT_TAG = " [output]"  # ComfyUI's annotated-name suffix for a file in the output folder


def _motion_files(root: str, recursive: bool) -> list[str]:
    """'/'-separated names of motion files under `root` (top level only unless `recursive`)."""
    found = []
    try:
        if not recursive:
            return sorted(f for f in os.listdir(root)
                          if f.lower().endswith(TEMPLATE_EXTS) and os.path.isfile(os.path.join(root, f)))
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, root)
            found += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                      for f in sorted(files) if f.lower().endswith(TEMPLATE_EXTS)]
    except OSError:
        return []
    return found


def template_files() -> list[str]:
    """Motion files the Load Motion node offers: the top of ComfyUI's input folder (like LoadImage;
    uploads land there), then what Save Motion wrote anywhere in the output folder, as
    'name [output]' (ComfyUI's annotated names)."""
    return (_motion_files(C.input_directory(), recursive=False)
            + [f + OUTPUT_TAG for f in _motion_files(C.output_directory(), recursive=True)])


class LivePortraitLoadMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitLoadMotion",
            display_name="LivePortrait Load Motion",
            category=CATEGORY,
            description=("Loads a motion template: the reference tool's .pkl templates (read safely: arrays "
                         "only, no code runs) or this pack's own .lpmotion.safetensors files, from ComfyUI's "
                         "input folder (upload button) or saved by LivePortrait Save Motion in the output "
                         "folder. Use it as the driving motion instead of a driving video."),
            inputs=[
                io.Combo.Input("template", options=template_files(),
                               tooltip="Template file: in ComfyUI/input (.pkl from the reference tool, or an "
                                       "uploaded .lpmotion.safetensors), or '… [output]' for motions saved by "
                                       "LivePortrait Save Motion. Press Refresh after adding files."),
            ],
            outputs=[LPMotion.Output(display_name="motion", tooltip="The template's motion (LP_MOTION).")],
        )

    @classmethod
    def _path(cls, template: str) -> str:
        from ..liveportrait_core.errors import InputError

        try:
            return C.annotated_input_path(template)
        except ValueError:  # ComfyUI refuses names leaving the folder ('..')
            raise InputError(f"LivePortraitLoadMotion: template {template!r} is not a file name inside the "
                             "input or output folder; choose one from the list.") from None

    @classmethod
    def execute(cls, template: str) -> io.NodeOutput:
        from ..liveportrait_core.templates import load_motion

        return io.NodeOutput(load_motion(cls._path(template)))

    @classmethod
    def fingerprint_inputs(cls, template: str, **_):
        try:
            path = cls._path(template)
            return os.path.getmtime(path) if os.path.exists(path) else "missing"
        except Exception:  # a raise here would make ComfyUI re-run the node forever
            return "invalid"

    @classmethod
    def validate_inputs(cls, template: str):
        try:
            path = cls._path(template)
        except Exception as e:  # noqa: BLE001
            return str(e)
        if not os.path.isfile(path):
            return f"template '{template}' not found in the input or output folder; upload it or press Refresh."
        return True


class LivePortraitSaveMotion(io.ComfyNode):
    FORMATS = {"lpmotion": ".lpmotion.safetensors", "pkl": ".pkl"}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitSaveMotion",
            display_name="LivePortrait Save Motion",
            category=CATEGORY,
            description=("Saves a motion (e.g. extracted from a driving video) as a template in ComfyUI's "
                         "output folder, to reuse without the video. 'lpmotion' is this pack's safe format "
                         "(no pickle); 'pkl' is readable by the reference LivePortrait tool."),
            inputs=[
                LPMotion.Input("motion", tooltip="Motion to save (from Extract Motion or Load Motion)."),
                io.String.Input("filename_prefix", default="LivePortrait/motion",
                                tooltip="File name prefix inside the output folder; a counter is appended."),
                io.Combo.Input("format", options=list(cls.FORMATS), default="lpmotion",
                               tooltip="lpmotion: safe, exact round trip. pkl: the reference tool's template format."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion, filename_prefix: str, format: str) -> io.NodeOutput:
        from ..liveportrait_core.templates import save_motion

        folder, stem, counter, subfolder = C.save_path(filename_prefix)
        name = f"{stem}_{counter:05}_{cls.FORMATS[format]}"
        path = save_motion(motion, os.path.join(folder, name))
        name = os.path.basename(path) if isinstance(path, str) else name
        return io.NodeOutput(ui=ui.PreviewText(f"saved {len(motion)} frames to {os.path.join(subfolder, name)}"))


class LivePortraitRetarget(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..liveportrait_core.compose import DRIVING_OPTIONS, LENGTH_POLICIES, REGIONS, ComposeOptions

        d = ComposeOptions()
        return io.Schema(
            node_id="LivePortraitRetarget",
            display_name="LivePortrait Retarget",
            category=CATEGORY,
            description=("Combines the source motion with the driving motion into the keypoints to render: "
                         "relative or absolute motion, which regions move, stitching, eye/lip retargeting, "
                         "smoothing of video sources and what to do when source video and driving differ in length."),
            inputs=[
                LPModels.Input("models", tooltip="From Load LivePortrait Models (stitching / retargeting MLPs)."),
                LPMotion.Input("source_motion", tooltip="Motion of the SOURCE faces (Extract Motion on the source crops)."),
                LPMotion.Input("driving_motion", tooltip="Driving motion: Extract Motion on driving crops, or Load Motion."),
                io.Boolean.Input("relative_motion", default=d.relative_motion,
                                 tooltip="Apply the driving motion relative to its first frame (keeps the source's own "
                                         "pose and expression as the start). Off = absolute: copy the driving pose/expression."),
                io.Combo.Input("driving_option", options=list(DRIVING_OPTIONS), default=d.driving_option,
                               tooltip="expression-friendly or pose-friendly (reference option; only matters for an "
                                       "image source driven by a video in relative mode)."),
                io.Float.Input("driving_multiplier", default=d.driving_multiplier, min=0.0, max=3.0, step=0.01,
                               tooltip="Scales how far the keypoints move (1 = as driven; <1 calmer, >1 stronger)."),
                io.Combo.Input("animation_region", options=list(REGIONS), default=d.animation_region,
                               tooltip="What the driving motion moves: all, exp (expression only), pose (head only), "
                                       "lip, or eyes."),
                io.Boolean.Input("stitching", default=d.stitching,
                                 tooltip="Use the stitching MLP so the face fits back seamlessly (recommended; "
                                         "needs stitching_retargeting_module in the weights)."),
                io.Boolean.Input("eye_retargeting", default=d.eye_retargeting,
                                 tooltip="Drive eye openness with the eye-retargeting MLP from the driving eye ratios "
                                         "(experimental in the reference)."),
                io.Boolean.Input("lip_retargeting", default=d.lip_retargeting,
                                 tooltip="Drive mouth openness with the lip-retargeting MLP from the driving lip ratio "
                                         "(experimental in the reference)."),
                io.Boolean.Input("normalize_lip", default=d.normalize_lip,
                                 tooltip="Close the source mouth before animating (relative mode, no retargeting)."),
                io.Boolean.Input("source_video_eye_retargeting", default=d.source_video_eye_retargeting,
                                 tooltip="Video source: set every frame's eye openness to the first frame's."),
                io.Float.Input("smooth_variance", default=d.smooth_variance, min=0.0, max=0.01, step=1e-7,
                               round=1e-10,
                               tooltip="Video source driven by a video: Kalman smoothing of the motion (larger = "
                                       "smoother; 0 = none; reference 3e-7)."),
                io.Float.Input("target_eye_ratio", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Eye retargeting target openness; -1 = follow the driving motion's eyes."),
                io.Float.Input("target_lip_ratio", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Lip retargeting target openness; -1 = follow the driving motion's mouth."),
                io.Combo.Input("length_policy", options=list(LENGTH_POLICIES), default=d.length_policy,
                               tooltip="Video source vs driving of different lengths: cut to the shorter (reference), "
                                       "loop, ping-pong or hold the last frame of the shorter one."),
                io.Float.Input("lip_normalize_threshold", default=d.lip_normalize_threshold, min=0.0, max=1.0,
                               step=0.001, advanced=True,
                               tooltip="normalize_lip acts only when the source lip ratio is at least this (reference 0.03)."),
                io.Float.Input("source_video_eye_threshold", default=d.source_video_eye_retargeting_threshold,
                               min=0.0, max=1.0, step=0.01, advanced=True,
                               tooltip="source_video_eye_retargeting: a first-frame eye ratio below this counts as "
                                       "closed and is replaced by 0.39 (reference 0.18)."),
            ],
            outputs=[LPKeypoints.Output(display_name="keypoints",
                                        tooltip="Source and driving keypoints per output frame (LP_KEYPOINTS) for Animate.")],
        )

    @classmethod
    def execute(cls, models, source_motion, driving_motion, relative_motion: bool,
                driving_option: str, driving_multiplier: float,
                animation_region: str, stitching: bool, eye_retargeting: bool,
                lip_retargeting: bool, normalize_lip: bool,
                source_video_eye_retargeting: bool, smooth_variance: float,
                target_eye_ratio: float, target_lip_ratio: float, length_policy: str,
                lip_normalize_threshold: float, source_video_eye_threshold: float) -> io.NodeOutput:
        from ..liveportrait_core.compose import ComposeOptions, compose

        options = ComposeOptions(
            relative_motion=relative_motion, stitching=stitching, eye_retargeting=eye_retargeting,
            lip_retargeting=lip_retargeting, normalize_lip=normalize_lip,
            source_video_eye_retargeting=source_video_eye_retargeting, driving_option=driving_option,
            driving_multiplier=driving_multiplier, animation_region=animation_region,
            smooth_variance=smooth_variance,
            target_eye_ratio=None if target_eye_ratio < 0 else target_eye_ratio,
            target_lip_ratio=None if target_lip_ratio < 0 else target_lip_ratio,
            length_policy=length_policy, lip_normalize_threshold=lip_normalize_threshold,
            source_video_eye_retargeting_threshold=source_video_eye_threshold)
        plan = compose(source_motion, driving_motion, models.stitching_retargeting, options)
        return io.NodeOutput(plan)
