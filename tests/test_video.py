"""Video I/O: mp4 round trip, streaming writer, audio, image sequences, clean failures."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from video_testing import read_frames, write_video
from liveportrait_core import video as vio
from liveportrait_core.errors import VideoError


def _frames(n=6, h=48, w=64):
    """Smooth moving gradients (H.264 keeps them within a few levels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 128 + 100 * np.sin((x + 3 * i) / 11.0)
        g = 128 + 100 * np.cos((y + 2 * i) / 9.0)
        b = np.full_like(x, 40 + 30 * i)
        out.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _clip_with_audio(path, seconds=1.0, fps=10, size="64x48"):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac", path],
                   check=True)
    return path


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".part" in n]


def test_mp4_round_trip(tmp_path):
    frames = _frames()
    out = str(tmp_path / "rt.mp4")
    with vio.VideoWriter(out, fps=12.5) as w:
        w.write(frames[:2])  # streamed in chunks: uint8 …
        w.write(frames[2:].astype(np.float32) / 255.0)  # … and float 0..1
    info = vio.probe(out)
    assert info.fps == 12.5 and info.size == (64, 48) and not info.has_audio
    back, fps = read_frames(out)
    assert back.shape == frames.shape and back.dtype == np.uint8 and fps == 12.5
    # float frames are converted by the images.py rule (rounded): the same levels as the uint8 ones
    err = np.abs(back.astype(np.float64) - frames.astype(np.float64)).mean(axis=(1, 2, 3))
    assert err.max() < 5.0, err  # H.264 (CRF 18, 4:2:0) on tiny frames
    # every frame decodes closest to its own original: order kept, nothing dropped or repeated
    dist = np.abs(back[:, None].astype(np.float64) - frames[None].astype(np.float64)).mean(axis=(2, 3, 4))
    assert (dist.argmin(axis=1) == np.arange(len(frames))).all()
    assert list(vio.iter_frames(out, max_frames=2))[1].shape == (48, 64, 3)
    assert not _leftovers(str(tmp_path))


def test_odd_sizes_are_padded(tmp_path):
    out = write_video(str(tmp_path / "odd.mp4"), _frames(3, 33, 35), fps=25)
    back, _ = read_frames(out)
    assert back.shape == (3, 34, 36, 3)


def test_audio_is_kept_from_the_driving_video(tmp_path):
    clip = _clip_with_audio(str(tmp_path / "drv.mp4"))
    assert vio.has_audio(clip)
    with vio.VideoWriter(str(tmp_path / "with.mp4"), 10, audio_from=clip) as w:
        w.write(_frames(5))
    assert vio.probe(str(tmp_path / "with.mp4")).has_audio
    assert len(read_frames(str(tmp_path / "with.mp4"))[0]) == 5  # audio cut to the video
    silent = write_video(str(tmp_path / "without.mp4"), _frames(5), fps=10)
    assert not vio.has_audio(silent)
    w = vio.VideoWriter(str(tmp_path / "x.mp4"), 10, audio_from=silent)  # no audio track: note, no crash
    assert w.audio_from is None and "no audio" in w.warnings[0]
    w.write(_frames(2))
    w.close()


