"""Command line: `python -m liveportrait_core animate …`, `… extract-motion …`, `… download-weights …`.

`animate --driving` takes a video, image, image folder, motion template or keyframe sequence
(`*.keyframes.json`, see docs/MOTION.md "Keyframes").

Every user error ends with one line on stderr ("error: …") and exit code 2 (bad arguments)
or 1 (bad input files / weights / no face); nothing is left at the output path. Ctrl-C exits
with 130 and SIGTERM with 143, both after removing the temporary output file.

Outputs: an --output equal to an input (also through a link or another spelling) is refused;
an unwritable destination is found before any frame is rendered; an existing output file is
replaced by the complete new file at the very end (written to a hidden `.part` file in the same
folder, then renamed), and a note says it was replaced.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from .compose_options import ComposeOptions

DEFAULT_WEIGHTS = os.environ.get("LIVEPORTRAIT_WEIGHTS", "pretrained_weights")
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every `finally` / `with` cleans up (temp files)."""


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


def _non_negative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v >= 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text}")
    return v


def _frame(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a frame number ≥ 0, got {v}")
    return v


_CLI_TYPES = {"float": float, "ratio": _ratio, "frame": _frame}


def _compose_arguments(group) -> None:
    """The composition flags, generated from the option table (compose_options.COMPOSE_OPTIONS)."""
    from .compose_options import COMPOSE_OPTIONS

    for spec in COMPOSE_OPTIONS:
        if spec.cli_flag is None:
            continue
        kw = dict(dest=spec.field, help=spec.help)
        if spec.kind == "bool":
            kw["action"] = spec.cli_action
        else:
            kw["default"] = spec.default
            if spec.kind == "choice":
                kw["choices"] = list(spec.choices)
            else:
                kw["type"] = _CLI_TYPES[spec.kind]
                kw["metavar"] = spec.metavar
        group.add_argument(spec.cli_flag, **kw)


def compose_options_from_args(args) -> "ComposeOptions":
    """ComposeOptions from parsed `animate` arguments (the table's CLI options; others default)."""
    from .compose_options import COMPOSE_OPTIONS, ComposeOptions

    return ComposeOptions(**{s.field: getattr(args, s.field) for s in COMPOSE_OPTIONS if s.cli_flag})


def _side(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if v != 0 and v < 256:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or at least 256 pixels, got {v}")
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
    f.add_argument("--detector-dir", default=None, metavar="DIR",
                   help="folder of the detector's model files (insightface: ComfyUI's models/insightface, a "
                        "folder holding buffalo_l/, or the buffalo_l folder itself; yunet: where its .onnx is kept)")
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
    _compose_arguments(a.add_argument_group("composition (reference flag in brackets)"))
    x = a.add_argument_group("expression editing")
    x.add_argument("--expression", default=None, metavar="PRESET.json",
                   help="an expression preset (JSON of control values, e.g. saved by the Expression Editor) "
                        "applied on top of the driving motion at every frame")
    x.add_argument("--expression-strength", type=_non_negative, default=1.0, metavar="X",
                   help="scale the preset's changes (default 1.0; 0 = no change)")
    o = a.add_argument_group("output")
    o.add_argument("--max-source-side", type=_side, default=1280, metavar="PX",
                   help="a source photo larger than this on its longer side is shrunk to it before animating "
                        "(said in a note); 0 = never (default: 1280, as the reference)")
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

    def note(msg: str) -> None:
        print(f"note: {msg}", file=sys.stderr)

    faces = FaceOptions(crop=not args.no_crop, detector=args.detector, detector_dir=args.detector_dir,
                        crop_driving=args.crop_driving, paste_back=getattr(args, "paste_back", True))
    if getattr(args, "max_source_side", None) is not None:
        faces.source_max_dim = args.max_source_side
    run = RunOptions(batch_size=args.batch_size, device=args.device, max_frames=args.max_frames, faces=faces)
    if args.command == "animate":
        run.precision, run.keep_audio = args.precision, args.keep_audio
        run.compose = compose_options_from_args(args)
        run.compose.validate()
        if args.expression is not None:
            from .editing import load_preset

            run.expression, run.expression_strength = load_preset(args.expression), args.expression_strength
        from .animate import check_output_path, input_kind

        # fail on bad inputs and outputs before loading weights
        s_kind, d_kind = input_kind(args.source, "source"), input_kind(args.driving, "driving")
        check_output_path(args.output, {"source": args.source, "driving": args.driving})
        if s_kind in ("template", "keyframes"):
            from .errors import InputError

            what = "a motion template" if s_kind == "template" else "a keyframe sequence"
            raise InputError(f"source '{args.source}' is {what}; the source must be an image, "
                             "a video or a folder of images.")
        from . import video as vio

        vio.probe(args.source)  # unreadable images / videos are reported before the weights load
        if d_kind == "template":
            from .templates import load_motion

            load_motion(args.driving)
        elif d_kind == "keyframes":
            from .editing.keyframes import load_sequence

            load_sequence(args.driving)
        else:
            vio.probe(args.driving)
        models = load_models_for(args.weights, args.device)
        out = animate_files(args.source, args.driving, args.output, models, run, note=note,
                            progress_factory=_tqdm_progress)
    else:
        from .animate import check_motion_output, input_kind

        if input_kind(args.driving, "driving") != "template":  # (a template is refused below)
            check_motion_output(args.output, args.driving)
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

    old_term = _install_sigterm()
    try:
        return _run(args)
    except LivePortraitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print("error: terminated (SIGTERM); no output written (an existing output file is unchanged).",
              file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("error: interrupted; no output written (an existing output file is unchanged).", file=sys.stderr)
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
    finally:
        if old_term is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, old_term)


def _install_sigterm():
    """Turn SIGTERM into a `Terminated` exception (main thread only); returns the old handler."""

    def on_term(signum, frame):
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread (e.g. main() called from a worker)
        return _NOT_INSTALLED


_NOT_INSTALLED = object()
