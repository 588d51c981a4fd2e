"""LivePortraitExpressionEditor: a face edited by named controls (sliders) → LP_MOTION + IMAGE.

The sliders are ordinary FLOAT widgets (one per control of liveportrait_core.editing.CONTROLS,
in that order, after the node's other widgets, so controls added later append widgets). The
web extension (web/liveportrait_editor.js) shows a live preview on the node while they move,
through the routes of nodes/routes.py; a run renders through the same core function, so the
node's image is the preview's image.
"""
from __future__ import annotations

import dataclasses

from . import comfy as C
from . import memory, routes
from .comfy import io, ui
from .types import CATEGORY, LPFaces, LPModels, LPMotion

# Socket / option inputs before the sliders (widget order: face_index … precision, then controls).
_OPTION_DEFAULTS = dict(face_index=0, strength=1.0, frame_start=0, frame_end=-1, fade_in=0, fade_out=0,
                        stitching=True, precision="exact")


def control_inputs() -> list:
    """One FLOAT slider per control, in CONTROLS order (frozen: new controls go last)."""
    from ..liveportrait_core.editing.controls import CONTROLS

    out = []
    for c in CONTROLS.values():
        unit = f" ({c.unit})" if c.unit and c.unit not in ("ratio",) else ""
        out.append(io.Float.Input(
            c.name, display_name=f"{c.label}{unit}", default=float(c.neutral),
            min=float(c.minimum), max=float(c.maximum), step=float(c.step), round=float(c.step) / 10,
            display_mode=io.NumberDisplay.slider, tooltip=c.tooltip))
    return out


def select_items(faces, face_index: int):
    """Item indices of `faces` for `face_index` (a face id; -1 = every face), as a list."""
    from ..liveportrait_core.errors import InputError

    ids = faces.face_id.reshape(-1).tolist()
    if face_index < 0:
        return list(range(len(ids)))
    idx = [i for i, f in enumerate(ids) if int(f) == int(face_index)]
    if not idx:
        raise InputError(f"LivePortraitExpressionEditor: face_index {face_index} is not among the source faces "
                         f"(face ids {sorted(set(int(f) for f in ids))}); pick one of them, or -1 for every face.")
    return idx


def subset_faces(faces, idx: list):
    """The FaceCrops items `idx` (bookkeeping: every per-item field indexed)."""
    import torch

    t = torch.as_tensor(idx, dtype=torch.int64)
    per_item = {f.name: getattr(faces, f.name)[t] for f in dataclasses.fields(faces)
                if f.name in ("crops", "M_c2o", "landmarks", "frame_index", "face_id")
                and getattr(faces, f.name) is not None}
    return dataclasses.replace(faces, **per_item)


def first_item_per_face(motion) -> list[int]:
    """Index of the first item of every face of `motion`, in face order."""
    if motion.face_id is None:
        return [0]
    ids = motion.face_id.tolist()
    return [ids.index(f) for f in motion.faces()]


def anchored(edited, original):
    """The edited source face(s) with an anchor, so Retarget's relative mode gives source + edit:
    the unedited first item (single face; a several-face edit is meant as a source motion,
    where no anchor is used). A 1-item anchored driving motion is measured from its anchor."""
    if original.anchor is not None or len(original.faces()) != 1:
        return edited
    return dataclasses.replace(edited, anchor=dataclasses.replace(original.select([0]), anchor=None))


def edit_values(kwargs: dict) -> dict:
    """The control values among the node's inputs (every control; missing ones at neutral)."""
    from ..liveportrait_core.editing.controls import CONTROLS

    return {name: float(kwargs.get(name, c.neutral)) for name, c in CONTROLS.items()}


def frame_range(frame_start: int, frame_end: int, motion):
    """(start, end) for apply_controls, or None for the whole motion (0 … -1)."""
    from ..liveportrait_core.errors import InputError

    if frame_start == 0 and frame_end < 0:
        return None
    end = int(motion.frames().max()) + 1 if frame_end < 0 else int(frame_end)
    if end <= frame_start:
        raise InputError(f"LivePortraitExpressionEditor: frame_end ({frame_end}) must be after frame_start "
                         f"({frame_start}), or -1 for the last frame.")
    return (int(frame_start), end)


