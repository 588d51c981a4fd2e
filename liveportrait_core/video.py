"""Video and image I/O: read frames + fps, write H.264 mp4 while rendering, keep audio.

Uses imageio-ffmpeg's bundled ffmpeg binary (no system ffmpeg is assumed) for videos and
imageio / OpenCV for still images. Every frame is RGB uint8 `[H,W,3]`.

Failures a user can fix (missing, corrupted, unreadable or empty inputs, unwritable outputs)
raise `VideoError` with one clear message. Writers go to a temporary file next to the output
and are renamed at the end, so a failed or cancelled run leaves nothing at the output path.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .errors import VideoError
from .images import batch_to_u8, to_rgb_u8
from .paths import as_path, probe_output, temp_path_for

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 25.0  # what the reference uses for still images and fps-less inputs


def _ext(path: str) -> str:
    return os.path.splitext(str(path))[1].lower()


def _natural_key(name: str):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


def sequence_files(folder: str) -> List[str]:
    """Image files of a folder in natural order (frame2 before frame10)."""
    names = [n for n in os.listdir(folder) if _ext(n) in IMAGE_EXTS and not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def read_image(path: str) -> np.ndarray:
    """One still image as RGB uint8 `[H,W,3]` (grey and RGBA are converted)."""
    path = as_path(path, "image")
    if os.path.isdir(path):
        raise VideoError(f"Image '{path}' is a folder; give an image file.")
    if not os.path.isfile(path):
        raise VideoError(f"Image not found: '{path}'. Check the path.")
    try:
        import imageio.v3 as iio

        img = iio.imread(path)
        if img.ndim == 4:  # animated formats: first frame
            img = img[0]
        img = to_rgb_u8(img, path, min_size=1)
    except Exception:  # noqa: BLE001 - any decoder failure is a bad file for the user
        # imageio's own text is advice about installing plugins, which misleads here: the file
        # is not an image any decoder knows (text, truncated, another format renamed).
        raise VideoError(f"Cannot read image '{path}': it is not an image, or it is corrupted "
                         f"(no decoder understands its content). Use a {'/'.join(e[1:] for e in IMAGE_EXTS[:3])} "
                         "photo.") from None
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise VideoError(f"Image '{path}' is empty.")
    return img


@dataclass
class VideoInfo:
    """What a reader knows before decoding: fps, frame size (W,H), audio presence."""

    fps: float
    size: Tuple[int, int]
    has_audio: bool = False
    n_frames: Optional[int] = None  # exact for image sequences, None for video files


def _ffmpeg_reader(path: str):
    """The imageio-ffmpeg generator, started, with its metadata dict (or VideoError)."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
        meta = next(gen)
    except StopIteration:
        raise VideoError(f"Cannot read video '{path}': no video stream.") from None
    except Exception as exc:  # noqa: BLE001
        gen.close()
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in reversed(first) if ln.strip() and "===" not in ln), "unknown error")
        raise VideoError(
            f"Cannot read video '{path}': it is corrupted, has no video frames, or is not a video "
            f"({detail.strip()})."
        ) from None
    return gen, meta


def probe(path: str) -> VideoInfo:
    """fps, size and audio presence of a video file, image folder or still image."""
    path = as_path(path, "video")
    if not os.path.exists(path):
        raise VideoError(f"Video not found: '{path}'. Check the path.")
    if os.path.isdir(path):
        files = sequence_files(path)
        if not files:
            raise VideoError(f"Folder '{path}' contains no images ({', '.join(IMAGE_EXTS)}).")
        h, w = read_image(files[0]).shape[:2]
        return VideoInfo(DEFAULT_FPS, (w, h), False, len(files))
    if _ext(path) in IMAGE_EXTS:
        h, w = read_image(path).shape[:2]
        return VideoInfo(DEFAULT_FPS, (w, h), False, 1)
    gen, meta = _ffmpeg_reader(path)
    gen.close()
    fps = float(meta.get("fps") or 0.0) or DEFAULT_FPS
    return VideoInfo(fps, tuple(meta["size"]), bool(meta.get("audio_codec")), None)


