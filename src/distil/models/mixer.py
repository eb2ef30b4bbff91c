"""``mixer_tiny``: a small MLP-Mixer for small images, an attention-free token model.

Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision" (NeurIPS 2021), shrunk:
the image is cut into patches like a ViT (``PatchEmbedding`` from ``vit.py``), then each
block mixes information across patches with an MLP over the token axis and across channels
with an MLP over the feature axis, both pre-norm and residual. A final LayerNorm, a global
average over tokens and a linear head give the logits. There are no position embeddings:
the token-mixing MLP's weights are tied to patch positions, which is also why a built
Mixer accepts only the image size it was built for. Attention models live in ``vit.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from distil.errors import ConfigError
from distil.models.registry import MODELS, check_dropout, require_input_rank
from distil.models.vit import PatchEmbedding, feed_forward, patch_grid


class MixerBlock(nn.Module):
    """``x + token_mixing(token_norm(x))`` over the token axis, then
    ``x + channel_mixing(channel_norm(x))`` over the feature axis."""

    def __init__(
        self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(dim)
        self.token_mixing = feed_forward(num_tokens, token_hidden, dropout)
        self.channel_norm = nn.LayerNorm(dim)
        self.channel_mixing = feed_forward(dim, channel_hidden, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, tokens, dim)`` → ``(batch, tokens, dim)``."""
        # The token MLP acts on the last axis, so tokens go there and come back.
        per_channel = self.token_norm(tokens).transpose(1, 2)  # (batch, dim, tokens)
        tokens = tokens + self.token_mixing(per_channel).transpose(1, 2)
        return tokens + self.channel_mixing(self.channel_norm(tokens))


class MlpMixer(nn.Module):
    """Patch embedding → Mixer blocks → LayerNorm → mean over tokens → linear head.

    Natural feature taps, by module path (``P`` = patch size, ``T = (H / P) * (W / P)``):

    * ``patch_embed`` → ``(batch, T, dim)``, the embedded patches;
    * ``blocks.<i>`` for ``i`` in ``0 .. depth - 1`` → ``(batch, T, dim)``, patch tokens in
      row-major order (there is no CLS token), so ``.reshape(batch, H / P, W / P, dim)``
      gives the grid;
    * ``norm`` → ``(batch, T, dim)``, the normalised tokens, before pooling (unlike
      ``vit_tiny``, whose ``norm`` follows the pooling, as in each paper);
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
        token_hidden: int,
        channel_hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        num_tokens = grid[0] * grid[1]
        self.patch_embed = PatchEmbedding(in_channels, dim, patch_size)
        self.blocks = nn.Sequential(
            *(
                MixerBlock(num_tokens, dim, token_hidden, channel_hidden, dropout)
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, C, H, W)`` → logits ``(batch, num_classes)``."""
        tokens = self.norm(self.blocks(self.patch_embed(images)))  # (batch, tokens, dim)
        return self.head(tokens.mean(dim=1))


@MODELS.register("mixer_tiny")
def mixer_tiny(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    token_hidden: int = 64,
    channel_hidden: int = 128,
    dropout: float = 0.0,
) -> MlpMixer:
    """A small MLP-Mixer for ``(C, H, W)`` images; ``patch_size`` must divide H and W.

    ``token_hidden`` and ``channel_hidden`` are the hidden widths of the token-mixing and
    channel-mixing MLPs; ``dropout`` applies inside and after both.
    """
    require_input_rank("mixer_tiny", input_shape, {3: "(channels, height, width)"})
    grid = patch_grid("mixer_tiny", input_shape, patch_size)
    if min(dim, depth, token_hidden, channel_hidden) < 1:
        raise ConfigError(
            f"model 'mixer_tiny': dim, depth, token_hidden and channel_hidden must be "
            f"positive, got {dim}, {depth}, {token_hidden} and {channel_hidden}"
        )
    check_dropout("mixer_tiny", dropout)
    return MlpMixer(
        in_channels=input_shape[0],
        grid=grid,
        num_classes=num_classes,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        token_hidden=token_hidden,
        channel_hidden=channel_hidden,
        dropout=dropout,
    )
