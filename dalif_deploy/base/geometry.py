"""Convolution and pooling geometry, written once for NIR shape inference, the constraint
rules and the Lava lowering."""

from __future__ import annotations

from typing import Any


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution (or pooling) along one axis, as torch computes it:
    ``(n + 2 p - d (k - 1) - 1) // s + 1``."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_shape(hw: tuple[int, int], kernel: tuple[int, int],
                      stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                      dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """:func:`conv_output_size` for both spatial axes ``(H, W)``."""
    return (conv_output_size(hw[0], kernel[0], stride[0], padding[0], dilation[0]),
            conv_output_size(hw[1], kernel[1], stride[1], padding[1], dilation[1]))


def lift_1d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The 2-D form of a 1-D feature shape: ``(C, L) -> (C, 1, L)`` (a height-1 image, how
    the exporter writes Conv1d/AvgPool1d layers); any other shape as is."""
    return (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)


def fit_frames(x: Any, frame: tuple[int, ...], lead: int) -> Any:
    """``x`` (``lead`` leading axes, then one sample's frame) viewed with frame ``frame`` when
    its frame is ``frame``'s 1-D form (``[.., C, L]`` data for a ``(C, 1, L)`` input, see
    :func:`lift_1d`); otherwise ``x`` unchanged, for the caller's own shape check."""
    frame = tuple(int(d) for d in frame)
    have = tuple(int(d) for d in x.shape[lead:])
    if len(have) == 2 and lift_1d(have) == frame:
        return x.reshape(*x.shape[:lead], *frame)
    return x