def iter_frames(path: str, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 `[H,W,3]` frames one by one from a video file, image folder or image.

    Streaming: only one frame is decoded at a time. Raises VideoError for a missing,
    corrupted or frame-less input (also when the error happens mid-stream).
    """
    path = as_path(path, "video")
    if max_frames is not None and max_frames <= 0:
        return
    if not os.path.exists(path):
        raise VideoError(f"Video not found: '{path}'. Check the path.")
    if os.path.isdir(path) or _ext(path) in IMAGE_EXTS:
        files = sequence_files(path) if os.path.isdir(path) else [path]
        if not files:
            raise VideoError(f"Folder '{path}' contains no images ({', '.join(IMAGE_EXTS)}).")
        size = None
        for i, f in enumerate(files[:max_frames]):
            img = read_image(f)
            if size is not None and img.shape != size:
                raise VideoError(
                    f"Image sequence '{path}': '{os.path.basename(f)}' is {img.shape[1]}x{img.shape[0]}, "
                    f"the first image is {size[1]}x{size[0]}. All frames must have the same size."
                )
            size = img.shape
            yield img
        return
    gen, meta = _ffmpeg_reader(path)
    w, h = meta["size"]
    n = 0
    try:
        while max_frames is None or n < max_frames:
            try:
                buf = next(gen)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001
                raise VideoError(f"Cannot decode video '{path}' after {n} frames: {exc}".splitlines()[0]) from None
            n += 1
            yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
    finally:
        gen.close()
    if n == 0:
        raise VideoError(f"Video '{path}' has no frames that can be decoded.")


def iter_chunks(path: str, size: int, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Frames `[B,H,W,3]` uint8 RGB, B = `size` (the last chunk may be shorter), streamed:
    each chunk is decoded straight into its own array (no list + stack copy). Raises
    VideoError like `iter_frames` (also for no frames at all)."""
    size = max(1, int(size))
    buf: Optional[np.ndarray] = None
    k = n = 0
    for f in iter_frames(path, max_frames):
        if buf is None:
            buf = np.empty((size,) + f.shape, np.uint8)
        buf[k] = f
        k, n = k + 1, n + 1
        if k == size:
            yield buf
            buf, k = None, 0  # drop it before the next chunk is allocated
    if buf is not None:
        yield buf[:k]
    if n == 0:
        raise VideoError(f"'{path}' has no frames.")


class FrameReader:
    """Frames of a video file or image folder by index, without holding the video.

    `reader[i]` → RGB uint8 `[H,W,3]`. Image folders are read file by file. Video files are
    decoded sequentially; an index behind the decoder (loop / ping-pong orders) re-opens the
    file and decodes forward again, keeping the last `window` frames so that stepping backwards
    (ping-pong) re-opens only once per `window` frames. Memory: `window` frames.
    Use as a context manager (or call `close()`) to stop the decoder.
    """

    def __init__(self, path: str, max_frames: Optional[int] = None, window: int = 16):
        self.path, self.max_frames, self.window = str(path), max_frames, max(1, int(window))
        self._files = sequence_files(self.path) if os.path.isdir(self.path) else None
        self._size: Optional[tuple] = None
        self._it: Optional[Iterator[np.ndarray]] = None
        self._next = 0  # index of the frame the decoder yields next
        self._cache: dict = {}  # index → frame, the last `window` decoded frames

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0 or (self.max_frames is not None and i >= self.max_frames):
            raise IndexError(f"frame {i} out of range")
        if self._files is not None:
            return self._read_file(i)
        if i in self._cache:
            return self._cache[i]
        if i < self._next:  # behind the decoder: start again, keep the window that ends at i
            self.close()
        if self._it is None:
            self._it, self._next = iter_frames(self.path, self.max_frames), 0
        while self._next <= i:
            try:
                f = next(self._it)
            except StopIteration:
                self.close()
                raise VideoError(f"Video '{self.path}' has no frame {i} (it ended after {self._next} frames).") from None
            if self._next > i - self.window:
                self._cache[self._next] = f
            self._cache.pop(self._next - self.window, None)
            self._next += 1
        return self._cache[i]

    def _read_file(self, i: int) -> np.ndarray:
        if i >= len(self._files):
            raise VideoError(f"Image sequence '{self.path}' has no frame {i} ({len(self._files)} images).")
        img = read_image(self._files[i])
        if self._size is None:
            self._size = read_image(self._files[0]).shape
        if img.shape != self._size:
            raise VideoError(f"Image sequence '{self.path}': '{os.path.basename(self._files[i])}' has another "
                             "size than the first image. All frames must have the same size.")
        return img

    def close(self) -> None:
        """Stop the decoder (the frame window is dropped too)."""
        if self._it is not None:
            self._it.close()
        self._it, self._next, self._cache = None, 0, {}

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------- writing


def _temp_path_for(path: str) -> str:
    return temp_path_for(path)


def _check_output_folder(path: str) -> None:
    """VideoError unless a file can be created at `path` (folder exists, is writable, `path` is
    not a folder) — checked by creating and deleting a temporary file there."""
    probe_output(path)


class VideoWriter:
    """Stream frames into an H.264 mp4 (yuv420p, CRF 18 like the reference's writer).

    Usage::

        with VideoWriter(out, fps, audio_from=driving_path) as w:
            for chunk in chunks:            # [B,H,W,3] uint8 or float 0..1 (array or tensor)
                w.write(chunk)

    Frames go to ffmpeg as they arrive (nothing is collected). The file is written under a
    temporary name in the output folder and renamed to `path` on a clean exit; on an
    exception (or `abort()`) the temporary file is deleted and `path` is left untouched.
    Odd frame sizes are padded by one edge pixel (H.264 4:2:0 needs even sizes).
    `audio_from`: a media file whose first audio track is muxed in (cut to the video length);
    ignored with a warning in `self.warnings` when it has no audio.
    """

    def __init__(self, path: str, fps: float, audio_from: Optional[str] = None, crf: int = 18):
        self.path = as_path(path, "output video")
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.crf = int(crf)
        self.audio_from = audio_from
        self.warnings: List[str] = []
        self.n_frames = 0
        self._gen = None
        self._size: Optional[Tuple[int, int]] = None  # (H, W) of incoming frames
        self._tmp: Optional[str] = None
        if _ext(self.path) in IMAGE_EXTS:
            raise VideoError(f"Output '{self.path}' is an image name; use a video name such as OUT.mp4.")
        _check_output_folder(self.path)
        if audio_from is not None:
            try:
                has = probe(audio_from).has_audio
            except VideoError:
                has = False
            if not has:
                self.warnings.append(f"'{audio_from}' has no audio track; the output has no sound.")
                self.audio_from = None

    def _start(self, h: int, w: int) -> None:
        import imageio_ffmpeg

        self._tmp = _temp_path_for(self.path)
        ph, pw = h + h % 2, w + w % 2
        out_params = ["-crf", str(self.crf), "-preset", "medium"]
        if self.audio_from is not None:
            out_params += ["-shortest"]
        self._gen = imageio_ffmpeg.write_frames(
            self._tmp,
            (pw, ph),
            fps=self.fps,
            codec="libx264",
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=out_params,
            audio_path=None if self.audio_from is None else str(self.audio_from),
            audio_codec=None if self.audio_from is None else "aac",
        )
        self._gen.send(None)
        self._size = (h, w)

    def write(self, frames) -> None:
        """Append `[B,H,W,3]` (or one `[H,W,3]`) frames: uint8, or float in 0..1."""
        arr = batch_to_u8(frames)
        h, w = arr.shape[1:3]
        if self._gen is None:
            self._start(h, w)
        elif (h, w) != self._size:
            raise VideoError(f"All frames must have the same size: got {w}x{h}, expected {self._size[1]}x{self._size[0]}.")
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        try:
            for f in arr:
                self._gen.send(np.ascontiguousarray(f))
                self.n_frames += 1
        except Exception as exc:  # noqa: BLE001 - ffmpeg died (disk full, bad audio, …)
            self.abort()
            raise VideoError(f"Writing '{self.path}' failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None

    def close(self) -> str:
        """Finish the file and move it to `path`. Returns `path`."""
        if self._gen is None:
            self.abort()
            raise VideoError(f"No frames were written to '{self.path}'.")
        try:
            self._gen.close()
        except Exception as exc:  # noqa: BLE001
            self._gen = None
            self.abort()
            raise VideoError(f"Writing '{self.path}' failed: {exc}".splitlines()[0]) from None
        self._gen = None
        if not os.path.isfile(self._tmp) or os.path.getsize(self._tmp) == 0:
            self.abort()
            raise VideoError(f"Writing '{self.path}' failed: the encoder produced no data.")
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; `path` is not touched."""
        if self._gen is not None:
            try:
                self._gen.close()
            except Exception:  # noqa: BLE001 - we are already failing; just clean up
                pass
            self._gen = None
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_image(path: str, image) -> str:
    """Write one RGB image (uint8 or float 0..1, `[H,W,3]` or `[1,H,W,3]`) via a temp file + rename."""
    path = as_path(path, "output image")
    arr = batch_to_u8(image, "image")[0]
    _check_output_folder(path)
    ext = _ext(path)
    if ext not in IMAGE_EXTS:
        raise VideoError(f"Output '{path}' is not an image name ({', '.join(IMAGE_EXTS)}).")
    tmp = _temp_path_for(path)
    try:
        import cv2

        ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr[:, :, ::-1]))
        if not ok:
            raise VideoError(f"Cannot encode '{path}'.")
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        raise VideoError(f"Writing '{path}' failed: {e.strerror or e}.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def count_frames(path: str, max_frames: Optional[int] = None) -> Optional[int]:
    """Number of frames of a video file / image folder / image (capped at max_frames), or None
    when it cannot be known cheaply. Video files: ffmpeg counts packets without decoding."""
    path = as_path(path, "video")
    n: Optional[int] = None
    if os.path.isdir(path):
        n = len(sequence_files(path))
    elif _ext(path) in IMAGE_EXTS:
        n = 1
    else:
        try:
            import imageio_ffmpeg

            n = int(imageio_ffmpeg.count_frames_and_secs(path)[0]) or None
        except Exception:  # noqa: BLE001 - only for progress totals; reading reports real errors
            n = None
    if n is not None and max_frames is not None:
        n = min(n, int(max_frames))
    return n


def has_audio(path: str) -> bool:
    """True when `path` is a media file with an audio track."""
    try:
        return probe(path).has_audio
    except VideoError:
        return False