class LivePortraitExpressionEditor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = _OPTION_DEFAULTS
        return io.Schema(
            node_id="LivePortraitExpressionEditor",
            display_name="LivePortrait Expression Editor",
            category=CATEGORY,
            description=("Edits a face by hand: head pose, eyes, brows, mouth and more as sliders. The picture on "
                         "the node follows the sliders live (after one run, without queueing). Outputs the edited "
                         "motion (for Retarget / Animate like any other motion) and the edited 512×512 crop(s). "
                         "With a motion connected, the sliders edit every frame of it (within the frame range, "
                         "with fades) instead of the source face's own motion."),
            inputs=[
                LPModels.Input("models", tooltip="From Load LivePortrait Models."),
                LPFaces.Input("source_faces", tooltip="The face(s) to edit, from LivePortrait Crop Face."),
                LPMotion.Input("motion", optional=True,
                               tooltip="Optional motion to edit (e.g. a driving video's, or a source video's). "
                                       "Without it the source face's own motion is extracted and edited."),
                io.Int.Input("face_index", default=d["face_index"], min=-1, max=63,
                             tooltip="Which face of source_faces (its face id, 0 = the first); -1 = every face "
                                     "(a group photo: the same edit on everyone)."),
                io.Float.Input("strength", default=d["strength"], min=0.0, max=2.0, step=0.01,
                               tooltip="Scales every control (1 = as set, 0 = no edit)."),
                io.Int.Input("frame_start", default=d["frame_start"], min=0, max=1_000_000,
                             tooltip="With a motion of several frames: first frame edited."),
                io.Int.Input("frame_end", default=d["frame_end"], min=-1, max=1_000_000,
                             tooltip="With a motion of several frames: the edit stops before this frame "
                                     "(-1 = to the end)."),
                io.Int.Input("fade_in", default=d["fade_in"], min=0, max=10_000,
                             tooltip="Frames over which the edit ramps up at the start of the range."),
                io.Int.Input("fade_out", default=d["fade_out"], min=0, max=10_000,
                             tooltip="Frames over which the edit ramps down at the end of the range."),
                io.Boolean.Input("stitching", default=d["stitching"],
                                 tooltip="Stitching network on the edited keypoints of the picture (keeps the face "
                                         "fitting its surroundings; as Retarget does)."),
                io.Combo.Input("precision", options=["exact", "fast"], default=d["precision"],
                               tooltip="Rendering of the picture and of the live preview: exact (float32 as loaded) "
                                       "or fast (reduced precision / fast convolutions)."),
                *control_inputs(),
            ],
            outputs=[
                LPMotion.Output(display_name="motion",
                                tooltip="The edited motion: the source face's (or the connected motion's) with the "
                                        "controls applied; anchored, so Retarget's relative mode gives source + edit."),
                io.Image.Output(display_name="image", tooltip="The edited 512×512 crop, one per selected face."),
            ],
            hidden=[io.Hidden.unique_id],
            # an output node: ComfyUI then re-sends its ui (the preview id) when a run is cached,
            # so a freshly opened page gets the live preview without changing anything
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        # After /free emptied the preview cache, run again (re-registers the face for the preview).
        return routes.cache_epoch()

    @classmethod
    def execute(cls, models, source_faces, motion=None, face_index: int = 0, strength: float = 1.0,
                frame_start: int = 0, frame_end: int = -1, fade_in: int = 0, fade_out: int = 0,
                stitching: bool = True, precision: str = "exact", **controls) -> io.NodeOutput:
        import torch

        from ..liveportrait_core.editing.controls import apply_controls
        from ..liveportrait_core.editing.keyframes import apply_expression
        from ..liveportrait_core.extract import extract_motion

        values = edit_values(controls)
        idx = select_items(source_faces, face_index)
        faces = subset_faces(source_faces, idx)
        cache = routes.preview_cache()
        with memory.networks_loaded(models):
            src_motion = extract_motion(models, faces, fps=25.0)
            keys, images = [], []
            for k in first_item_per_face(src_motion):
                label = f"face {int(faces.face_id[k])}"
                key = cache.register(models, faces.crops[k], src_motion.select([k]), precision=precision,
                                     stitching=stitching, label=label)
                C.check_interrupt()
                images.append(cache.render(key, values, strength=strength))
                keys.append({"id": key, "label": label})
        if motion is not None:  # a driving / source video: anchored at its unedited first frame
            edited = apply_expression(motion, values, strength=strength,
                                      frame_range=frame_range(frame_start, frame_end, motion),
                                      fade_in=fade_in, fade_out=fade_out)
        else:
            edited = anchored(apply_controls(src_motion, values, strength=strength,
                                             frame_range=frame_range(frame_start, frame_end, src_motion),
                                             fade_in=fade_in, fade_out=fade_out), src_motion)
        image = torch.cat(images).to(C.intermediate_device())
        shown = ui.PreviewImage(image, cls=cls).as_dict()
        shown["lp_preview"] = keys  # the ids the live preview may ask for (web/liveportrait_editor.js)
        return io.NodeOutput(edited, image, ui=shown)
