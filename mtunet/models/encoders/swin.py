"""The Swin Transformer block (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows") on a feature map, in ``keras.ops``: window multi-head self-attention with relative position bias, shifted
windows with their attention mask, feature maps padded to a multiple of the window.

``keras.layers.MultiHeadAttention`` takes neither the relative position bias nor a per-window mask shared across the
batch, and keras-hub has no Swin backbone, so the block is written here (after the authors' reference code,
``microsoft/Swin-Transformer``, ``models/swin_transformer.py``).
"""

import keras
import numpy as np
from keras import ops

# Added to the attention logits of token pairs a shifted window must not join (the reference code's value).
MASKED_LOGIT = -100.0


def relative_position_index(window: int) -> np.ndarray:
    """``(window**2, window**2)`` indices into the ``((2 * window - 1)**2, heads)`` bias table: entry ``[i, j]`` is
    the row of the relative offset of token ``j`` from token ``i`` (tokens of a window in row-major order)."""
    rows, columns = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coordinates = np.stack([rows.ravel(), columns.ravel()])  # (2, N)
    offsets = (coordinates[:, :, None] - coordinates[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return offsets[..., 0] * (2 * window - 1) + offsets[..., 1]


def window_regions(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``(height, width)`` region ids of the map once rolled by ``-shift``: tokens that came from different sides
    of the border (top/bottom, left/right) have different ids, and a shifted window attends only within one id."""
    regions = np.zeros((height, width), dtype="int64")
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for rows in bounds:
        for columns in bounds:
            regions[rows, columns] = region
            region += 1
    return regions


def partition_windows(x, window: int):
    """``(batch, H, W, C)`` -> ``(batch * H/window * W/window, window * window, C)``, windows in row-major order."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // window, window, width // window, window, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, window * window, channels))


def merge_windows(windows, window: int, height: int, width: int):
    """The inverse of ``partition_windows``: ``(batch * nW, window * window, C)`` -> ``(batch, H, W, C)``."""
    channels = windows.shape[-1]
    x = ops.reshape(windows, (-1, height // window, width // window, window, window, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray | None:
    """``(windows, N, N)`` logits added to shifted-window attention (0 within a region, ``MASKED_LOGIT`` across
    regions), or None without shift."""
    if shift == 0:
        return None
    regions = window_regions(height, width, window, shift)
    regions = regions.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    regions = regions.reshape(-1, window * window)
    return np.where(regions[:, None, :] != regions[:, :, None], MASKED_LOGIT, 0.0).astype("float32")


@keras.saving.register_keras_serializable(package="mtunet")
class SwinBlock(keras.layers.Layer):
    """One Swin block on a ``(batch, H, W, C)`` map: ``x + W-MSA(LN(x))``, then ``x + MLP(LN(x))``.

    The map is padded at the bottom and right to a multiple of the window (the padded tokens take part in the
    attention, as in Swin's detection code) and cropped back. Maps no larger than the window are one window without
    shift, as in the reference code.

    Args:
        num_heads: attention heads; ``C`` must be a multiple of it.
        window_size: side of the square windows (Swin's 7).
        shifted: roll the map by half a window first (SW-MSA), with the mask that keeps each window's tokens from
            attending across the image border.
        mlp_ratio: hidden width of the MLP (Linear, GELU, Linear) over ``C``.

    Input and output shape: ``(batch, H, W, C)``.
    """

    def __init__(self, num_heads, window_size=7, shifted=False, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1 or window_size < 1:
            raise ValueError(f"num_heads and window_size must be positive; received {num_heads}, {window_size}")
        self.num_heads, self.window_size, self.shifted, self.mlp_ratio = (
            int(num_heads), int(window_size), bool(shifted), float(mlp_ratio))

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if channels % self.num_heads:
            raise ValueError(f"{self.name}: {channels} channels do not split into {self.num_heads} heads")
        # === Geometry ===
        self.window = min(self.window_size, height, width)
        self.shift = self.window // 2 if self.shifted and min(height, width) > self.window_size else 0
        self.padded = (-(-height // self.window) * self.window, -(-width // self.window) * self.window)
        self.bias_index = relative_position_index(self.window).reshape(-1)
        self.mask = shifted_window_mask(*self.padded, self.window, self.shift)
        # === Layers ===
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")
        self.qkv = keras.layers.Dense(3 * channels, name="qkv")
        self.projection = keras.layers.Dense(channels, name="projection")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")
        self.mlp_hidden = keras.layers.Dense(int(channels * self.mlp_ratio), activation="gelu", name="mlp_hidden")
        self.mlp_output = keras.layers.Dense(channels, name="mlp_output")
        tokens_shape = (None, self.window * self.window, channels)
        for layer, shape in [(self.norm1, input_shape), (self.qkv, tokens_shape), (self.projection, tokens_shape),
                             (self.norm2, input_shape), (self.mlp_hidden, input_shape)]:
            layer.build(shape)
        self.mlp_output.build((*input_shape[:-1], int(channels * self.mlp_ratio)))
        self.relative_bias_table = self.add_weight(
            shape=((2 * self.window - 1) ** 2, self.num_heads), name="relative_bias_table",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def window_attention(self, windows):
        """Multi-head self-attention within each window: ``(batch * nW, N, C)`` -> the same shape."""
        tokens, channels = windows.shape[1], windows.shape[2]
        head_channels = channels // self.num_heads
        qkv = ops.reshape(self.qkv(windows), (-1, tokens, 3, self.num_heads, head_channels))
        query, key, value = (ops.transpose(qkv[:, :, index], (0, 2, 1, 3)) for index in range(3))
        logits = ops.matmul(query * head_channels ** -0.5, ops.transpose(key, (0, 1, 3, 2)))
        bias = ops.take(self.relative_bias_table, ops.convert_to_tensor(self.bias_index), axis=0)
        logits = logits + ops.cast(ops.transpose(ops.reshape(bias, (tokens, tokens, -1)), (2, 0, 1)), logits.dtype)
        if self.mask is not None:
            windows_per_image = self.mask.shape[0]
            logits = ops.reshape(logits, (-1, windows_per_image, self.num_heads, tokens, tokens))
            logits = logits + ops.cast(ops.convert_to_tensor(self.mask)[None, :, None], logits.dtype)
            logits = ops.reshape(logits, (-1, self.num_heads, tokens, tokens))
        attention = ops.softmax(logits, axis=-1)
        attended = ops.transpose(ops.matmul(attention, value), (0, 2, 1, 3))
        return self.projection(ops.reshape(attended, (-1, tokens, channels)))

    def call(self, x):
        _, height, width, _ = x.shape
        padded_height, padded_width = self.padded
        shortcut = x
        x = self.norm1(x)
        x = ops.pad(x, ((0, 0), (0, padded_height - height), (0, padded_width - width), (0, 0)))
        if self.shift:
            x = ops.roll(ops.roll(x, -self.shift, axis=1), -self.shift, axis=2)
        windows = self.window_attention(partition_windows(x, self.window))
        x = merge_windows(windows, self.window, padded_height, padded_width)
        if self.shift:
            x = ops.roll(ops.roll(x, self.shift, axis=1), self.shift, axis=2)
        x = shortcut + x[:, :height, :width]
        return x + self.mlp_output(self.mlp_hidden(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "window_size": self.window_size,
                "shifted": self.shifted, "mlp_ratio": self.mlp_ratio}
