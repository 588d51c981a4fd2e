"""Composition options: the `ComposeOptions` dataclass and one table describing every option
for the interfaces that expose them (the CLI's flags, the Retarget node's widgets).

`COMPOSE_OPTIONS` lists, per option, its ComposeOptions field, kind, default, range / step,
choices, help text (CLI) and tooltip (node), CLI flag and node widget name. The CLI builds its
composition flags from it and `options_from_node_values` turns the node's widget values into
ComposeOptions, so the option set is written once. Table order = the node's widget order
(frozen: saved workflows store widget values by position), new options go last.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .errors import InputError

REGIONS = ("all", "exp", "pose", "lip", "eyes")
DRIVING_OPTIONS = ("expression-friendly", "pose-friendly")
LENGTH_POLICIES = ("cut", "loop", "ping-pong", "hold")

RatioTarget = Union[None, float, Sequence[float], torch.Tensor]


@dataclass
class ComposeOptions:
    """Composition options (core names; the reference's flag in brackets; defaults = its CLI).

    relative_motion (flag_relative_motion): motion relative to the first driving frame (or to
        `anchor_frame`, or to the driving motion's anchor).
    stitching (flag_stitching): apply the stitching MLP (skipped when no MLP weights).
    eye_retargeting / lip_retargeting (flag_eye/lip_retargeting): drive eye / lip openness with
        the retargeting MLPs from the driving ratios (in relative mode this replaces the
        driving motion by the source plus the deltas, as the reference does).
    normalize_lip (flag_normalize_lip): close the source mouth first (relative mode only).
    source_video_eye_retargeting (flag_source_video_eye_retargeting): video source: every
        frame's eye openness set to frame 0's.
    driving_option: 'expression-friendly' | 'pose-friendly'.
    driving_multiplier: scales x_d − x_s of every frame.
    animation_region: 'all' | 'exp' | 'pose' | 'lip' | 'eyes'.
    smooth_variance (driving_smooth_observation_variance): Kalman observation variance for a
        video source driven by a video (larger = smoother; 0 = no smoothing).
    target_eye_ratio / target_lip_ratio: None = the driving motion's ratios; else a constant
        (or one value per driving frame) used as the retargeting target instead.
    length_policy: video source vs driving video of different lengths: 'cut' (the reference:
        min of both), 'loop', 'ping-pong' (back and forth) or 'hold' (last frame held) extend
        the shorter one to the longer one's length.
    lip_normalize_threshold / source_video_eye_retargeting_threshold: the reference's constants.
    anchor_frame: relative mode: the driving frame whose pose and expression count as neutral
        (the source's own face) instead of frame 0; None = the driving motion's anchor when it
        has one (Motion.anchor), else frame 0. It overrides the motion's anchor.
    """

    relative_motion: bool = True
    stitching: bool = True
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    normalize_lip: bool = False
    source_video_eye_retargeting: bool = False
    driving_option: str = "expression-friendly"
    driving_multiplier: float = 1.0
    animation_region: str = "all"
    smooth_variance: float = 3e-7
    target_eye_ratio: RatioTarget = None
    target_lip_ratio: RatioTarget = None
    length_policy: str = "cut"
    lip_normalize_threshold: float = 0.03
    source_video_eye_retargeting_threshold: float = 0.18
    anchor_frame: Optional[int] = None

    def validate(self) -> None:
        """Raise InputError naming the first bad option."""
        def choice(name, allowed):
            v = getattr(self, name)
            if v not in allowed:
                raise InputError(f"option {name} must be one of {list(allowed)}, got {v!r}.")
        choice("animation_region", REGIONS)
        choice("driving_option", DRIVING_OPTIONS)
        choice("length_policy", LENGTH_POLICIES)
        for name in ("driving_multiplier", "smooth_variance", "lip_normalize_threshold",
                     "source_video_eye_retargeting_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"option {name} must be a finite number, got {v!r}.")
        if self.smooth_variance < 0:
            raise InputError(f"option smooth_variance must be ≥ 0, got {self.smooth_variance}.")
        for name in ("relative_motion", "stitching", "eye_retargeting", "lip_retargeting", "normalize_lip",
                     "source_video_eye_retargeting"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InputError(f"option {name} must be True or False, got {getattr(self, name)!r}.")
        for name in ("target_eye_ratio", "target_lip_ratio"):
            v = getattr(self, name)
            if v is not None:
                arr = np.asarray(v, dtype=np.float64) if not isinstance(v, torch.Tensor) else v.double().numpy()
                if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                    raise InputError(f"option {name} must be None or ratios ≥ 0, got {v!r}.")
        a = self.anchor_frame
        if a is not None and (isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or a < 0):
            raise InputError(f"option anchor_frame must be None or a driving frame number ≥ 0, got {a!r}.")


@dataclass(frozen=True)
class OptionSpec:
    """How one ComposeOptions field appears in the interfaces.

    field: the ComposeOptions field. kind: "bool" | "choice" | "float" | "ratio" (a float or
    None; the node encodes None as `none_as`) | "frame" (an int or None, likewise).
    default: the ComposeOptions default. choices: allowed values of a "choice".
    minimum / maximum / step / round: the node widget's range (None: no widget range).
    help: CLI help text; tooltip: node tooltip. cli_flag: the CLI flag (None: not in the CLI);
    cli_action: "store_true" / "store_false" for booleans. metavar: CLI placeholder.
    node_name: the Retarget node's widget name (None: not on the node). advanced: an
    advanced widget (hidden by default). none_as: the node's value meaning None.
    """

    field: str
    kind: str
    help: str
    tooltip: str
    cli_flag: Optional[str] = None
    cli_action: Optional[str] = None
    metavar: Optional[str] = None
    node_name: Optional[str] = None
    choices: tuple = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    round: Optional[float] = None
    advanced: bool = False
    none_as: Optional[float] = None

    @property
    def default(self) -> Any:
        return ComposeOptions.__dataclass_fields__[self.field].default

    @property
    def node_default(self) -> Any:
        """The widget default: the ComposeOptions default, None encoded as `none_as`."""
        d = self.default
        return self.none_as if d is None else d


def _spec(field: str, kind: str, help: str, tooltip: str, **kw) -> OptionSpec:
    kw.setdefault("node_name", field)
    return OptionSpec(field, kind, help, tooltip, **kw)


#: Every composition option, in the Retarget node's widget order.
COMPOSE_OPTIONS: tuple[OptionSpec, ...] = (
    _spec("relative_motion", "bool",
          "absolute driving motion instead of motion relative to the first driving frame [flag_relative_motion=False]",
          "Apply the driving motion relative to its first frame (keeps the source's own pose and expression as "
          "the start). Off = absolute: copy the driving pose/expression.",
          cli_flag="--absolute", cli_action="store_false"),
    _spec("driving_option", "choice", "expression-friendly (default) or pose-friendly [driving_option]",
          "expression-friendly or pose-friendly (reference option; only matters for an image source driven by "
          "a video in relative mode).",
          cli_flag="--driving-option", choices=DRIVING_OPTIONS),
    _spec("driving_multiplier", "float", "scale the driving motion (default 1.0) [driving_multiplier]",
          "Scales how far the keypoints move (1 = as driven; <1 calmer, >1 stronger).",
          cli_flag="--driving-multiplier", metavar="X", minimum=0.0, maximum=3.0, step=0.01),
    _spec("animation_region", "choice", "which part of the motion to transfer (default: all) [animation_region]",
          "What the driving motion moves: all, exp (expression only), pose (head only), lip, or eyes.",
          cli_flag="--animation-region", choices=REGIONS),
    _spec("stitching", "bool", "do not apply the stitching network [flag_stitching=False]",
          "Use the stitching MLP so the face fits back seamlessly (recommended; needs "
          "stitching_retargeting_module in the weights).",
          cli_flag="--no-stitching", cli_action="store_false"),
    _spec("eye_retargeting", "bool", "drive eye openness with the eye-retargeting network [flag_eye_retargeting]",
          "Drive eye openness with the eye-retargeting MLP from the driving eye ratios (experimental in the "
          "reference).",
          cli_flag="--eye-retargeting", cli_action="store_true"),
    _spec("lip_retargeting", "bool", "drive lip openness with the lip-retargeting network [flag_lip_retargeting]",
          "Drive mouth openness with the lip-retargeting MLP from the driving lip ratio (experimental in the "
          "reference).",
          cli_flag="--lip-retargeting", cli_action="store_true"),
    _spec("normalize_lip", "bool", "close the source mouth before animating (relative mode) [flag_normalize_lip]",
          "Close the source mouth before animating (relative mode, no retargeting).",
          cli_flag="--normalize-lip", cli_action="store_true"),
    _spec("source_video_eye_retargeting", "bool",
          "video source: set every frame's eye openness to the first frame's [flag_source_video_eye_retargeting]",
          "Video source: set every frame's eye openness to the first frame's.",
          cli_flag="--source-video-eye-retargeting", cli_action="store_true"),
    _spec("smooth_variance", "float",
          "video source: Kalman observation variance, larger = smoother (default 3e-7) "
          "[driving_smooth_observation_variance]",
          "Video source driven by a video: Kalman smoothing of the motion (larger = smoother; 0 = none; "
          "reference 3e-7).",
          cli_flag="--smooth-variance", metavar="V", minimum=0.0, maximum=0.01, step=1e-7, round=1e-10),
    _spec("target_eye_ratio", "ratio", "with --eye-retargeting: a fixed eye-open ratio instead of the driving's",
          "Eye retargeting target openness; -1 = follow the driving motion's eyes.",
          cli_flag="--target-eye-ratio", metavar="R", minimum=-1.0, maximum=1.0, step=0.01, none_as=-1.0),
    _spec("target_lip_ratio", "ratio", "with --lip-retargeting: a fixed lip-open ratio instead of the driving's",
          "Lip retargeting target openness; -1 = follow the driving motion's mouth.",
          cli_flag="--target-lip-ratio", metavar="R", minimum=-1.0, maximum=1.0, step=0.01, none_as=-1.0),
    _spec("length_policy", "choice",
          "video source vs driving video of different lengths: cut to the shorter (reference), or loop / "
          "ping-pong / hold the shorter one (default: cut)",
          "Video source vs driving of different lengths: cut to the shorter (reference), loop, ping-pong or "
          "hold the last frame of the shorter one.",
          cli_flag="--length-policy", choices=LENGTH_POLICIES),
    _spec("lip_normalize_threshold", "float", "normalize_lip acts only when the source lip ratio is at least this",
          "normalize_lip acts only when the source lip ratio is at least this (reference 0.03).",
          minimum=0.0, maximum=1.0, step=0.001, advanced=True),
    _spec("source_video_eye_retargeting_threshold", "float",
          "source-video eye retargeting: a first-frame eye ratio below this counts as closed",
          "source_video_eye_retargeting: a first-frame eye ratio below this counts as closed and is replaced "
          "by 0.39 (reference 0.18).",
          node_name="source_video_eye_threshold", minimum=0.0, maximum=1.0, step=0.01, advanced=True),
    _spec("anchor_frame", "frame",
          "relative mode: the driving frame that counts as neutral instead of the first one "
          "(default: the motion's anchor if it has one, else frame 0)",
          "Relative mode: the driving frame whose pose and expression count as neutral (the source's own face). "
          "-1 = the driving motion's own anchor if it has one (e.g. from the Expression Editor), else frame 0.",
          cli_flag="--anchor-frame", metavar="N", minimum=-1, maximum=1_000_000, step=1, none_as=-1),
)

OPTION_BY_FIELD = {s.field: s for s in COMPOSE_OPTIONS}


def options_from_node_values(values: Mapping[str, Any]) -> ComposeOptions:
    """ComposeOptions from widget values keyed by node name (missing ones take their
    defaults); a negative ratio / frame (the node's −1) means None."""
    by_node = {s.node_name: s for s in COMPOSE_OPTIONS if s.node_name}
    unknown = [k for k in values if k not in by_node]
    if unknown:
        raise InputError(f"unknown composition option(s) {unknown}; known: {list(by_node)}.")
    kw = {}
    for name, v in values.items():
        s = by_node[name]
        if s.kind in ("ratio", "frame") and v is not None and not isinstance(v, bool) \
                and isinstance(v, (int, float)) and v < 0:
            v = None
        elif s.kind == "frame" and isinstance(v, float) and v.is_integer():
            v = int(v)
        kw[s.field] = v
    o = ComposeOptions(**kw)
    o.validate()
    return o
