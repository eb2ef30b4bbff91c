"""Projectors: trainable maps from a student feature to the shape of a teacher feature.

Features come in three layouts (batch dimension left out):

* ``vector`` ``(D,)`` — pooled embeddings, MLP hidden states;
* ``tokens`` ``(L, D)`` — transformer and mixer blocks (a square number of tokens when they
  came from patches);
* ``map`` ``(C, H, W)`` or ``(C, L)`` — convolutional feature maps.

``auto`` reads the layout from the rank: 1 → vector, 2 → tokens, 3 → map. A 1-D
convolutional map ``(C, L)`` has rank 2 too, so declare it as ``map``. The projector is sized
automatically from the two shapes: a linear layer or small MLP between vectors, a 1×1
convolution plus resizing between maps, token↔spatial reshaping between transformers and
CNNs. Shapes that cannot be aligned (a vector into a map) raise ``ShapeError`` naming both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import ShapeError

LAYOUTS = ("auto", "vector", "tokens", "map")
KINDS = ("auto", "linear", "mlp", "identity")


def resolve_layout(shape: Sequence[int], layout: str) -> str:
    """The layout of a feature of per-sample ``shape`` (``auto`` decided by its rank)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if layout != "auto":
        expected = {"vector": (1,), "tokens": (2,), "map": (2, 3)}[layout]
        if len(shape) not in expected:
            raise ShapeError(f"a {layout} feature cannot have shape {tuple(shape)}")
        return layout
    by_rank = {1: "vector", 2: "tokens", 3: "map"}
    if len(shape) not in by_rank:
        raise ShapeError(f"cannot tell the layout of a feature of shape {tuple(shape)}")
    return by_rank[len(shape)]


def _square_side(tokens: int, shape: Sequence[int]) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ShapeError(f"tokens {tuple(shape)}: {tokens} tokens do not form a square grid")
    return side


class TokensToMap(nn.Module):
    """(N, L, D) → (N, D, √L, √L)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.transpose(1, 2).reshape(
            tokens.shape[0], tokens.shape[2], self.side, self.side
        )


class MapToTokens(nn.Module):
    """(N, C, H, W) → (N, H·W, C)."""

    def forward(self, feature_map: Tensor) -> Tensor:
        return feature_map.flatten(2).transpose(1, 2)


class Resize(nn.Module):
    """Resize a map's spatial dims: average pooling to shrink, interpolation to grow."""

    def __init__(self, size: tuple[int, ...]) -> None:
        super().__init__()
        self.size = size

    def forward(self, feature_map: Tensor) -> Tensor:
        current = tuple(feature_map.shape[2:])
        if current == self.size:
            return feature_map
        if all(c >= s for c, s in zip(current, self.size, strict=True)):
            pool = F.adaptive_avg_pool2d if len(self.size) == 2 else F.adaptive_avg_pool1d
            return pool(feature_map, self.size)
        mode = "bilinear" if len(self.size) == 2 else "linear"
        return F.interpolate(feature_map, size=self.size, mode=mode, align_corners=False)


class MeanTokens(nn.Module):
    """(N, L, D) → (N, D)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.mean(1)


def _channel_map(channels_in: int, channels_out: int, spatial_rank: int) -> nn.Module:
    conv = nn.Conv2d if spatial_rank == 2 else nn.Conv1d
    norm = nn.BatchNorm2d if spatial_rank == 2 else nn.BatchNorm1d
    return nn.Sequential(conv(channels_in, channels_out, 1, bias=False), norm(channels_out))


def _vector_map(dim_in: int, dim_out: int, kind: str, hidden: int | None) -> nn.Module:
    if kind == "mlp":
        width = hidden or max(dim_in, dim_out)
        return nn.Sequential(nn.Linear(dim_in, width), nn.ReLU(), nn.Linear(width, dim_out))
    return nn.Linear(dim_in, dim_out)


def build_projector(
    student_shape: Sequence[int],
    teacher_shape: Sequence[int],
    *,
    student_layout: str = "auto",
    teacher_layout: str = "auto",
    kind: str = "auto",
    hidden: int | None = None,
) -> nn.Module:
    """A module mapping student features ``(N, *student_shape)`` to ``(N, *teacher_shape)``.

    ``kind``: ``auto`` (linear for vectors, 1×1 conv for maps), ``linear``, ``mlp`` (vectors,
    with ``hidden`` units) or ``identity`` (shapes must already agree).
    """
    if kind not in KINDS:
        raise ValueError(f"projector kind {kind!r} is not one of {KINDS}")
    s_shape, t_shape = tuple(student_shape), tuple(teacher_shape)
    source, target = (
        resolve_layout(s_shape, student_layout),
        resolve_layout(t_shape, teacher_layout),
    )
    mismatch = ShapeError(
        f"student feature {s_shape} ({source}) cannot be projected to teacher feature {t_shape} ({target})"
    )
    if kind == "identity":
        if s_shape != t_shape:
            raise mismatch
        return nn.Identity()

    if target == "vector":
        pool: list[nn.Module] = []
        if source == "map":
            pool = [
                nn.AdaptiveAvgPool2d(1) if len(s_shape) == 3 else nn.AdaptiveAvgPool1d(1),
                nn.Flatten(),
            ]
        elif source == "tokens":
            pool = [MeanTokens()]
        dim_in = s_shape[-1] if source == "tokens" else s_shape[0]
        return nn.Sequential(*pool, _vector_map(dim_in, t_shape[0], kind, hidden))
    if source == "vector":
        raise mismatch  # a vector has no spatial structure to lay out as a map or tokens

    # From here both are spatial: bring the student to a map, project channels, resize.
    steps: list[nn.Module] = []
    if source == "tokens":
        side = _square_side(s_shape[0], s_shape)
        steps.append(TokensToMap(side))
        s_channels, s_spatial = s_shape[1], (side, side)
    else:
        s_channels, s_spatial = s_shape[0], s_shape[1:]
    if target == "tokens":
        if source == "tokens" and s_shape[0] == t_shape[0]:
            return nn.Linear(s_shape[1], t_shape[1])  # same tokens: project each token
        t_side = _square_side(t_shape[0], t_shape)
        t_channels, t_spatial = t_shape[1], (t_side, t_side)
    else:
        t_channels, t_spatial = t_shape[0], t_shape[1:]
    if len(s_spatial) != len(t_spatial):
        raise mismatch
    steps += [_channel_map(s_channels, t_channels, len(t_spatial)), Resize(tuple(t_spatial))]
    if target == "tokens":
        steps.append(MapToTokens())
    return nn.Sequential(*steps)
