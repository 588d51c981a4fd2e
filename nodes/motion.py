"""Motion nodes: extract (LP_FACES → LP_MOTION), retarget (→ LP_KEYPOINTS), load / save templates."""
from __future__ import annotations

import os

from . import comfy as C
from .comfy import io, ui
from .types import CATEGORY, LPFaces, LPKeypoints, LPModels, LPMotion



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
                io.Float.Input("fps", optional=True, default=25.0, min=1.0, max=240.0, step=0.01,
                               tooltip="Frame rate stored with the motion (used when it is saved as a "
                                       "template); 25 for a still image."),
                io.Int.Input("batch_size", optional=True, default=8, min=1, max=256,
                             tooltip="Crops per motion-extractor batch (memory vs speed)."),
            ],
            outputs=[LPMotion.Output(display_name="motion",
                                     tooltip="Per-item keypoint parameters (LP_MOTION), on the CPU.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, models, faces, fps: float = 25.0, batch_size: int = 8) -> io.NodeOutput:
        from ..liveportrait_core.extract import extract_motion

        prog = C.Progress(len(faces), cls.hidden.unique_id)
        with C.models_on_device(models):
            motion = extract_motion(models, faces, fps=fps, batch_size=batch_size,
                                    progress=prog, cancel=C.check_interrupt)
        return io.NodeOutput(motion)


def template_files() -> list[str]:
    """Motion template files at the top of ComfyUI's input folder (like LoadImage: no deep scan)."""
    from ..liveportrait_core.templates import LISTED_EXTENSIONS

    root = C.input_directory()
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(f for f in names if f.lower().endswith(LISTED_EXTENSIONS) and os.path.isfile(os.path.join(root, f)))


class LivePortraitLoadMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitLoadMotion",
            display_name="LivePortrait Load Motion",
            category=CATEGORY,
            description=("Loads a motion template from ComfyUI's input folder: the reference tool's .pkl "
                         "templates (read safely: arrays only, no code runs) or this pack's own "
                         ".lpmotion.safetensors files. Use it as the driving motion instead of a driving video."),
            inputs=[
                io.Combo.Input("template", options=template_files(),
                               tooltip="Template file in ComfyUI/input (.pkl from the reference tool, or "
                                       ".lpmotion.safetensors saved by LivePortrait Save Motion). Press Refresh after adding files."),
            ],
            outputs=[LPMotion.Output(display_name="motion", tooltip="The template's motion (LP_MOTION).")],
        )

    @classmethod
    def execute(cls, template: str) -> io.NodeOutput:
        from ..liveportrait_core.templates import load_motion

        return io.NodeOutput(load_motion(C.annotated_input_path(template)))

    @classmethod
    def fingerprint_inputs(cls, template: str):
        path = C.annotated_input_path(template)
        return os.path.getmtime(path) if os.path.exists(path) else float("nan")

    @classmethod
    def validate_inputs(cls, template: str):
        if not os.path.isfile(C.annotated_input_path(template)):
            return f"LivePortraitLoadMotion: template '{template}' not found in the input folder."
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
                io.String.Input("filename_prefix", optional=True, default="LivePortrait/motion",
                                tooltip="File name prefix inside the output folder; a counter is appended."),
                io.Combo.Input("format", optional=True, options=list(cls.FORMATS), default="lpmotion",
                               tooltip="lpmotion: safe, exact round trip. pkl: the reference tool's template format."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion, filename_prefix: str = "LivePortrait/motion", format: str = "lpmotion") -> io.NodeOutput:
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
                io.Boolean.Input("relative_motion", optional=True, default=d.relative_motion,
                                 tooltip="Apply the driving motion relative to its first frame (keeps the source's own "
                                         "pose and expression as the start). Off = absolute: copy the driving pose/expression."),
                io.Combo.Input("driving_option", optional=True, options=list(DRIVING_OPTIONS), default=d.driving_option,
                               tooltip="expression-friendly or pose-friendly (reference option; only matters for an "
                                       "image source driven by a video in relative mode)."),
                io.Float.Input("driving_multiplier", optional=True, default=d.driving_multiplier, min=0.0, max=3.0, step=0.01,
                               tooltip="Scales how far the keypoints move (1 = as driven; <1 calmer, >1 stronger)."),
                io.Combo.Input("animation_region", optional=True, options=list(REGIONS), default=d.animation_region,
                               tooltip="What the driving motion moves: all, exp (expression only), pose (head only), "
                                       "lip, or eyes."),
                io.Boolean.Input("stitching", optional=True, default=d.stitching,
                                 tooltip="Use the stitching MLP so the face fits back seamlessly (recommended; "
                                         "needs stitching_retargeting_module in the weights)."),
                io.Boolean.Input("eye_retargeting", optional=True, default=d.eye_retargeting,
                                 tooltip="Drive eye openness with the eye-retargeting MLP from the driving eye ratios "
                                         "(experimental in the reference)."),
                io.Boolean.Input("lip_retargeting", optional=True, default=d.lip_retargeting,
                                 tooltip="Drive mouth openness with the lip-retargeting MLP from the driving lip ratio "
                                         "(experimental in the reference)."),
                io.Boolean.Input("normalize_lip", optional=True, default=d.normalize_lip,
                                 tooltip="Close the source mouth before animating (relative mode, no retargeting)."),
                io.Boolean.Input("source_video_eye_retargeting", optional=True, default=d.source_video_eye_retargeting,
                                 tooltip="Video source: set every frame's eye openness to the first frame's."),
                io.Float.Input("smooth_variance", optional=True, default=d.smooth_variance, min=0.0, max=0.01, step=1e-7,
                               round=1e-10,
                               tooltip="Video source driven by a video: Kalman smoothing of the motion (larger = "
                                       "smoother; 0 = none; reference 3e-7)."),
                io.Float.Input("target_eye_ratio", optional=True, default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Eye retargeting target openness; -1 = follow the driving motion's eyes."),
                io.Float.Input("target_lip_ratio", optional=True, default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Lip retargeting target openness; -1 = follow the driving motion's mouth."),
                io.Combo.Input("length_policy", optional=True, options=list(LENGTH_POLICIES), default=d.length_policy,
                               tooltip="Video source vs driving of different lengths: cut to the shorter (reference), "
                                       "loop, ping-pong or hold the last frame of the shorter one."),
                io.Float.Input("lip_normalize_threshold", optional=True, default=d.lip_normalize_threshold, min=0.0, max=1.0,
                               step=0.001, advanced=True,
                               tooltip="normalize_lip acts only when the source lip ratio is at least this (reference 0.03)."),
                io.Float.Input("source_video_eye_threshold", optional=True, default=d.source_video_eye_retargeting_threshold,
                               min=0.0, max=1.0, step=0.01, advanced=True,
                               tooltip="source_video_eye_retargeting: a first-frame eye ratio below this counts as "
                                       "closed and is replaced by 0.39 (reference 0.18)."),
            ],
            outputs=[LPKeypoints.Output(display_name="keypoints",
                                        tooltip="Source and driving keypoints per output frame (LP_KEYPOINTS) for Animate.")],
        )

    @classmethod
    def execute(cls, models, source_motion, driving_motion, relative_motion: bool = True,
                driving_option: str = "expression-friendly", driving_multiplier: float = 1.0,
                animation_region: str = "all", stitching: bool = True, eye_retargeting: bool = False,
                lip_retargeting: bool = False, normalize_lip: bool = False,
                source_video_eye_retargeting: bool = False, smooth_variance: float = 3e-7,
                target_eye_ratio: float = -1.0, target_lip_ratio: float = -1.0, length_policy: str = "cut",
                lip_normalize_threshold: float = 0.03, source_video_eye_threshold: float = 0.18) -> io.NodeOutput:
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
