"""``vit_tiny``: a small Vision Transformer for small images (MNIST, CIFAR), as a student or
teacher with a token-shaped rather than spatial feature space.

Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021), shrunk: non-overlapping
patches embedded by a strided convolution, learned position embeddings, pre-norm transformer
blocks, then the patch tokens are mean-pooled (no CLS token, so every token is a patch and a
block's output reshapes straight back onto the patch grid), normalised and classified.

Also here, because the MLP-Mixer in ``mixer.py`` cuts images the same way: ``patch_grid``
(the patch-size check) and ``PatchEmbedding``. Convolutional families live in their own files.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from distil.errors import ConfigError, ShapeError
from distil.models.registry import MODELS, check_dropout, require_input_rank


def patch_grid(name: str, input_shape: tuple[int, ...], patch_size: int) -> tuple[int, int]:
    """The ``(rows, columns)`` of patches that ``patch_size`` cuts a ``(C, H, W)`` image into.

    Raises ``ConfigError`` for a patch size below 1 and ``ShapeError``, naming the model, the
    patch size and the image size, when the patch size does not divide both H and W: a
    remainder would silently drop the image's last rows or columns.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ConfigError(
            f"model {name!r}: patch_size must be a positive integer, got {patch_size!r}"
        )
    height, width = input_shape[1], input_shape[2]
    if height % patch_size or width % patch_size:
        raise ShapeError(
            f"model {name!r}: patch_size {patch_size} does not divide the image size "
            f"{height}×{width} (input shape {tuple(input_shape)}); pick a patch size that "
            "divides both height and width"
        )
    return height // patch_size, width // patch_size


class PatchEmbedding(nn.Module):
    """Cut an image into non-overlapping patches and project each to a ``dim``-vector.

    A convolution with kernel = stride = patch size is exactly a linear map per patch.
    Tokens come out in row-major patch order, so ``tokens.reshape(batch, rows, columns, dim)``
    recovers the patch grid.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → tokens ``(batch, (H / patch) * (W / patch), dim)``."""
        patches = self.projection(images)  # (batch, dim, H / patch, W / patch)
        return patches.flatten(2).transpose(1, 2)


def feed_forward(width: int, hidden: int, dropout: float) -> nn.Sequential:
    """Linear → GELU → dropout → linear → dropout, with named layers (``fc1``, ``fc2``, …)."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(width, hidden),
            activation=nn.GELU(),
            hidden_dropout=nn.Dropout(dropout),
            fc2=nn.Linear(hidden, width),
            output_dropout=nn.Dropout(dropout),
        )
    )


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attention(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, mlp_hidden, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, dim)`` → ``(batch, tokens, dim)``."""
        normed = self.norm1(tokens)
        # need_weights=False: nothing reads the attention map, and skipping it is faster.
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        tokens = tokens + self.attention_dropout(attended)
        return tokens + self.mlp(self.norm2(tokens))


class VisionTransformer(nn.Module):
    """Patch embedding + position embedding → pre-norm blocks → mean over tokens → LayerNorm
    → linear head. There is no CLS token: every token is a patch.

    Natural feature taps, by module path (``P`` = patch size, ``T = (H / P) * (W / P)``):

    * ``patch_embed`` → ``(batch, T, dim)``, patch tokens before position embeddings;
    * ``blocks.<i>`` for ``i`` in ``0 .. depth - 1`` → ``(batch, T, dim)``, patch tokens only
      (no CLS token), row-major, so ``.reshape(batch, H / P, W / P, dim)`` gives the grid;
    * ``norm`` → ``(batch, dim)``, the pooled and normalised embedding the head reads;
    * ``head`` → ``(batch, num_classes)``, the logits.

    On ``(1, 28, 28)`` at the defaults (P = 4, dim = 64): ``T = 49``.
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        num_classes: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        num_tokens = grid[0] * grid[1]
        self.patch_embed = PatchEmbedding(in_channels, dim, patch_size)
        # (1, tokens, dim): one learned vector per patch position, broadcast over the batch.
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(dim, heads, mlp_hidden, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        tokens = self.embed_dropout(self.patch_embed(images) + self.position_embedding)
        tokens = self.blocks(tokens)  # (batch, tokens, dim)
        return self.head(self.norm(tokens.mean(dim=1)))


@MODELS.register("vit_tiny")
def vit_tiny(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> VisionTransformer:
    """A small Vision Transformer for ``(C, H, W)`` images; ``patch_size`` must divide H and W.

    ``dim`` is the token width, split over ``heads`` attention heads (so ``heads`` must
    divide it); each block's MLP is ``round(dim * mlp_ratio)`` wide. ``dropout`` applies to
    the embeddings, the attention weights and the outputs of both residual branches.
    """
    require_input_rank("vit_tiny", input_shape, {3: "(channels, height, width)"})
    grid = patch_grid("vit_tiny", input_shape, patch_size)
    if dim < 1 or depth < 1 or heads < 1:
        raise ConfigError(
            f"model 'vit_tiny': dim, depth and heads must be positive, got {dim}, {depth} "
            f"and {heads}"
        )
    if dim % heads:
        raise ConfigError(f"model 'vit_tiny': heads ({heads}) must divide dim ({dim})")
    mlp_hidden = round(dim * mlp_ratio)
    if mlp_hidden < 1:
        raise ConfigError(
            f"model 'vit_tiny': mlp_ratio {mlp_ratio!r} leaves no MLP width for dim {dim}"
        )
    check_dropout("vit_tiny", dropout)
    return VisionTransformer(
        in_channels=input_shape[0],
        grid=grid,
        num_classes=num_classes,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_hidden=mlp_hidden,
        dropout=dropout,
    )
