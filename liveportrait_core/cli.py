"""Command line: `python -m liveportrait_core animate …`, `… extract-motion …`, `… download-weights …`.

`animate --driving` takes a video, image, image folder, motion template or keyframe sequence
(`*.keyframes.json`, see docs/MOTION.md "Keyframes"); `--expression preset.json` applies an
expression preset on top of any driving.

Every user error ends with one line on stderr ("error: …") and exit code 2 (bad arguments)
or 1 (bad input files / weights / no face); nothing is left at the output path.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

DEFAULT_WEIGHTS = os.environ.get("LIVEPORTRAIT_WEIGHTS", "pretrained_weights")
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) with exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected an open ratio in 0..1, got {v}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {v}")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and compute")
    g.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="DIR",
                   help="LivePortrait weights folder: the reference layout (liveportrait/base_models/*.pth, "
                        "retargeting_models/, landmark.onnx) or flat .safetensors files "
                        f"(default: $LIVEPORTRAIT_WEIGHTS or ./pretrained_weights, now {DEFAULT_WEIGHTS!r})")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    g.add_argument("--batch-size", type=_positive_int, default=4, metavar="N",
                   help="frames per network batch; larger is faster on GPUs and needs more memory (default: 4; "
                        "also the fastest for --precision fast on CPU; exact mode on CPU renders frames one "
                        "at a time whatever it is)")
    g.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                   help="use at most N frames of the driving (and source) video")
    f = p.add_argument_group("faces")
    f.add_argument("--no-crop", action="store_true",
                   help="inputs already are face crops: use whole frames (resized to 256) and output the "
                        "512x512 animated crops (no face detection, no paste-back)")
    f.add_argument("--detector", default="offline", choices=["offline", "insightface", "yunet", "opencv-haar", "dlib-hog"],
                   help="face detector: offline (no download, OpenCV/dlib), insightface (reference quality, "
                        "non-commercial licence, needs its models), yunet (default: offline)")
    f.add_argument("--detector-dir", default=None, metavar="DIR", help="folder of the detector's model files")
    f.add_argument("--crop-driving", dest="crop_driving", action="store_true", default=None,
                   help="auto-crop the driving video to the face (default: only when it is not square)")
    f.add_argument("--no-crop-driving", dest="crop_driving", action="store_false",
                   help="never crop the driving video (it is only resized to 256)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m liveportrait_core",
                     description="LivePortrait without ComfyUI: animate a portrait with a driving video, "
                                 "image or motion template, or save a driving video's motion as a template.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser("animate", help="animate a source portrait",
                       description="Animate SOURCE (image, video or folder of images) with DRIVING (video, image, "
                                   "folder or motion template) and write OUTPUT (.mp4, or .png/.jpg for one frame).")
    a.add_argument("--source", "-s", required=True, metavar="IMAGE|VIDEO", help="source portrait: image, video or image folder")
    a.add_argument("--driving", "-d", required=True, metavar="VIDEO|IMAGE|TEMPLATE|SEQUENCE",
                   help="driving video, image, image folder, motion template (.pkl / .lpmotion.safetensors) "
                        "or keyframe sequence (.keyframes.json: expressions on a timeline, no video needed)")
    a.add_argument("--output", "-o", required=True, metavar="OUT.mp4",
                   help="output video (.mp4) or image (.png/.jpg, only when the result is one frame)")
    a.add_argument("--precision", choices=["exact", "fast"], default="exact",
                   help="exact: float32, as the reference; fast: float16 on CUDA, bfloat16 on CPUs with "
                        "native bf16, else float32 with NNPACK Winograd/FFT convolutions; faster, visually "
                        "identical (default: exact)")
    _common(a)
    c = a.add_argument_group("composition (reference flag in brackets)")
    c.add_argument("--absolute", dest="relative_motion", action="store_false",
                   help="absolute driving motion instead of motion relative to the first driving frame "
                        "[flag_relative_motion=False]")
    c.add_argument("--no-stitching", dest="stitching", action="store_false",
                   help="do not apply the stitching network [flag_stitching=False]")
    c.add_argument("--eye-retargeting", action="store_true",
                   help="drive eye openness with the eye-retargeting network [flag_eye_retargeting]")
    c.add_argument("--lip-retargeting", action="store_true",
                   help="drive lip openness with the lip-retargeting network [flag_lip_retargeting]")
    c.add_argument("--normalize-lip", action="store_true",
                   help="close the source mouth before animating (relative mode) [flag_normalize_lip]")
    c.add_argument("--source-video-eye-retargeting", action="store_true",
                   help="video source: set every frame's eye openness to the first frame's "
                        "[flag_source_video_eye_retargeting]")
    c.add_argument("--driving-option", choices=["expression-friendly", "pose-friendly"], default="expression-friendly",
                   help="expression-friendly (default) or pose-friendly [driving_option]")
    c.add_argument("--driving-multiplier", type=float, default=1.0, metavar="X",
                   help="scale the driving motion (default 1.0) [driving_multiplier]")
    c.add_argument("--animation-region", choices=["all", "exp", "pose", "lip", "eyes"], default="all",
                   help="which part of the motion to transfer (default: all) [animation_region]")
    c.add_argument("--smooth-variance", type=float, default=3e-7, metavar="V",
                   help="video source: Kalman observation variance, larger = smoother (default 3e-7) "
                        "[driving_smooth_observation_variance]")
    c.add_argument("--target-eye-ratio", type=_ratio, default=None, metavar="R",
                   help="with --eye-retargeting: a fixed eye-open ratio instead of the driving's")
    c.add_argument("--target-lip-ratio", type=_ratio, default=None, metavar="R",
                   help="with --lip-retargeting: a fixed lip-open ratio instead of the driving's")
    c.add_argument("--expression", default=None, metavar="PRESET.json",
                   help="expression preset (the Expression Editor's JSON) added to every driving frame")
    c.add_argument("--expression-strength", type=float, default=1.0, metavar="X",
                   help="scale of --expression (default 1.0; 0 = off)")
    c.add_argument("--length-policy", choices=["cut", "loop", "ping-pong", "hold"], default="cut",
                   help="video source vs driving video of different lengths: cut to the shorter (reference), "
                        "or loop / ping-pong / hold the shorter one (default: cut)")
    o = a.add_argument_group("output")
    o.add_argument("--no-paste-back", dest="paste_back", action="store_false",
                   help="write the 512x512 animated face crops instead of pasting them into the source")
    o.add_argument("--no-audio", dest="keep_audio", action="store_false",
                   help="do not copy the driving video's audio into the output")

    e = sub.add_parser("extract-motion", help="save a driving video's motion as a template",
                       description="Extract the motion of DRIVING (video, image or folder) and save it as a "
                                   "template: .pkl (readable by the reference tool) or .lpmotion.safetensors (ours).")
    e.add_argument("--driving", "-d", required=True, metavar="VIDEO", help="driving video, image or image folder")
    e.add_argument("--output", "-o", required=True, metavar="T.pkl|T.lpmotion.safetensors", help="template to write")
    _common(e)

    w = sub.add_parser("download-weights", help="fetch the LivePortrait weights from the Hugging Face hub",
                       description="Download the missing LivePortrait weight files into DIR (nothing is "
                                   "fetched when the set is complete). Needs huggingface_hub and a network.")
    w.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="DIR",
                   help=f"folder to fill (default: $LIVEPORTRAIT_WEIGHTS or ./pretrained_weights, now {DEFAULT_WEIGHTS!r})")
    w.add_argument("--layout", choices=["safetensors", "pth"], default="safetensors",
                   help="safetensors: flat files of the safetensors conversion; pth: the reference tree (default: safetensors)")
    w.add_argument("--animal", action="store_true", help="the animal weights instead of the human ones")
    return parser


def _tqdm_progress(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty() and os.environ.get("LP_PROGRESS") != "1")

    def update(done: int, _total: Optional[int] = None) -> None:
        bar.update(done - bar.n)
        if _total is not None and done >= _total:
            bar.close()

    return update


def _run(args) -> int:
    if args.command == "download-weights":
        from .hub import download_models

        print(download_models(args.weights, layout=args.layout, animal=args.animal))
        return 0
    from .animate import FaceOptions, RunOptions, animate_files, extract_motion_file, load_models_for
    from .compose import ComposeOptions

    def note(msg: str) -> None:
        print(f"note: {msg}", file=sys.stderr)

    faces = FaceOptions(crop=not args.no_crop, detector=args.detector, detector_dir=args.detector_dir,
                        crop_driving=args.crop_driving, paste_back=getattr(args, "paste_back", True))
    run = RunOptions(batch_size=args.batch_size, device=args.device, max_frames=args.max_frames, faces=faces)
    if args.command == "animate":
        run.precision, run.keep_audio = args.precision, args.keep_audio
        run.compose = ComposeOptions(
            relative_motion=args.relative_motion, stitching=args.stitching,
            eye_retargeting=args.eye_retargeting, lip_retargeting=args.lip_retargeting,
            normalize_lip=args.normalize_lip, source_video_eye_retargeting=args.source_video_eye_retargeting,
            driving_option=args.driving_option, driving_multiplier=args.driving_multiplier,
            animation_region=args.animation_region, smooth_variance=args.smooth_variance,
            target_eye_ratio=args.target_eye_ratio, target_lip_ratio=args.target_lip_ratio,
            length_policy=args.length_policy)
        run.compose.validate()
        from .animate import check_output_path, input_kind

        check_output_path(args.output)  # fail on bad inputs before loading weights
        s_kind, d_kind = input_kind(args.source, "source"), input_kind(args.driving, "driving")
        if s_kind in ("template", "keyframes"):
            from .errors import InputError

            what = "a motion template" if s_kind == "template" else "a keyframe sequence"
            raise InputError(f"source '{args.source}' is {what}; the source must be an image, "
                             "a video or a folder of images.")
        if d_kind == "template":
            from .templates import load_motion

            load_motion(args.driving)
        elif d_kind == "keyframes":
            from .editing.keyframes import load_sequence

            load_sequence(args.driving)
        if args.expression is not None:
            import math

            from .editing.presets import load_preset
            from .errors import InputError

            if not (math.isfinite(args.expression_strength) and args.expression_strength >= 0):
                raise InputError(f"--expression-strength must be a finite number ≥ 0, got {args.expression_strength}.")
            run.expression, run.expression_strength = load_preset(args.expression), args.expression_strength
        models = load_models_for(args.weights, args.device)
        out = animate_files(args.source, args.driving, args.output, models, run, note=note,
                            progress_factory=_tqdm_progress)
    else:
        models = load_models_for(args.weights, args.device)
        out = extract_motion_file(args.driving, args.output, models, run, note=note,
                                  progress_factory=_tqdm_progress)
    print(out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    import logging
    import warnings

    logging.basicConfig(level=logging.WARNING, format="note: %(message)s")
    warnings.simplefilter("ignore", UserWarning)  # library warnings are turned into notes where useful
    from .errors import LivePortraitError

    try:
        return _run(args)
    except LivePortraitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; no output written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory; try a smaller --batch-size or --max-frames.", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - last resort: one line, no traceback
        if os.environ.get("LP_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg} (set LP_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_ERROR
