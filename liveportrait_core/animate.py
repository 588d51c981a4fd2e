"""File-level pipeline behind the CLI: files in → crops → motion → keypoints → frames → file out.

`animate_files` reads a source (image / video / image folder) and a driving input (video,
image, image folder, motion template or keyframe sequence `*.keyframes.json`), crops faces (or takes the inputs as face crops),
extracts motion, composes, renders in batches and streams the frames (pasted back into the
source, or the raw 512² crops) into an mp4 or an image. `extract_motion_file` writes a driving
input's motion as a template. Both raise `LivePortraitError` subclasses for every bad input.

Videos are never held whole: they are decoded in chunks of `stream_chunk` frames, read twice
when faces are cropped (pass 1 tracks, keeping landmarks only; pass 2 warps the crops, and for
the driving side extracts motion chunk by chunk), and paste-back re-reads the source frames by
index (`SourceFrames`). What grows with length: landmarks, matrices, the source's 256² crops and
the Motion. Results are those of cropping all frames at once.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np
import torch

from . import video as vio
from .compose import ComposeOptions, compose
from .errors import InputError, MotionFileError, VideoError
from .extract import extract_motion
from .face.crops import FaceCrops
from .render import Animator

TEMPLATE_EXTS = (".pkl", ".pickle", ".safetensors")
SEQUENCE_EXTS = (".json",)  # keyframe sequences (`editing.keyframes`, canonical name *.keyframes.json)
NOTE = Callable[[str], None]
STREAM_CHUNK = 16  # source / driving frames decoded + cropped at a time (see stream_chunk): 16 × 6 MiB at 1080p


@dataclass
class FaceOptions:
    """How faces are found. crop=False: inputs already are face crops (resized to 256)."""

    crop: bool = True
    detector: str = "offline"
    detector_dir: Optional[str] = None
    crop_driving: Optional[bool] = None  # None: only when the driving video is not square
    scale: float = 2.3
    vy: float = -0.125
    paste_back: bool = True
    source_max_dim: int = 1280


@dataclass
class RunOptions:
    precision: str = "exact"
    batch_size: int = 4
    device: str = "cpu"
    keep_audio: bool = True
    max_frames: Optional[int] = None
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    faces: FaceOptions = field(default_factory=FaceOptions)
    # expression controls (name → value, e.g. a loaded preset) applied to every driving frame
    expression: Optional[dict] = None
    expression_strength: float = 1.0


def input_kind(path: str, what: str) -> str:
    """'image', 'video', 'template' or 'keyframes' (a keyframe sequence, .json) for an input path
    (VideoError / InputError otherwise)."""
    if not os.path.exists(path):
        raise VideoError(f"{what} not found: '{path}'. Check the path.")
    low = path.lower()
    if os.path.isdir(path):
        return "video"
    if low.endswith(TEMPLATE_EXTS):
        return "template"
    if low.endswith(SEQUENCE_EXTS):
        return "keyframes"
    if low.endswith(vio.IMAGE_EXTS):
        return "image"
    if low.endswith(vio.VIDEO_EXTS):
        return "video"
    raise InputError(
        f"{what} '{path}': unknown file type. Use an image ({', '.join(vio.IMAGE_EXTS)}), a video "
        f"({', '.join(vio.VIDEO_EXTS)}), a folder of images, a motion template (.pkl, .lpmotion.safetensors) "
        "or a keyframe sequence (.keyframes.json).")


class FaceTools:
    """Detector + 203-point landmark runner, built once per run (lazily)."""

    def __init__(self, models, faces: FaceOptions, note: NOTE):
        self.faces, self.note = faces, note
        self._detector, self._runner, self._runner_done = None, None, False
        self.models = models

    @property
    def runner(self):
        if not self._runner_done:
            self._runner_done = True
            path = getattr(self.models, "landmark_path", None)
            if path:
                from .face.landmarks import LandmarkRunner

                self._runner = LandmarkRunner(path, device="cpu")
            else:
                self.note("landmark.onnx not found in the weights folder: "
                          + ("faces are placed by the detector alone and " if self.faces.crop else "")
                          + "eye/lip open ratios are unknown (eye/lip retargeting and lip "
                          "normalisation are unavailable).")
        return self._runner

    @property
    def detector(self):
        if self._detector is None:
            from .face.detectors import make_detector

            self._detector = make_detector(self.faces.detector, self.faces.detector_dir)
        return self._detector


def stream_chunk(batch_size: int) -> int:
    """Frames decoded + cropped at a time: STREAM_CHUNK rounded down to a multiple of the batch
    size, so chunked motion extraction runs the very network batches of one pass over all crops."""
    bs = max(1, int(batch_size))
    return max(1, STREAM_CHUNK // bs) * bs


def _iter_crops(read_chunks: Callable[[], Iterable[np.ndarray]], tools: FaceTools, faces: FaceOptions,
                side: str, crop: bool, track_progress=None) -> Iterator[FaceCrops]:
    """FaceCrops chunk by chunk (`face.pipeline.iter_face_crops`) of the source or driving frames.

    read_chunks() → a fresh iterable of `[B,H,W,3]` uint8 chunks (read twice when cropping).
    side: 'source' (our scale/vy, rotated crops) or 'driving' (the global box of all frames).
    track_progress(frames tracked, None): after every frame of the tracking pass (cropping only).
    """
    from .face.pipeline import iter_face_crops

    if not crop:
        return iter_face_crops(read_chunks, None, tools.runner, mode="none", name=side)
    if side == "source":
        return iter_face_crops(read_chunks, tools.detector, tools.runner, purpose="source",
                               scale=faces.scale, vy=faces.vy, name="source", progress=track_progress)
    return iter_face_crops(read_chunks, tools.detector, tools.runner, purpose="driving", name="driving",
                           progress=track_progress)


def lazy_progress(progress_factory, desc: str):
    """A progress callable whose bar `progress_factory(total, desc)` is made at its first call
    (so a pass that never runs shows no bar); None without a factory."""
    if progress_factory is None:
        return None
    bar = []

    def update(done: int, total: Optional[int] = None) -> None:
        if not bar:
            bar.append(progress_factory(total, desc))
        bar[0](done, total)

    return update


def driving_motion(path: str, kind: str, models, tools: FaceTools, run: RunOptions, note: NOTE,
                   progress=None, track_progress=None):
    """Motion of the driving input (template, keyframe sequence, image, video or image folder).

    Videos are streamed (`vio.iter_chunks`): only one chunk of frames and the Motion are held;
    with the global crop box the file is read twice (tracking, then crops + motion).
    progress(frames done, None) after every chunk, then (F, F); track_progress(frames tracked,
    None) after every frame of the tracking pass.
    """
    from .motion import Motion
    from .templates import load_motion

    if kind in ("template", "keyframes"):
        if kind == "template":
            m = load_motion(path)
        else:
            from .editing.keyframes import load_sequence, sequence_motion

            m = sequence_motion(load_sequence(path))
        if run.max_frames is not None and len(m) > run.max_frames:
            m = m.select(torch.arange(run.max_frames))
        return m
    info = vio.probe(path)
    square = info.size[0] == info.size[1]
    crop = run.faces.crop and (run.faces.crop_driving if run.faces.crop_driving is not None else not square)
    if not run.faces.crop and not square:
        note(f"driving frames are {info.size[0]}x{info.size[1]} and get squeezed to 256x256 (--no-crop).")
    fps = info.fps if kind == "video" else vio.DEFAULT_FPS
    chunk = stream_chunk(run.batch_size)
    parts: List[Motion] = []
    done = 0
    for fc in _iter_crops(lambda: vio.iter_chunks(path, chunk, run.max_frames), tools, run.faces,
                          "driving", crop, track_progress):
        parts.append(extract_motion(models, fc, fps, run.batch_size))
        done += len(fc)
        if progress is not None:
            progress(done, None)
    m = parts[0] if len(parts) == 1 else Motion.concat(parts)
    if progress is not None:
        progress(len(m), len(m))
    return m


class SourceFrames:
    """The source frames for paste-back, by index: a still image held in memory, or a video /
    image folder re-read on demand (`vio.FrameReader`), so a long source video is never held."""

    def __init__(self, image: Optional[np.ndarray] = None, path: Optional[str] = None,
                 max_frames: Optional[int] = None):
        self.image = image
        self.reader = None if image is not None else vio.FrameReader(path, max_frames)

    def chunk(self, index: np.ndarray) -> np.ndarray:
        """Frames `[B,H,W,3]` uint8 for source frame indices `[B]` (one broadcast frame for an image)."""
        if self.image is not None:
            return self.image[None]
        return np.stack([self.reader[i] for i in index])

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def source_crops(path: str, kind: str, tools: FaceTools, run: RunOptions, track_progress=None) -> tuple:
    """Source face crops, fps and the frames to paste back into: (FaceCrops, fps, SourceFrames).

    A still image is shrunk to source_max_dim (even sizes) when cropping; a video or folder is
    streamed twice (tracking, then crops) and only its 256² crops are kept;
    track_progress(frames tracked, None) after every frame of the tracking pass.
    """
    from .face.crop import resize_to_limit
    from .face.pipeline import concat_crops

    if kind in ("template", "keyframes"):
        what = "a motion template" if kind == "template" else "a keyframe sequence"
        raise InputError(f"source '{path}' is {what}; the source must be an image, a video or a folder of images.")
    if kind == "image":
        img = vio.read_image(path)
        if run.faces.crop:
            img = resize_to_limit(img, run.faces.source_max_dim, 2)
        crops = concat_crops(list(_iter_crops(lambda: [img[None]], tools, run.faces, "source", run.faces.crop)))
        return crops, vio.DEFAULT_FPS, SourceFrames(image=img)
    fps = vio.probe(path).fps
    chunk = stream_chunk(run.batch_size)
    parts = list(_iter_crops(lambda: vio.iter_chunks(path, chunk, run.max_frames), tools, run.faces,
                             "source", run.faces.crop, track_progress))
    return concat_crops(parts), fps, SourceFrames(path=path, max_frames=run.max_frames)


def load_models_for(weights: str, device: str):
    from .weights import load_models

    dev = resolve_device(device)
    return load_models(weights, device=dev)


def resolve_device(device: Optional[str]) -> torch.device:
    d = (device or "auto").lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise InputError(f"device '{device}' is not a torch device (use cpu, cuda, cuda:N, mps or auto).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}': CUDA is not available on this machine; use --device cpu.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device '{device}': MPS is not available on this machine; use --device cpu.")
    return dev


def check_output_path(output: str) -> None:
    """Fail early (before any work) when `output` is not a writable video or image path."""
    low = output.lower()
    if not low.endswith(vio.VIDEO_EXTS + vio.IMAGE_EXTS) or low.endswith(".gif"):
        raise InputError(f"output '{output}': use a video name (.mp4) or, for a single frame, an image name (.png/.jpg).")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise VideoError(f"output folder '{folder}' does not exist. Create it or choose another --output.")


def animate_files(source: str, driving: str, output: str, models, run: RunOptions,
                  note: NOTE = print, progress_factory=None, cancel: Optional[Callable[[], bool]] = None) -> str:
    """Animate `source` with `driving` and write `output` (see module doc). Returns `output`.

    progress_factory(total, desc) → callable(done, total) (e.g. a tqdm adapter) or None.
    """
    check_output_path(output)
    s_kind, d_kind = input_kind(source, "source"), input_kind(driving, "driving")
    run.compose.validate()
    tools = FaceTools(models, run.faces, note)
    src_crops, src_fps, src_frames = source_crops(source, s_kind, tools, run,
                                                  lazy_progress(progress_factory, "tracking source faces"))
    src_motion = extract_motion(models, src_crops, src_fps, run.batch_size)
    drv_motion = driving_motion(driving, d_kind, models, tools, run, note,
                                lazy_progress(progress_factory, "driving motion"),
                                lazy_progress(progress_factory, "tracking driving faces"))
    if run.expression:
        from .editing.keyframes import apply_expression

        drv_motion = apply_expression(drv_motion, run.expression, run.expression_strength)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = compose(src_motion, drv_motion, getattr(models, "stitching_retargeting", None), run.compose)
    for w in caught:
        note(str(w.message))
    n = len(plan)
    is_image_out = output.lower().endswith(vio.IMAGE_EXTS)
    if is_image_out and n != 1:
        raise InputError(f"output '{output}' is an image, but the animation has {n} frames; use an .mp4 name.")
    paste = run.faces.crop and run.faces.paste_back
    if run.faces.crop and run.faces.paste_back and not run.compose.stitching:
        note("paste-back without stitching can show seams (the reference pastes back only with stitching).")
    animator = Animator(models, run.precision, run.batch_size, device=models.device)
    prog = progress_factory(n, "animating") if progress_factory is not None else None
    chunks = animator.iter_render(plan, src_crops, output="uint8", progress=prog, cancel=cancel)
    audio = driving if (run.keep_audio and d_kind == "video" and os.path.isfile(driving)) else None
    if audio is not None and not vio.has_audio(driving):
        audio = None

    def finished(chunk_iter):
        from .face.paste import paste_back

        done = 0
        for chunk in chunk_iter:
            b = chunk.shape[0]
            if not paste:
                yield chunk.numpy()
            else:
                items = plan.source_index[done:done + b]
                base = src_frames.chunk(src_crops.frame_index[items].numpy())
                out, _ = paste_back(base, chunk.numpy(), src_crops.M_c2o[items].numpy(),
                                    into=np.arange(b))
                yield out
            done += b

    try:
        if is_image_out:
            img = np.concatenate(list(finished(chunks)))
            return vio.write_image(output, img[0])
        fps = plan.fps if plan.fps and plan.fps > 0 else vio.DEFAULT_FPS
        with vio.VideoWriter(output, fps, audio_from=audio) as writer:
            for w in writer.warnings:
                note(w)
            for out in finished(chunks):
                writer.write(out)
        return output
    finally:
        src_frames.close()


def extract_motion_file(driving: str, output: str, models, run: RunOptions, note: NOTE = print,
                        progress_factory=None) -> str:
    """Driving video / image / folder → motion template at `output` (.pkl or .lpmotion.safetensors)."""
    from .templates import save_motion

    low = output.lower()
    if not low.endswith((".pkl", ".safetensors")):
        raise MotionFileError(f"output '{output}': use a .pkl (reference template) or .lpmotion.safetensors name.")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise MotionFileError(f"output folder '{folder}' does not exist.")
    kind = input_kind(driving, "driving")
    if kind == "template":
        raise InputError(f"driving '{driving}' already is a motion template.")
    if kind == "keyframes":
        raise InputError(f"driving '{driving}' is a keyframe sequence, not a video: it has no motion to extract.")
    tools = FaceTools(models, run.faces, note)
    motion = driving_motion(driving, kind, models, tools, run, note, lazy_progress(progress_factory, "driving motion"),
                            lazy_progress(progress_factory, "tracking driving faces"))
    if motion.eye_ratio is None:
        note("the template has no eye/lip ratio lists (no landmark model): it cannot drive eye/lip retargeting.")
    return save_motion(motion, output)
