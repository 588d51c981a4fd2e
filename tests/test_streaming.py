"""File pipeline on long videos: video sources and cropped driving videos are streamed in chunks
(never read whole), with results identical to the whole-array path (`crop_faces` on all frames).
"""
from __future__ import annotations

import dataclasses
import os

import imageio
import numpy as np
import pytest
import torch

from conftest import compact_file
from face_testing import lr, offline, runner  # noqa: F401  (fixtures)
from liveportrait_core import animate
from liveportrait_core import video as vio
from liveportrait_core.errors import FaceNotFoundError, VideoError
from liveportrait_core.extract import extract_motion
from liveportrait_core.face.paste import paste_back
from liveportrait_core.face.pipeline import crop_faces
from video_testing import read_frames, write_video

VIDEO = os.path.join(compact_file("photos"), "s18_6f.mp4")  # 6 frames 480×270, one face


@pytest.fixture(scope="module")
def models(weights_pth):
    from liveportrait_core.weights import load_models

    return load_models(weights_pth)


@pytest.fixture
def streamed(monkeypatch, models, offline, runner):
    """Chunks of 3 frames; chunk sizes and FaceTools (offline detector + landmark stand-in)
    recorded (the library has no whole-video read: video.py only streams)."""
    monkeypatch.setattr(animate, "STREAM_CHUNK", 3)
    whole = read_frames
    sizes = []

    real_chunks = vio.iter_chunks

    def spy_chunks(*a, **k):
        for c in real_chunks(*a, **k):
            sizes.append(len(c))
            yield c

    monkeypatch.setattr(vio, "iter_chunks", spy_chunks)
    tools = animate.FaceTools(models, animate.FaceOptions(), print)
    tools._detector, tools._runner, tools._runner_done = offline, runner, True
    return {"whole": whole, "sizes": sizes, "tools": tools}


def _same(a, b):
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), f.name
        else:
            assert x == y, f.name


def test_cropped_driving_video_streamed_gives_the_same_motion(streamed, models, offline, runner):
    run = animate.RunOptions(batch_size=3, max_frames=5)
    seen, tracked = [], []
    m = animate.driving_motion(VIDEO, "video", models, streamed["tools"], run, print,
                               lambda d, t: seen.append((d, t)), lambda d, t: tracked.append((d, t)))
    assert max(streamed["sizes"]) == 3 and sum(streamed["sizes"]) == 2 * 5  # 2 passes of 3 + 2
    assert seen == [(3, None), (5, None), (5, 5)]
    assert tracked == [(i, None) for i in range(1, 6)] + [(5, 5)]  # the tracking pass, frame by frame
    frames, fps = streamed["whole"](VIDEO, 5)
    want = extract_motion(models, crop_faces(frames, offline, runner, purpose="driving", name="driving"),
                          fps, run.batch_size)
    assert len(m) == 5 and m.eye_ratio is not None
    _same(m, want)


class FakeAnimator:
    """Stands for the renderer (13 s per frame here): 512² 'renders' = source crops upsampled
    plus the target keypoints' first value, in batches; records what it was given."""

    got = {}

    def __init__(self, models, precision, batch_size, device=None):
        self.bs = batch_size

    def iter_render(self, plan, crops, output="uint8", progress=None, cancel=None):
        FakeAnimator.got.update(plan=plan, crops=crops)
        for i in range(0, len(plan), self.bs):
            idx = plan.source_index[i:i + self.bs]
            up = crops.crops[idx].repeat_interleave(2, 1).repeat_interleave(2, 2)
            shift = (plan.x_d[i:i + self.bs, 0, 0].abs() * 50).clamp(0, 100).to(torch.uint8)
            yield up // 2 + shift[:, None, None, None]


def test_video_source_streamed_paste_back_is_identical(streamed, models, offline, runner, tmp_path,
                                                       monkeypatch):
    """4-frame source (frame 2 without a face) × 7-frame driving, ping-pong: the source frames
    are read back by index (0 1 2 3 2 1 0) for paste-back, never all held."""
    frames = np.stack(imageio.mimread(VIDEO))[:4]
    frames[2] = 0
    src = write_video(str(tmp_path / "src.mp4"), frames, fps=10)
    d = np.load(compact_file("e2e_image_to_video.npz"))["driving_frames_u8"]
    drv = write_video(str(tmp_path / "drv.mp4"), d[[0, 1, 2, 1, 0, 1, 2]], fps=10)
    written = []
    real_write = vio.VideoWriter.write
    monkeypatch.setattr(vio.VideoWriter, "write", lambda self, f: written.append(np.array(f)) or real_write(self, f))
    monkeypatch.setattr(animate, "Animator", FakeAnimator)
    monkeypatch.setattr(animate, "FaceTools", lambda *a: streamed["tools"])
    run = animate.RunOptions(batch_size=3)
    run.compose.length_policy = "ping-pong"
    out = animate.animate_files(src, drv, str(tmp_path / "o.mp4"), models, run, note=lambda m: None)
    assert os.path.isfile(out) and max(streamed["sizes"]) == 3
    got = np.concatenate(written)
    # the whole-array path: all source frames read, cropped at once, indexed for paste-back
    whole, _ = streamed["whole"](src)
    crops = crop_faces(whole, offline, runner, purpose="source", scale=2.3, vy=-0.125, name="source")
    assert crops.missing_frames == (2,)
    _same(FakeAnimator.got["crops"], crops)
    plan = FakeAnimator.got["plan"]
    assert plan.source_index.tolist() == [0, 1, 2, 3, 2, 1, 0]
    rendered = torch.cat(list(FakeAnimator(None, None, 3).iter_render(plan, crops))).numpy()
    items = plan.source_index
    want, _ = paste_back(whole[crops.frame_index[items].numpy()], rendered, crops.M_c2o[items].numpy())
    np.testing.assert_array_equal(got, want)


def test_bad_streamed_inputs_give_one_error_and_no_output(streamed, models, tmp_path, monkeypatch):
    monkeypatch.setattr(animate, "FaceTools", lambda *a: streamed["tools"])
    blank = write_video(str(tmp_path / "blank.mp4"), np.zeros((4, 64, 96, 3), np.uint8), fps=10)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    out = tmp_path / "o.mp4"
    run = animate.RunOptions(batch_size=2)
    for source, driving, err, words in [(blank, VIDEO, FaceNotFoundError, "source: no face found in any of its 4 frames"),
                                        (VIDEO, blank, FaceNotFoundError, "driving: no face found"),
                                        (str(broken), VIDEO, VideoError, "corrupted")]:
        with pytest.raises(err, match=words):
            animate.animate_files(source, driving, str(out), models, run, note=lambda m: None)
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if ".part" in n]


def test_lazy_progress_makes_its_bar_at_the_first_call():
    made = []

    def factory(total, desc):
        made.append(desc)
        return lambda done, total=None: made.append((done, total))

    assert animate.lazy_progress(None, "x") is None
    unused, used = animate.lazy_progress(factory, "unused"), animate.lazy_progress(factory, "tracking")
    assert made == []  # a pass that never runs shows no bar
    used(1)
    used(2, 2)
    assert made == ["tracking", (1, None), (2, 2)] and unused is not None
