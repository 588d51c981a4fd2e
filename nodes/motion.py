"""Motion nodes: extract (LP_FACES → LP_MOTION), retarget (→ LP_KEYPOINTS), load / save templates."""
from __future__ import annotations

import os

from . import comfy as C
from . import memory
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
                                progress=prog, cancel=C.check_interrupt)
        return io.NodeOutput(motion)


OUTPUT_TAG = " [output]"  # ComfyUI's annotated-name suffix for a file in the output folder


def _motion_files(root: str, recursive: bool) -> list[str]:
    """'/'-separated names of motion files under `root` (top level only unless `recursive`)."""
    from ..liveportrait_core.templates import LISTED_EXTENSIONS as TEMPLATE_EXTS

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


def _option_widget(spec):
    """The Retarget widget of one composition option (liveportrait_core.compose_options table)."""
    kw = dict(tooltip=spec.tooltip, default=spec.node_default, advanced=spec.advanced or None)
    if spec.kind == "bool":
        return io.Boolean.Input(spec.node_name, **kw)
    if spec.kind == "choice":
        return io.Combo.Input(spec.node_name, options=list(spec.choices), **kw)
    if spec.kind == "frame":
        return io.Int.Input(spec.node_name, min=int(spec.minimum), max=int(spec.maximum), step=int(spec.step), **kw)
    return io.Float.Input(spec.node_name, min=spec.minimum, max=spec.maximum, step=spec.step,
                          **({"round": spec.round} if spec.round is not None else {}), **kw)


class LivePortraitRetarget(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..liveportrait_core.compose_options import COMPOSE_OPTIONS

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
                LPMotion.Input("driving_motion", tooltip="Driving motion: Extract Motion on driving crops, Load Motion, "
                                                         "Keyframes or the Expression Editor."),
                # one widget per composition option, in the table's order (= the saved widget order)
                *(_option_widget(spec) for spec in COMPOSE_OPTIONS if spec.node_name),
            ],
            outputs=[LPKeypoints.Output(display_name="keypoints",
                                        tooltip="Source and driving keypoints per output frame (LP_KEYPOINTS) for Animate.")],
        )

    @classmethod
    def execute(cls, models, source_motion, driving_motion, **options) -> io.NodeOutput:
        from ..liveportrait_core.compose import compose
        from ..liveportrait_core.compose_options import options_from_node_values

        plan = compose(source_motion, driving_motion, models.stitching_retargeting, options_from_node_values(options))
        return io.NodeOutput(plan)
