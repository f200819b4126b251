"""Convolution and pooling geometry, written once for NIR shape inference, the constraint
rules and the Lava lowering."""

from __future__ import annotations


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
