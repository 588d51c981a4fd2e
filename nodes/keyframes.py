"""Keyframed and audio-reactive motion without a driving video, and edits over a frame range.

- LivePortraitKeyframes: a keyframe sequence (JSON in a multiline STRING, edited by the timeline
  of web/liveportrait_timeline.js) + fps / duration / loop / blink / strength, optionally an
  AUDIO whose loudness drives chosen controls → a driving LP_MOTION relative to the neutral face
  (frame values 0 = the source face exactly, in Retarget's relative mode).
- LivePortraitApplyExpression: an existing LP_MOTION + control values (or a preset) and/or a
  sequence over a frame range with fades → LP_MOTION. Every face of a motion gets the edit.
"""
from __future__ import annotations

import dataclasses
import json

from . import comfy as C
from . import memory, routes
from .comfy import io
from .types import CATEGORY, LPFaces, LPModels, LPMotion

DEFAULT_SEQUENCE = json.dumps({
    "format": "liveportrait-keyframes", "version": 1, "fps": 12.0, "duration": None, "loop": "hold",
    "blink": None, "strength": 1.0,
    "keys": [
        {"time": 0.0, "easing": "linear", "values": {"smile": 0.0, "head_yaw": 0.0}},
        {"time": 1.0, "easing": "ease-in-out", "values": {"smile": 0.8}},
        {"time": 2.0, "easing": "smooth", "values": {"head_yaw": 12.0, "smile": 0.4}},
    ]}, indent=1)


def parse_control_list(text: str, where: str) -> dict[str, float]:
    """'lips_open=120, eyebrow=10' (or a preset / controls JSON object) → {name: value}.
    Names and ranges are checked by the core (`validate_controls`)."""
    from ..liveportrait_core.editing.controls import validate_controls
    from ..liveportrait_core.errors import InputError

    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        from ..liveportrait_core.editing.presets import preset_from_json

        try:
            return dict(preset_from_json(text, where))
        except InputError:
            try:
                data = json.loads(text)
            except ValueError:
                raise InputError(f"{where}: not valid JSON; write 'name=value, …' or a preset JSON.") from None
            if not isinstance(data, dict) or "format" in data:
                raise
            values = data
    else:
        values = {}
        for part in text.replace(";", ",").replace("\n", ",").split(","):
            part = part.strip()
            if not part:
                continue
            name, eq, num = part.partition("=")
            if not eq:
                raise InputError(f"{where}: '{part}' is not 'name=value' (e.g. lips_open=120, eyebrow=10).")
            try:
                values[name.strip()] = float(num)
            except ValueError:
                raise InputError(f"{where}: '{num.strip()}' after '{name.strip()}=' is not a number.") from None
    return {k: float(v) for k, v in validate_controls(values, where).items()}


def build_sequence(text: str, fps: float, duration: float, loop: str, blink_interval: float,
                   blink_duration: float, blink_seed: int, strength: float, where: str):
    """The node's sequence: the JSON's keys with the node's fps / duration / loop / blink /
    strength (the widgets win over the same fields of the JSON; 0 duration = until the last key)."""
    from ..liveportrait_core.editing.keyframes import BlinkOptions, sequence_from_json, validate_sequence

    seq = sequence_from_json(text if (text or "").strip() else '{"keys": []}', where)
    seq = dataclasses.replace(
        seq, fps=float(fps), duration=float(duration) if duration > 0 else None, loop=loop,
        blink=dataclasses.replace(seq.blink, interval=float(blink_interval), duration=float(blink_duration),
                                  seed=int(blink_seed)) if blink_interval > 0 else BlinkOptions(),
        strength=float(strength))
    validate_sequence(seq, where)
    return seq


def register_preview(models, faces) -> list:
    """Register the first face of `faces` for the timeline's scrub preview (exact precision, stitching)."""
    from ..liveportrait_core.extract import extract_motion

    cache = routes.preview_cache()
    with memory.networks_loaded(models):
        one = dataclasses.replace(faces, **{k: getattr(faces, k)[:1] for k in
                                            ("crops", "M_c2o", "landmarks", "frame_index", "face_id")
                                            if getattr(faces, k) is not None})
        motion = extract_motion(models, one, fps=25.0)
        key = cache.register(models, one.crops[0], motion, precision="exact", stitching=True,
                             label=f"face {int(one.face_id[0])}")
    return [{"id": key, "label": f"face {int(one.face_id[0])}"}]


class LivePortraitKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..liveportrait_core.editing.keyframes import LOOP_MODES

        return io.Schema(
            node_id="LivePortraitKeyframes",
            display_name="LivePortrait Keyframes",
            category=CATEGORY,
            description=("Animates a face without a driving video: expression controls (smile, blink, head turn …) "
                         "keyed over time on a timeline, with easing, loop, automatic blinks, and optionally the "
                         "loudness of an audio clip driving chosen controls (e.g. the lips). Outputs a driving "
                         "motion for Retarget (relative mode: values 0 = the source face)."),
            inputs=[
                io.String.Input("sequence", multiline=True, default=DEFAULT_SEQUENCE,
                                tooltip="The keyframe sequence (JSON, edited by the timeline below): keys with a "
                                        "time in seconds, control values and the easing into the key. fps, "
                                        "duration, loop, blink and strength come from the widgets below."),
                io.Float.Input("fps", default=12.0, min=1.0, max=120.0, step=0.5,
                               tooltip="Frames per second of the motion (use the same in Create Video)."),
                io.Float.Input("duration", default=0.0, min=0.0, max=600.0, step=0.1,
                               tooltip="Length in seconds; 0 = until the last key (or the audio's length when "
                                       "audio is connected and longer)."),
                io.Combo.Input("loop", options=list(LOOP_MODES), default="hold",
                               tooltip="After the last key: hold it, loop from the start, or ping-pong."),
                io.Float.Input("blink_interval", default=0.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Automatic blinks: mean seconds between blinks (0 = off)."),
                io.Float.Input("blink_duration", default=0.2, min=0.05, max=2.0, step=0.01,
                               tooltip="Seconds one automatic blink takes (at most half the interval)."),
                io.Int.Input("blink_seed", default=0, min=0, max=2 ** 31 - 1,
                             tooltip="Seed of the automatic blink times (same seed, same blinks)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scales every control of the sequence and the audio (1 = as keyed)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Optional audio (Load Audio): its loudness drives the controls named in "
                                       "audio_controls, frame by frame at this fps."),
                io.String.Input("audio_controls", default="lips_open=120",
                                tooltip="Controls the audio drives and their value at full loudness, e.g. "
                                        "'lips_open=120, eyebrow=10' (added to the keyed values)."),
                io.Float.Input("attack_ms", default=10.0, min=0.0, max=2000.0, step=1.0,
                               tooltip="Envelope rise time in milliseconds (smaller = snappier onsets)."),
                io.Float.Input("release_ms", default=80.0, min=0.0, max=5000.0, step=1.0,
                               tooltip="Envelope fall time in milliseconds (larger = the mouth closes slower)."),
                io.Float.Input("threshold", default=0.02, min=0.0, max=1.0, step=0.005,
                               tooltip="Loudness (RMS) below which the audio drives nothing (noise gate)."),
                io.Float.Input("gain", default=4.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Multiplier of the loudness above the threshold; the envelope is "
                                       "clamped to 0..1."),
                LPModels.Input("preview_models", optional=True,
                               tooltip="Optional, for the timeline's live preview only: the models …"),
                LPFaces.Input("preview_faces", optional=True,
                              tooltip="… and the source face shown while scrubbing the timeline (after one run)."),
            ],
            outputs=[LPMotion.Output(display_name="motion",
                                     tooltip="Driving motion, one item per frame, relative to the neutral face.")],
            hidden=[io.Hidden.unique_id],
            # an output node: ComfyUI then re-sends its ui (the preview id) when a run is cached,
            # so a freshly opened page gets the live preview without changing anything
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return routes.cache_epoch() if kwargs.get("preview_faces") is not None else 0

    @classmethod
    def execute(cls, sequence: str, fps: float = 12.0, duration: float = 0.0, loop: str = "hold",
                blink_interval: float = 0.0, blink_duration: float = 0.2, blink_seed: int = 0,
                strength: float = 1.0, audio=None, audio_controls: str = "lips_open=120",
                attack_ms: float = 10.0, release_ms: float = 80.0, threshold: float = 0.02, gain: float = 4.0,
                preview_models=None, preview_faces=None) -> io.NodeOutput:
        import math

        from ..liveportrait_core.editing.audio import audio_controls as envelope_controls
        from ..liveportrait_core.editing.audio import audio_envelope_from_dict
        from ..liveportrait_core.editing.controls import apply_controls
        from ..liveportrait_core.editing.keyframes import frame_count, sequence_values
        from ..liveportrait_core.editing.mix import mix_values
        from ..liveportrait_core.motion import neutral_motion

        where = "LivePortraitKeyframes: sequence"
        seq = build_sequence(sequence, fps, duration, loop, blink_interval, blink_duration, blink_seed,
                             strength, where)
        n = frame_count(seq)
        parts = []
        if audio is not None:
            targets = parse_control_list(audio_controls, "LivePortraitKeyframes: audio_controls")
            if duration <= 0:
                s = audio["waveform"].shape[-1]
                n = max(n, max(1, math.ceil(s * float(fps) / float(audio["sample_rate"]) - 1e-9)))
            env = audio_envelope_from_dict(audio, float(fps), n, attack_ms=attack_ms, release_ms=release_ms,
                                           threshold=threshold, gain=gain)
            parts = [envelope_controls(env, targets)] if targets else []
        values = mix_values([sequence_values(seq, n_frames=n), *parts], n)
        motion = apply_controls(neutral_motion(n, float(fps)), values, strength=float(strength))
        ui = None
        if preview_models is not None and preview_faces is not None:
            ui = {"lp_preview": register_preview(preview_models, preview_faces)}
        return io.NodeOutput(motion, ui=ui)


class LivePortraitApplyExpression(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitApplyExpression",
            display_name="LivePortrait Apply Expression",
            category=CATEGORY,
            description=("Changes the expression of an existing motion (a driving video's or a source video's) "
                         "between two frames: fixed control values (or a preset) and/or a keyframe sequence, "
                         "faded in and out. Every face of the motion gets the edit."),
            inputs=[
                LPMotion.Input("motion", tooltip="The motion to edit (Extract Motion, Load Motion, Keyframes …)."),
                io.String.Input("controls", default="",
                                tooltip="Control values, e.g. 'smile=0.8, head_yaw=10', or an expression preset "
                                        "JSON (saved by the editor); empty = none."),
                io.String.Input("sequence", multiline=True, default="",
                                tooltip="Optional keyframe sequence JSON; its time 0 is frame_start, timed at the "
                                        "motion's fps; applied before the controls."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scales the edit (1 = as given)."),
                io.Int.Input("frame_start", default=0, min=0, max=1_000_000,
                             tooltip="First frame edited."),
                io.Int.Input("frame_end", default=-1, min=-1, max=1_000_000,
                             tooltip="The edit stops before this frame (-1 = to the end)."),
                io.Int.Input("fade_in", default=0, min=0, max=10_000,
                             tooltip="Frames over which the edit ramps up at the start of the range."),
                io.Int.Input("fade_out", default=0, min=0, max=10_000,
                             tooltip="Frames over which the edit ramps down at the end of the range."),
            ],
            outputs=[LPMotion.Output(display_name="motion", tooltip="The edited motion (LP_MOTION).")],
        )

    @classmethod
    def execute(cls, motion, controls: str = "", sequence: str = "", strength: float = 1.0,
                frame_start: int = 0, frame_end: int = -1, fade_in: int = 0, fade_out: int = 0) -> io.NodeOutput:
        from ..liveportrait_core.editing.keyframes import apply_expression, apply_sequence, sequence_from_json
        from ..liveportrait_core.errors import InputError

        end = int(motion.frames().max()) + 1 if frame_end < 0 else int(frame_end)
        if end <= frame_start:
            raise InputError(f"LivePortraitApplyExpression: frame_end ({frame_end}) must be after frame_start "
                             f"({frame_start}), or -1 for the last frame.")
        rng = None if (frame_start == 0 and frame_end < 0) else (int(frame_start), end)
        out = motion
        if (sequence or "").strip():
            seq = sequence_from_json(sequence, "LivePortraitApplyExpression: sequence")
            seq = dataclasses.replace(seq, strength=float(seq.strength) * float(strength))
            out = apply_sequence(out, seq, frame_range=rng, fade_in=fade_in, fade_out=fade_out)
        values = parse_control_list(controls, "LivePortraitApplyExpression: controls")
        if values:
            edited = apply_expression(out, values, strength=float(strength), frame_range=rng,
                                      fade_in=fade_in, fade_out=fade_out)
            if out is not motion and out.anchor is not None and edited.anchor is None:
                edited = dataclasses.replace(edited, anchor=out.anchor)
            out = edited
        return io.NodeOutput(out)