def test_failed_write_leaves_nothing_and_keeps_an_existing_file(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with vio.VideoWriter(str(out), 10) as w:
            w.write(_frames(3))
            raise RuntimeError("render failed half-way")
    assert out.read_bytes() == b"previous result"
    assert not _leftovers(str(tmp_path))
    with pytest.raises(VideoError, match="same size"):
        with vio.VideoWriter(str(tmp_path / "new.mp4"), 10) as w:
            w.write(_frames(2, 48, 64))
            w.write(_frames(2, 32, 32))
    assert not (tmp_path / "new.mp4").exists() and not _leftovers(str(tmp_path))
    with pytest.raises(VideoError, match="does not exist"):
        vio.VideoWriter(str(tmp_path / "missing" / "o.mp4"), 10)


def test_image_sequences_and_images(tmp_path):
    frames = _frames(3)
    seq = tmp_path / "seq"
    seq.mkdir()
    for i, name in enumerate(["f2.png", "f10.png", "f1.png"]):  # natural order: f1, f2, f10
        vio.write_image(str(seq / name), frames[[1, 2, 0][i]])
    (seq / "notes.txt").write_text("ignored")
    back, fps = read_frames(str(seq))
    assert fps == vio.DEFAULT_FPS and np.array_equal(back, frames)  # png: lossless
    assert vio.probe(str(seq)).n_frames == 3
    img = vio.read_image(str(seq / "f1.png"))
    assert np.array_equal(img, frames[0])
    rgba = np.concatenate([frames[0], np.full((48, 64, 1), 255, np.uint8)], -1)
    import imageio.v3 as iio

    iio.imwrite(str(tmp_path / "rgba.png"), rgba)
    iio.imwrite(str(tmp_path / "grey.png"), frames[0][:, :, 0])
    assert np.array_equal(vio.read_image(str(tmp_path / "rgba.png")), frames[0])
    assert vio.read_image(str(tmp_path / "grey.png")).shape == (48, 64, 3)


def test_unreadable_inputs_raise_video_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    for path, words in [(bad, "corrupted"), (empty, "corrupted"), (tmp_path / "missing.mp4", "not found"),
                        (tmp_path / "nothing", "no images"), (tmp_path / "bad.png", "Cannot read image")]:
        with pytest.raises(VideoError, match=words):
            read_frames(str(path))
    # a valid mp4 with zero video frames, and one with only an audio track
    import imageio_ffmpeg

    ff = imageio_ffmpeg.get_ffmpeg_exe()
    zero, audio = str(tmp_path / "zero.mp4"), str(tmp_path / "audio.mp4")
    subprocess.run([ff, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-t", "1", "-frames:v", "0", "-c:v", "libx264", zero], check=True)
    subprocess.run([ff, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "0.5", "-c:a", "aac", audio], check=True)
    for path in (zero, audio):
        with pytest.raises(VideoError, match="no video frames"):
            read_frames(path)
    good = write_video(str(tmp_path / "g.mp4"), _frames(2), fps=10)
    with pytest.raises(VideoError, match="no frames"):
        read_frames(good, max_frames=0)


def test_write_image_is_atomic(tmp_path):
    out = tmp_path / "o.png"
    vio.write_image(str(out), _frames(1)[0].astype(np.float32) / 255.0)
    assert vio.read_image(str(out)).shape == (48, 64, 3)
    with pytest.raises(VideoError, match="not an image name"):
        vio.write_image(str(tmp_path / "o.mp4"), _frames(1)[0])
    assert not _leftovers(str(tmp_path))


def test_chunks_and_frame_reader_by_index(tmp_path, monkeypatch):
    """iter_chunks = read_frames split; FrameReader serves any index order (loop, ping-pong)
    from a small window, re-opening the decoder only when it must go back."""
    out = write_video(str(tmp_path / "v.mp4"), _frames(6), fps=10)
    whole, _ = read_frames(out)
    chunks = list(vio.iter_chunks(out, 4))
    assert [len(c) for c in chunks] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert [len(c) for c in vio.iter_chunks(out, 4, max_frames=3)] == [3]
    with pytest.raises(VideoError, match="no frames"):
        list(vio.iter_chunks(out, 4, max_frames=0))
    opened = []
    real = vio.iter_frames
    monkeypatch.setattr(vio, "iter_frames", lambda *a: opened.append(a) or real(*a))
    order = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 0, 1, 5]
    with vio.FrameReader(out, window=3) as r:
        for i in order:
            np.testing.assert_array_equal(r[i], whole[i])
        with pytest.raises(VideoError, match="no frame 6"):
            r[6]
    # 0…5 one pass; 4, 3 from the window; 2 → re-open (keeps 0…2); 1, 0, 0, 1 from it; 5 decoded on
    assert len(opened) == 2
    seq = tmp_path / "seq"
    seq.mkdir()
    for i, f in enumerate(_frames(3)):
        vio.write_image(str(seq / f"f{i}.png"), f)
    with vio.FrameReader(str(seq)) as r:
        np.testing.assert_array_equal(np.stack([r[i] for i in (2, 0, 1)]), read_frames(str(seq))[0][[2, 0, 1]])
