"""The image conversions (liveportrait_core/images.py) and their one rounding rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from liveportrait_core.errors import InputError
from liveportrait_core.images import (batch_to_u8, crops_to_input, frames_to_rgb_u8, render_to_float, render_to_u8,
                                      to_rgb_u8, u8_to_float)

LEVELS = np.arange(256, dtype=np.uint8)


def _float_levels(offset: float) -> np.ndarray:
    """[1,16,16,3] float32: every level k as (k + offset) / 255."""
    return np.broadcast_to(((LEVELS.astype(np.float32) + offset) / 255.0).reshape(1, 16, 16, 1), (1, 16, 16, 3))


@pytest.mark.parametrize("convert", [lambda a: to_rgb_u8(a[0])[None], lambda a: np.stack(frames_to_rgb_u8(a)),
                                     batch_to_u8, lambda a: batch_to_u8(torch.from_numpy(a.copy()))])
def test_every_conversion_into_uint8_rounds_to_nearest(convert):
    want = LEVELS.reshape(1, 16, 16, 1).repeat(3, -1)
    for offset in (0.0, 0.3, -0.3):  # k/255 (slightly off in float32 either way) and ±0.3 level
        assert np.array_equal(convert(_float_levels(offset)), want), offset
    odd = np.array([[[-1.0, 2.0, np.nan], [127.5 / 255, 0.5, 1.0]]], np.float32)  # clip, NaN → 0, ties to even
    assert convert(odd[None].repeat(2, 1).reshape(1, 2, 2, 3)).reshape(-1, 3)[:2].tolist() == [[0, 255, 0], [128, 128, 255]]


def test_integer_images():
    assert to_rgb_u8(np.array([[0, 256, 65535]] * 2, np.uint16).reshape(2, 1, 3).repeat(2, 1))[0, 0].tolist() == [0, 1, 255]
    assert to_rgb_u8(np.full((2, 2, 3), 300, np.int32)).max() == 255
    assert to_rgb_u8(np.full((2, 2, 3), -5, np.int32)).max() == 0
    with pytest.raises(InputError, match="pixel type"):
        to_rgb_u8(np.zeros((2, 2, 3), bool))


def test_channels_and_shapes():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert np.array_equal(to_rgb_u8(grey), grey[..., None].repeat(3, -1))
    rgba = np.dstack([np.full((4, 4, 3), 9, np.uint8), np.zeros((4, 4), np.uint8)])
    assert np.array_equal(batch_to_u8(rgba), np.full((1, 4, 4, 3), 9, np.uint8))
    assert batch_to_u8(np.zeros((2, 4, 4, 1), np.float32)).shape == (2, 4, 4, 3)
    with pytest.raises(InputError, match="frames must be"):
        batch_to_u8(np.zeros((2, 4, 4, 2), np.uint8))
    with pytest.raises(InputError, match="different sizes"):
        frames_to_rgb_u8([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])


def test_renderer_output_truncates_like_the_reference():
    """The one exception to the rule: the decoder's uint8 output is clip, ×255, truncate."""
    img = torch.tensor([0.0, 0.999, 0.5, 1.2, -0.1, 0.0039]).reshape(1, 1, 2, 3).expand(1, 3, 2, 3)
    u8 = render_to_u8(img)
    assert u8.shape == (1, 2, 3, 3) and u8.dtype == torch.uint8
    assert u8[0, :, :, 0].reshape(-1).tolist() == [0, 254, 127, 255, 0, 0]  # truncated, not rounded
    assert batch_to_u8(render_to_float(img)).reshape(-1, 3)[:, 0].tolist() == [0, 255, 128, 255, 0, 1]  # the rule


def test_uint8_float_round_trip_is_exact():
    u8 = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    f = u8_to_float(u8)
    assert f.dtype == torch.float32 and torch.equal(f, torch.from_numpy(u8).float() / 255)
    assert np.array_equal(batch_to_u8(f), u8)
    x = crops_to_input(torch.from_numpy(u8[:, :4, :4]))  # resized to 256² (cv2 resizes uint8 in fixed point)
    assert x.shape == (2, 3, 256, 256)
    assert float((crops_to_input(f[:, :4, :4]) - x).abs().max()) <= 1 / 255
