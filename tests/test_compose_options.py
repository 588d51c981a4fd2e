"""The composition option table: it covers ComposeOptions, it is exactly today's Retarget node
widgets (names, order, defaults, ranges, tooltips; new options last) and the CLI's flags."""
from __future__ import annotations

import dataclasses

import pytest

from liveportrait_core.cli import build_parser, compose_options_from_args
from liveportrait_core.compose_options import COMPOSE_OPTIONS, ComposeOptions, options_from_node_values
from liveportrait_core.errors import InputError
from nodes_testing import pack  # noqa: F401

# today's CLI composition flags: flag → (ComposeOptions field, default, value given on the command line
# → expected field value)
CLI = {"--absolute": ("relative_motion", True, None, False), "--no-stitching": ("stitching", True, None, False),
       "--eye-retargeting": ("eye_retargeting", False, None, True),
       "--lip-retargeting": ("lip_retargeting", False, None, True),
       "--normalize-lip": ("normalize_lip", False, None, True),
       "--source-video-eye-retargeting": ("source_video_eye_retargeting", False, None, True),
       "--driving-option": ("driving_option", "expression-friendly", "pose-friendly", "pose-friendly"),
       "--driving-multiplier": ("driving_multiplier", 1.0, "1.5", 1.5),
       "--animation-region": ("animation_region", "all", "lip", "lip"),
       "--smooth-variance": ("smooth_variance", 3e-7, "1e-5", 1e-5),
       "--target-eye-ratio": ("target_eye_ratio", None, "0.3", 0.3),
       "--target-lip-ratio": ("target_lip_ratio", None, "0.2", 0.2),
       "--length-policy": ("length_policy", "cut", "hold", "hold"),
       "--anchor-frame": ("anchor_frame", None, "3", 3)}
BASE = ["animate", "-s", "a.png", "-d", "b.mp4", "-o", "c.mp4"]


def test_table_covers_every_option_once_anchor_frame_last():
    fields = [f.name for f in dataclasses.fields(ComposeOptions)]
    assert sorted(s.field for s in COMPOSE_OPTIONS) == sorted(fields)
    assert COMPOSE_OPTIONS[-1].field == "anchor_frame" and COMPOSE_OPTIONS[-1].node_default == -1
    names = [s.node_name for s in COMPOSE_OPTIONS]
    assert len(set(names)) == len(names)
    for s in COMPOSE_OPTIONS:
        assert s.kind in ("bool", "choice", "float", "ratio", "frame") and s.help and s.tooltip
        assert s.default == getattr(ComposeOptions(), s.field)
        if s.kind == "choice":
            assert s.default in s.choices


def test_retarget_node_widgets_are_the_table(pack):  # noqa: F811
    schema = pack[1]["LivePortraitRetarget"].GET_SCHEMA()
    widgets = schema.inputs[3:]
    kinds = {"bool": "BOOLEAN", "choice": "COMBO", "float": "FLOAT", "ratio": "FLOAT", "frame": "INT"}
    assert len(widgets) >= len(COMPOSE_OPTIONS) - 1  # anchor_frame is new: the node may not have it yet
    for w, s in zip(widgets, COMPOSE_OPTIONS):
        assert w.id == s.node_name, (w.id, s.node_name)
        assert w.get_io_type() == kinds[s.kind], w.id
        assert w.default == s.node_default and w.tooltip == s.tooltip, w.id
        assert bool(w.advanced) == s.advanced, w.id
        if s.kind == "choice":
            assert list(w.options) == list(s.choices), w.id
        elif s.kind != "bool":
            assert (w.min, w.max, w.step) == (s.minimum, s.maximum, s.step), w.id
            assert getattr(w, "round", None) == s.round, w.id
    assert len(widgets) <= len(COMPOSE_OPTIONS)


def test_node_values_to_options():
    defaults = {s.node_name: s.node_default for s in COMPOSE_OPTIONS}
    assert options_from_node_values(defaults) == ComposeOptions()
    assert options_from_node_values({}) == ComposeOptions()
    o = options_from_node_values({"target_eye_ratio": 0.3, "target_lip_ratio": -0.5, "anchor_frame": 4,
                                  "source_video_eye_threshold": 0.2, "relative_motion": False})
    assert (o.target_eye_ratio, o.target_lip_ratio, o.anchor_frame) == (0.3, None, 4)
    assert o.source_video_eye_retargeting_threshold == 0.2 and o.relative_motion is False
    assert options_from_node_values({"anchor_frame": 2.0}).anchor_frame == 2
    with pytest.raises(InputError, match="source_video_eye_retargeting_threshold"):
        options_from_node_values({"source_video_eye_retargeting_threshold": 0.2})  # field name, not widget
    with pytest.raises(InputError, match="animation_region"):
        options_from_node_values({"animation_region": "face"})


def test_cli_flags_and_defaults_are_unchanged():
    args = build_parser().parse_args(BASE)
    assert compose_options_from_args(args) == ComposeOptions()
    for flag, (field, default, given, want) in CLI.items():
        assert getattr(args, field) == default, flag
        argv = BASE + ([flag] if given is None else [flag, given])
        o = compose_options_from_args(build_parser().parse_args(argv))
        assert getattr(o, field) == want, flag
        assert o == dataclasses.replace(ComposeOptions(), **{field: want}), flag
    cli_flags = {s.cli_flag for s in COMPOSE_OPTIONS if s.cli_flag}
    assert cli_flags == set(CLI)
