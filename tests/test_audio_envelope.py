"""Loudness envelope against synthetic tone bursts: onset frame, levels, attack / release, mapping."""
from __future__ import annotations

import math
import os
import sys
import wave

import numpy as np
import pytest
import torch

from liveportrait_core.editing.audio import audio_envelope_from_dict, frame_levels, loudness_envelope
from liveportrait_core.errors import InputError

SR, FPS = 16000, 25


def burst(start: float, end: float, total: float = 2.0, amp: float = 0.5, freq: float = 400.0, channels: int = 1):
    t = torch.arange(int(total * SR), dtype=torch.float64) / SR
    x = amp * torch.sin(2 * math.pi * freq * t) * ((t >= start) & (t < end))
    return x.expand(channels, -1).clone()


def test_onset_within_one_frame_and_rms_level():
    start, end = 0.513, 1.2  # 0.513 s lies inside frame 12 ([0.48, 0.52))
    env = loudness_envelope(burst(start, end)[None], SR, FPS, attack_ms=0, release_ms=0, gain=1.0)
    assert env.shape == (50,) and env.dtype == torch.float32
    first = int(torch.nonzero(env).min())
    assert first == math.floor(start * FPS)
    assert torch.all(env[:first] == 0)
    # full frames inside the burst: the RMS of a sine, amp/√2 (400 Hz = 16 whole periods per frame)
    inner = env[14:29]
    assert torch.allclose(inner, torch.full_like(inner, 0.5 / math.sqrt(2)), atol=4e-3)
    assert torch.all(env[31:] == 0)  # the burst ends in frame 30: silence after (release 0)


def test_release_decay_and_attack_rise():
    rel, att = 120.0, 30.0
    x = burst(0.4, 1.0)
    env = loudness_envelope(x, SR, FPS, attack_ms=att, release_ms=rel).double()
    raw = frame_levels(x.mean(0), SR, FPS, 50)
    a_rel, a_att = math.exp(-1000 / (FPS * rel)), math.exp(-1000 / (FPS * att))
    # after the burst (frame 25 on) each frame keeps a_rel of the previous one
    ratios = env[26:40] / env[25:39]
    assert torch.allclose(ratios, torch.full_like(ratios, a_rel), rtol=1e-5)
    # attack: a one-pole rise towards the frame level
    assert env[9] == 0
    assert float(env[10]) == pytest.approx((1 - a_att) * float(raw[10]), rel=1e-5)
    assert float(env[11]) == pytest.approx(float(env[10]) + (1 - a_att) * (float(raw[11]) - float(env[10])), rel=1e-5)
    assert bool((torch.diff(env[10:16]) > 0).all()) and bool((torch.diff(env[10:25]) >= 0).all())
    assert float(env[24]) == pytest.approx(float(raw[20]), rel=1e-6)  # settled on the steady level


def test_threshold_gain_clamp_normalize_and_stereo_batch():
    x = burst(0.4, 1.0, amp=0.3, channels=2)
    x[1] = 0  # the mono mix is the mean of the channels
    lvl = 0.15 / math.sqrt(2)
    env = loudness_envelope(x[None], SR, FPS, attack_ms=0, release_ms=0, threshold=0.05, gain=4.0)
    assert float(env[15]) == pytest.approx(4 * (lvl - 0.05), abs=2e-3)
    assert torch.all(env[:10] == 0)
    loud = loudness_envelope(x[None], SR, FPS, attack_ms=0, release_ms=0, gain=100.0)
    assert float(loud.max()) == 1.0 and float(loud.min()) == 0.0
    norm = loudness_envelope(x[None], SR, FPS, attack_ms=0, release_ms=0, normalize=True)
    assert float(norm.max()) == pytest.approx(1.0) and float(norm[15]) == pytest.approx(1.0, abs=5e-3)
    # n_frames: longer than the audio is padded with silence; default covers the whole clip
    assert loudness_envelope(x, SR, FPS, n_frames=80, release_ms=0)[50:].eq(0).all()
    assert loudness_envelope(x[:, :SR + 1], SR, FPS).shape == (26,)
    d = audio_envelope_from_dict({"waveform": x[None].float(), "sample_rate": SR}, FPS, attack_ms=0, release_ms=0)
    assert torch.allclose(d, loudness_envelope(x, SR, FPS, attack_ms=0, release_ms=0), atol=1e-6)


def test_bad_arguments_name_themselves():
    x = burst(0.1, 0.2)
    for kwargs, word in [({"attack_ms": -1}, "attack_ms"), ({"gain": float("nan")}, "gain"),
                         ({"n_frames": 0}, "n_frames"), ({"fps": 0}, "fps")]:
        args = {"fps": FPS, **kwargs}
        with pytest.raises(InputError, match=word):
            loudness_envelope(x, SR, **args)
    with pytest.raises(InputError, match="NaN"):
        loudness_envelope(torch.full((1, 100), float("nan")), SR, FPS)
    with pytest.raises(InputError, match="shape"):
        loudness_envelope(torch.zeros(1, 1, 1, 5), SR, FPS)
    with pytest.raises(InputError, match="waveform"):
        audio_envelope_from_dict({"sample_rate": SR}, FPS)


def test_example_clip_is_reproducible_and_speech_like(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "fixtures"))
    import make_example_audio as mk

    path = mk.write_wav(str(tmp_path / "a.wav"), mk.make())
    shipped = os.path.join(here, "..", "example_workflows", "liveportrait_audio_reactive.wav")
    with open(path, "rb") as a, open(shipped, "rb") as b:
        assert a.read() == b.read()
    assert os.path.getsize(shipped) < 200_000
    with wave.open(shipped) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 16000, 2)
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32767
    env = loudness_envelope(torch.from_numpy(x), 16000, FPS, release_ms=80, normalize=True, threshold=0.05, gain=1.5)
    on = (env > 0.5).int()
    # bursts and pauses: the mouth opens and closes many times, with silent pauses between phrases
    assert int((torch.diff(on) == 1).sum()) >= 6
    assert int((env < 0.05).sum()) >= 20
